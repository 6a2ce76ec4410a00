"""Credential and command tokens: the published spec vectors end to end, then our own hostile inputs."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.limits import FLOOR_MAX, FLOOR_MIN, INT64_MAX, SECONDS_MAX, UNIX_S_MAX
from edge.tokens import (
    ACTIONS,
    CommandClaims,
    CommandDenied,
    TokenClaims,
    TokenDenied,
    TrustPolicy,
    b64url_encode,
    check_token_facts,
    generate_keypair,
    mint_token,
    verify_command,
    verify_token,
)

VECTORS = json.loads((Path(__file__).parent / "data" / "tokens.json").read_text(encoding="utf-8"))
NOW = 1_795_000_000
KID = "k1"
SITE = "c42"
GW = "gw-north"


def vector_policy() -> TrustPolicy:
    v = VECTORS
    return TrustPolicy.build(v["site"], v["keys"], v["leeway_s"], v["max_lifetime_s"], v["max_token_bytes"])


@pytest.mark.parametrize("case", VECTORS["cases"], ids=[c["name"] for c in VECTORS["cases"]])
def test_spec_vector(case: dict[str, Any]) -> None:
    verified = verify_token(case["token"], vector_policy(), case["now"])
    expect = case["expect"]
    if isinstance(verified, TokenDenied):
        got: dict[str, Any] = {"result": "denied", "reason": verified.reason}
    else:
        used = case["used"].get(verified.jti, 0)
        reason = check_token_facts(verified, case["zone"], verified.jti in case["revoked"], used)
        got = {"result": "denied" if reason else "granted", "reason": reason}
        got["subject"] = verified.sub
        got["floors"] = list(verified.floors) if verified.floors is not None else None
    assert got["result"] == expect["result"]
    if "reason" in expect:
        assert got["reason"] == expect["reason"]
    if "subject" in expect:
        assert got["subject"] == expect["subject"]
    if "floors" in expect:
        assert got["floors"] == expect["floors"]


# --- our own keys and helpers ------------------------------------------------------------------


@pytest.fixture(scope="module")
def keypair() -> tuple[Ed25519PrivateKey, str]:
    return generate_keypair()


@pytest.fixture(scope="module")
def policy(keypair: tuple[Ed25519PrivateKey, str]) -> TrustPolicy:
    return TrustPolicy.build(SITE, {KID: keypair[1]}, 5, {"resident": 300, "visitor": 604800, "staff": 86400})


@pytest.fixture(scope="module")
def key(keypair: tuple[Ed25519PrivateKey, str]) -> Ed25519PrivateKey:
    return keypair[0]


def claims(**over: Any) -> dict[str, Any]:
    c: dict[str, Any] = {
        "iss": SITE,
        "sub": "resident:1042",
        "kind": "resident",
        "jti": "t-1",
        "nbf": NOW - 30,
        "exp": NOW + 30,
        "zones": ["north-gate"],
    }
    c.update(over)
    return {k: v for k, v in c.items() if v is not DROP}


DROP: Any = object()


def raw_token(key: Ed25519PrivateKey, header: bytes, body: bytes) -> str:
    """Sign arbitrary header/claims bytes properly, so only the property under test is wrong."""
    signing_input = f"{b64url_encode(header)}.{b64url_encode(body)}".encode()
    return f"{signing_input.decode()}.{b64url_encode(key.sign(signing_input))}"


HDR = b'{"alg":"EdDSA","kid":"k1"}'


def reason(token: str, policy: TrustPolicy, now: float = NOW, **kw: Any) -> str:
    r = verify_token(token, policy, now, **kw)
    return "ok" if isinstance(r, TokenClaims) else r.reason


def test_minted_token_round_trips(key: Ed25519PrivateKey, policy: TrustPolicy) -> None:
    c = claims(sub="访客:张三 🚪", floors=[-1, 3], uses=2, kind="visitor", extra={"ignored": [1, 2]})
    r = verify_token(mint_token(key, KID, c), policy, NOW)
    assert r == TokenClaims(
        SITE, "访客:张三 🚪", "visitor", "t-1", NOW + 30, NOW - 30, ("north-gate",), (-1, 3), 2
    )


# --- step 1: strict encoding -------------------------------------------------------------------


@pytest.mark.parametrize("segment", [0, 1, 2])
def test_padding_in_any_segment_is_malformed(
    key: Ed25519PrivateKey, policy: TrustPolicy, segment: int
) -> None:
    subs = ("r" * n for n in range(1, 4))
    parts = next(p for p in (mint_token(key, KID, claims(sub=s)).split(".") for s in subs) if len(p[1]) % 4)
    assert all(len(p) % 4 for p in parts)  # every segment would need padding
    parts[segment] += "=" * (-len(parts[segment]) % 4)
    assert reason(".".join(parts), policy) == "malformed"


def test_standard_base64_alphabet_is_malformed(key: Ed25519PrivateKey, policy: TrustPolicy) -> None:
    body = json.dumps(claims(sub="resident:>>>?")).encode()  # encodes with '+'/'/' in standard base64
    tok = raw_token(key, HDR, body)
    assert reason(tok, policy) == "ok"
    assert "-" in tok or "_" in tok
    assert reason(tok.replace("-", "+").replace("_", "/"), policy) == "malformed"


@pytest.mark.parametrize("mangle", [" {}", "{}\n", "{}\r\n", "\t{}"])
def test_whitespace_around_token_is_malformed(
    key: Ed25519PrivateKey, policy: TrustPolicy, mangle: str
) -> None:
    assert reason(mangle.format(mint_token(key, KID, claims())), policy) == "malformed"


def test_whitespace_inside_token_is_malformed(key: Ed25519PrivateKey, policy: TrustPolicy) -> None:
    tok = mint_token(key, KID, claims())
    assert reason(tok[:20] + " " + tok[20:], policy) == "malformed"


def test_non_canonical_base64_trailing_bits_are_malformed(
    key: Ed25519PrivateKey, policy: TrustPolicy
) -> None:
    h, c, s = mint_token(key, KID, claims()).split(".")
    assert len(s) == 86  # 64 bytes: the last char carries 2 unused bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = alphabet[alphabet.index(s[-1]) ^ 1]  # same decoded bytes, non-zero unused bit
    assert base64.urlsafe_b64decode(s[:-1] + twin + "==") == base64.urlsafe_b64decode(s + "==")
    assert reason(f"{h}.{c}.{s[:-1]}{twin}", policy) == "malformed"


def test_non_text_input_is_malformed(policy: TrustPolicy) -> None:
    assert reason(b"a.b.c", policy) == "malformed"  # type: ignore[arg-type]
    assert reason("", policy) == "malformed"


# --- step 1: sizes -----------------------------------------------------------------------------


def test_size_limit_is_inclusive_of_1024_bytes(key: Ed25519PrivateKey, policy: TrustPolicy) -> None:
    by_len: dict[int, str] = {}
    for header in (HDR, HDR[:-1] + b" }"):  # one header byte more reaches the lengths base64 skips
        for pad in range(500, 600):
            tok = raw_token(key, header, json.dumps(claims(pad="x" * pad)).encode())
            by_len.setdefault(len(tok), tok)
    assert reason(by_len[1024], policy) == "ok"
    assert reason(by_len[1025], policy) == "malformed"


def test_size_is_measured_in_utf8_bytes(policy: TrustPolicy) -> None:
    tok = "é" * 600  # 600 characters, 1200 bytes
    r = verify_token(tok, policy, NOW)
    assert isinstance(r, TokenDenied) and r.reason == "malformed" and "bytes" in r.detail


def test_deep_nesting_within_size_is_harmless(key: Ed25519PrivateKey, policy: TrustPolicy) -> None:
    depth = 200
    body = json.dumps(claims())[:-1] + ',"x":' + "[" * depth + "]" * depth + "}"
    assert reason(raw_token(key, HDR, body.encode()), policy) == "ok"  # unknown claims are ignored


# --- step 1: JSON and types --------------------------------------------------------------------


@pytest.mark.parametrize(
    "over",
    [
        {"exp": True},
        {"nbf": False},
        {"uses": True},
        {"floors": [True]},
        {"floors": [3.0]},
        {"floors": 3},
        {"floors": None},
        {"exp": float(NOW + 30)},
        {"exp": None},
        {"nbf": None},
        {"uses": 0},
        {"uses": -1},
        {"uses": "2"},
        {"zones": "north-gate"},
        {"zones": [1]},
        {"zones": []},
        {"sub": 1042},
        {"iss": DROP},
        {"sub": DROP},
        {"kind": DROP},
        {"jti": DROP},
        {"jti": ""},
        {"zones": DROP},
        {"kind": "Resident"},
    ],
    ids=repr,
)
def test_claim_type_errors_are_malformed(key: Ed25519PrivateKey, policy: TrustPolicy, over: dict) -> None:
    assert reason(mint_token(key, KID, claims(**over)), policy) == "malformed"


@pytest.mark.parametrize(
    "body",
    [
        b'{"iss":"c42","iss":"c42","sub":"r","kind":"resident","jti":"t","exp":1795000030,"zones":["z"]}',
        b'{"iss":"c42","sub":"r","kind":"resident","jti":"t","exp":1795000030,"zones":["z"],"x":NaN}',
        b'{"iss":"c42","sub":"r","kind":"resident","jti":"t","exp":1795000030,"zones":["z"],"x":-Infinity}',
        b'{"iss":"c42","sub":"\\ud800","kind":"resident","jti":"t","exp":1795000030,"zones":["z"]}',
        b'\xef\xbb\xbf{"iss":"c42","sub":"r","kind":"resident","jti":"t","exp":1795000030,"zones":["z"]}',
        b'{"iss":"c42","sub":"r","kind":"resident","jti":"t","exp":1795000030,"zones":["z"]}{}',
        b'"just a string"',
        b"null",
    ],
    ids=["duplicate_key", "nan", "infinity", "lone_surrogate", "bom", "trailing_data", "string", "null"],
)
def test_unsafe_json_is_malformed(key: Ed25519PrivateKey, policy: TrustPolicy, body: bytes) -> None:
    assert reason(raw_token(key, HDR, body), policy, now=1_795_000_000) == "malformed"


@pytest.mark.parametrize(
    "header",
    [
        b'{"alg":"EdDSA","kid":"k1","crit":["exp"]}',
        b'{"alg":"EdDSA","kid":"k1","crit":[]}',
        b'{"alg":"EdDSA","kid":1}',
        b'{"alg":"EdDSA","kid":null}',
        b'{"alg":"EdDSA"}',
        b'{"alg":"EdDSA","kid":"k1","kid":"k1"}',
        b'["EdDSA","k1"]',
    ],
    ids=["crit", "crit_empty", "kid_int", "kid_null", "kid_missing", "dup_kid", "array"],
)
def test_bad_header_is_malformed(key: Ed25519PrivateKey, policy: TrustPolicy, header: bytes) -> None:
    assert reason(raw_token(key, header, json.dumps(claims()).encode()), policy) == "malformed"


def test_malformed_is_reported_before_alg_and_signature(policy: TrustPolicy) -> None:
    other, _ = generate_keypair()
    tok = raw_token(other, b'{"alg":"none","kid":"nope"}', json.dumps(claims(exp=True)).encode())
    assert reason(tok, policy) == "malformed"


# --- steps 2-5 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        b'{"kid":"k1"}',
        b'{"alg":"eddsa","kid":"k1"}',
        b'{"alg":"ES256","kid":"k1"}',
        b'{"alg":["EdDSA"],"kid":"k1"}',
    ],
    ids=["alg_missing", "alg_lowercase", "alg_es256", "alg_list"],
)
def test_other_algs_are_unsupported(key: Ed25519PrivateKey, policy: TrustPolicy, header: bytes) -> None:
    assert reason(raw_token(key, header, json.dumps(claims()).encode()), policy) == "unsupported_alg"


def test_empty_signature_fails_at_signature_step(key: Ed25519PrivateKey, policy: TrustPolicy) -> None:
    h, c, _ = mint_token(key, KID, claims()).split(".")
    r = verify_token(f"{h}.{c}.", policy, NOW)
    assert r == TokenDenied("bad_signature", "t-1")


def test_signature_covers_the_received_bytes(key: Ed25519PrivateKey, policy: TrustPolicy) -> None:
    """Same JSON meaning, different bytes: the signature no longer verifies (no re-serialisation)."""
    h, _, s = mint_token(key, KID, claims()).split(".")
    respaced = json.dumps(claims(), separators=(", ", ": ")).encode()
    assert reason(f"{h}.{b64url_encode(respaced)}.{s}", policy) == "bad_signature"


def test_unknown_key_and_wrong_site_keep_the_jti(key: Ed25519PrivateKey, policy: TrustPolicy) -> None:
    assert verify_token(mint_token(key, "k2", claims()), policy, NOW) == TokenDenied("unknown_key", "t-1")
    r = verify_token(mint_token(key, KID, claims(iss="c43")), policy, NOW)
    assert isinstance(r, TokenDenied) and (r.reason, r.jti) == ("wrong_site", "t-1")


def test_unsynced_clock_denies_after_site_check(key: Ed25519PrivateKey, policy: TrustPolicy) -> None:
    assert reason(mint_token(key, KID, claims()), policy, clock_trusted=False) == "clock_unsynced"
    assert reason(mint_token(key, KID, claims(iss="x")), policy, clock_trusted=False) == "wrong_site"
    assert reason(mint_token(key, "k2", claims()), policy, clock_trusted=False) == "unknown_key"


# --- steps 6-7 ---------------------------------------------------------------------------------


def test_time_window_edges_with_leeway(key: Ed25519PrivateKey, policy: TrustPolicy) -> None:
    tok = mint_token(key, KID, claims(nbf=NOW, exp=NOW + 60))
    assert reason(tok, policy, now=NOW - 5) == "ok"
    assert reason(tok, policy, now=NOW - 5.001) == "not_yet_valid"
    assert reason(tok, policy, now=NOW + 65) == "ok"
    assert reason(tok, policy, now=NOW + 65.001) == "expired"


def test_lifetime_without_nbf_counts_from_now(key: Ed25519PrivateKey, policy: TrustPolicy) -> None:
    tok = mint_token(key, KID, claims(nbf=DROP, exp=NOW + 300))
    assert reason(tok, policy, now=NOW) == "ok"
    assert reason(tok, policy, now=NOW - 1) == "lifetime_too_long"


def test_lifetime_limit_follows_kind(key: Ed25519PrivateKey, policy: TrustPolicy) -> None:
    day = 86400
    assert reason(mint_token(key, KID, claims(kind="staff", nbf=NOW, exp=NOW + day)), policy) == "ok"
    assert reason(mint_token(key, KID, claims(kind="staff", nbf=NOW, exp=NOW + day + 1)), policy) == (
        "lifetime_too_long"
    )
    visitor = claims(kind="visitor", nbf=NOW - day, exp=NOW + 6 * day)
    assert reason(mint_token(key, KID, visitor), policy) == "ok"


@pytest.mark.parametrize("big", [10**300, 2**64, -(10**300)], ids=["1e300", "2^64", "-1e300"])
def test_huge_numbers_are_malformed(key: Ed25519PrivateKey, policy: TrustPolicy, big: int) -> None:
    no_nbf = reason(mint_token(key, KID, claims(nbf=DROP, exp=big)), policy)
    with_nbf = reason(mint_token(key, KID, claims(exp=big)), policy)
    assert no_nbf == with_nbf == "malformed"


@pytest.mark.parametrize(
    "over",
    [
        {"exp": 2**70},
        {"nbf": 2**70},
        {"nbf": -1},
        {"floors": [2**70]},
        {"floors": [3, -(2**70)]},
        {"uses": 2**70},
        {"floors": [2**64], "kind": "visitor", "uses": 2},
    ],
    ids=repr,
)
def test_integer_claims_out_of_range_are_malformed(
    key: Ed25519PrivateKey, policy: TrustPolicy, over: dict[str, Any]
) -> None:
    r = verify_token(mint_token(key, KID, claims(**over)), policy, NOW)
    assert isinstance(r, TokenDenied) and (r.reason, r.jti) == ("malformed", "t-1"), r
    assert next(iter(over)) in r.detail  # the detail names the claim out of range


def test_integer_claim_bounds_are_inclusive(key: Ed25519PrivateKey, policy: TrustPolicy) -> None:
    edge = claims(kind="visitor", floors=[FLOOR_MIN, FLOOR_MAX], uses=INT64_MAX)
    r = verify_token(mint_token(key, KID, edge), policy, NOW)
    assert isinstance(r, TokenClaims) and (r.floors, r.uses) == ((FLOOR_MIN, FLOOR_MAX), INT64_MAX)
    for over in ({"floors": [FLOOR_MAX + 1]}, {"floors": [FLOOR_MIN - 1]}, {"uses": INT64_MAX + 1}):
        assert reason(mint_token(key, KID, claims(**over)), policy) == "malformed", over
    # the last unix second parses and is judged on time; one more is not a time at all
    last = claims(nbf=UNIX_S_MAX - 10, exp=UNIX_S_MAX)
    assert reason(mint_token(key, KID, last), policy) == "not_yet_valid"
    assert reason(mint_token(key, KID, {**last, "exp": UNIX_S_MAX + 1}), policy) == "malformed"
    assert reason(mint_token(key, KID, claims(nbf=0, exp=NOW + 30)), policy) == "lifetime_too_long"


# --- steps 8-10 --------------------------------------------------------------------------------


def facts_claims(**over: Any) -> TokenClaims:
    base: dict[str, Any] = dict(
        iss=SITE, sub="s", kind="visitor", jti="t", exp=0, nbf=None, zones=("a",), floors=None, uses=None
    )
    base.update(over)
    return TokenClaims(**base)


def test_token_facts_order_and_rules() -> None:
    c = facts_claims(zones=("a",), uses=1)
    assert check_token_facts(c, "b", revoked=True, used=5) == "revoked"
    assert check_token_facts(c, "b", revoked=False, used=5) == "zone_denied"
    assert check_token_facts(c, "a", revoked=False, used=1) == "uses_exhausted"
    assert check_token_facts(c, "a", revoked=False, used=0) is None
    assert check_token_facts(facts_claims(zones=("A",)), "a", False, 0) == "zone_denied"  # case-sensitive
    assert check_token_facts(facts_claims(zones=("*",)), "anything", False, 0) is None
    assert check_token_facts(facts_claims(zones=("*", "b")), "a", False, 0) == "zone_denied"
    assert check_token_facts(facts_claims(), "a", False, 10**6) is None  # no uses: unlimited


def test_trust_policy_rejects_a_bad_key() -> None:
    with pytest.raises(ValueError, match="'bad'"):
        TrustPolicy.build(SITE, {"bad": "AAAA"}, 5, {})
    with pytest.raises(ValueError, match="'bad'"):
        TrustPolicy.build(SITE, {"bad": "not base64!" * 4}, 5, {})


# --- command tokens ----------------------------------------------------------------------------


def cmd(**over: Any) -> dict[str, Any]:
    c: dict[str, Any] = {
        "iss": SITE,
        "aud": GW,
        "jti": "c-1",
        "iat": NOW,
        "exp": NOW + 30,
        "act": "open",
        "target": "north-gate",
        "by": "guard:3",
    }
    c.update(over)
    return {k: v for k, v in c.items() if v is not DROP}


def cmd_error(
    key: Ed25519PrivateKey, policy: TrustPolicy, now: float = NOW, kid: str = KID, **over: Any
) -> str:
    r = verify_command(mint_token(key, kid, cmd(**over)), policy, GW, now)
    if isinstance(r, CommandClaims):
        return "ok"
    assert r.jti == cmd(**over).get("jti")  # the jti comes back so a result can be published
    return r.error


def test_valid_commands_of_every_action(key: Ed25519PrivateKey, policy: TrustPolicy) -> None:
    args: dict[str, dict[str, Any]] = {
        "elevator_call": {"floor": -2},
        "elevator_grant": {"floors": [3, 4], "seconds": 30},
    }
    for act in sorted(ACTIONS):
        r = verify_command(mint_token(key, KID, cmd(act=act, **args.get(act, {}))), policy, GW, NOW)
        assert isinstance(r, CommandClaims), (act, r)
        assert (r.act, r.jti, r.by) == (act, "c-1", "guard:3")
    r = verify_command(
        mint_token(key, KID, cmd(act="elevator_grant", floors=[3], seconds=9)), policy, GW, NOW
    )
    assert isinstance(r, CommandClaims) and (r.floors, r.seconds, r.floor) == ((3,), 9, None)


@pytest.mark.parametrize(
    ("over", "error"),
    [
        ({"aud": "gw-south"}, "wrong_aud"),
        ({"aud": [GW]}, "malformed"),
        ({"iss": "c43"}, "wrong_site"),
        ({"iat": NOW + 6, "exp": NOW + 30}, "not_yet_valid"),
        ({"iat": NOW - 40, "exp": NOW - 6}, "expired"),
        ({"iat": NOW - 10, "exp": NOW + 51}, "lifetime_too_long"),
        ({"iat": NOW + 5, "exp": NOW - 5}, "lifetime_too_long"),
        ({"act": "self_destruct"}, "unknown_action"),
        ({"act": "OPEN"}, "unknown_action"),
        ({"act": "elevator_call"}, "malformed"),
        ({"act": "elevator_call", "floor": "3"}, "malformed"),
        ({"act": "elevator_call", "floor": True}, "malformed"),
        ({"act": "elevator_grant", "seconds": 30}, "malformed"),
        ({"act": "elevator_grant", "floors": [], "seconds": 30}, "malformed"),
        ({"act": "elevator_grant", "floors": [3]}, "malformed"),
        ({"act": "elevator_grant", "floors": [3], "seconds": 0}, "malformed"),
        ({"act": "elevator_grant", "floors": [3.5], "seconds": 5}, "malformed"),
        ({"iat": True}, "malformed"),
        ({"exp": DROP}, "malformed"),
        ({"target": DROP}, "malformed"),
        ({"act": DROP}, "malformed"),
        ({"by": 7}, "malformed"),
        ({"jti": DROP}, "malformed"),
        ({"exp": 2**70}, "malformed"),
        ({"iat": 2**70, "exp": 2**70 + 10}, "malformed"),
        ({"iat": -1}, "malformed"),
        ({"act": "elevator_call", "floor": 2**70}, "malformed"),
        ({"act": "elevator_grant", "floors": [3, 2**70], "seconds": 5}, "malformed"),
        ({"act": "elevator_grant", "floors": [3], "seconds": 2**70}, "malformed"),
        ({"floor": -(2**70)}, "malformed"),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else v,
)
def test_command_errors(key: Ed25519PrivateKey, policy: TrustPolicy, over: dict, error: str) -> None:
    assert cmd_error(key, policy, **over) == error


def test_command_argument_bounds_are_inclusive(key: Ed25519PrivateKey, policy: TrustPolicy) -> None:
    assert cmd_error(key, policy, act="elevator_call", floor=FLOOR_MIN) == "ok"
    assert cmd_error(key, policy, act="elevator_grant", floors=[FLOOR_MAX], seconds=SECONDS_MAX) == "ok"
    assert cmd_error(key, policy, act="elevator_grant", floors=[3], seconds=SECONDS_MAX + 1) == "malformed"
    assert cmd_error(key, policy, act="elevator_call", floor=FLOOR_MAX + 1) == "malformed"


def test_command_lifetime_of_exactly_60s_is_accepted(key: Ed25519PrivateKey, policy: TrustPolicy) -> None:
    assert cmd_error(key, policy, iat=NOW, exp=NOW + 60) == "ok"


def test_command_error_order(key: Ed25519PrivateKey, policy: TrustPolicy) -> None:
    # wrong site beats wrong aud beats time; unknown action comes only after the time checks
    assert cmd_error(key, policy, iss="x", aud="y", iat=0, exp=1) == "wrong_site"
    assert cmd_error(key, policy, aud="y", iat=0, exp=1) == "wrong_aud"
    assert cmd_error(key, policy, act="nope", iat=0, exp=1) == "expired"
    assert cmd_error(key, policy, kid="k9", iss="x") == "unknown_key"


def test_forged_command_is_refused(key: Ed25519PrivateKey, policy: TrustPolicy) -> None:
    rogue, _ = generate_keypair()
    r = verify_command(mint_token(rogue, KID, cmd()), policy, GW, NOW)
    assert r == CommandDenied("bad_signature", "c-1")
    # a genuine command with its target swapped keeps the old signature: refused too
    h, _, s = mint_token(key, KID, cmd(target="garage")).split(".")
    swapped = f"{h}.{b64url_encode(json.dumps(cmd(target='north-gate')).encode())}.{s}"
    assert verify_command(swapped, policy, GW, NOW) == CommandDenied("bad_signature", "c-1")
    hs = raw_token(key, b'{"alg":"HS256","kid":"k1"}', json.dumps(cmd()).encode())
    assert verify_command(hs, policy, GW, NOW) == CommandDenied("unsupported_alg", "c-1")


def test_malformed_command_still_names_its_jti(key: Ed25519PrivateKey, policy: TrustPolicy) -> None:
    body = json.dumps(cmd()).encode()
    r = verify_command(raw_token(key, b'{"alg":"EdDSA"}', body), policy, GW, NOW)
    assert r == CommandDenied("malformed", "c-1", "missing 'kid'")
    h, c, s = raw_token(key, HDR, body).split(".")
    r = verify_command(f"{h}.{c}.{s}==", policy, GW, NOW)
    assert isinstance(r, CommandDenied) and (r.error, r.jti) == ("malformed", "c-1")
    r = verify_command("x" * 2000, policy, GW, NOW)
    assert isinstance(r, CommandDenied) and (r.error, r.jti) == ("malformed", None)
