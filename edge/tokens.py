"""Offline verification of credential tokens and command tokens (compact JWS, EdDSA / Ed25519).

Implements shared/spec/tokens.md steps 1-7 (``verify_token``), steps 8-10 as a pure helper fed with
store facts (``check_token_facts``), and the command token of shared/spec/mqtt.md (``verify_command``).
Everything here is pure: no I/O, no clock reads (``now`` is passed in), so every rule is testable
with plain values. Parsing is deliberately strict: the input is attacker-controlled and anything
not exactly as specified is ``malformed`` rather than "probably fine".
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.limits import FLOOR_MAX, FLOOR_MIN, INT64_MAX, SECONDS_MAX, UNIX_S_MAX, int_in
from edge.token_keys import b64url_encode
from edge.token_keys import generate_keypair as generate_keypair  # re-exported: keys and minting
from edge.token_keys import mint_token as mint_token
from edge.token_keys import public_key_b64 as public_key_b64
from edge.token_keys import public_key_from_b64 as public_key_from_b64

KINDS = frozenset({"resident", "visitor", "staff"})
ACTIONS = frozenset({"open", "hold_open", "lock", "normal", "elevator_call", "elevator_grant", "sync"})
DEFAULT_MAX_LIFETIME_S: Mapping[str, int] = MappingProxyType(
    {"resident": 300, "visitor": 7 * 86400, "staff": 86400}
)
MAX_COMMAND_LIFETIME_S = 60
_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")
_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class TrustPolicy:
    """What a gateway trusts: its site id, public keys by kid, leeway and lifetime limits.

    Key objects are built once (``build``) because decoding a key per verification would cost more
    than the verification itself on a Pi.
    """

    site: str
    keys: Mapping[str, Ed25519PublicKey]
    leeway_s: int = 5
    max_lifetime_s: Mapping[str, int] = field(default_factory=lambda: DEFAULT_MAX_LIFETIME_S)
    max_bytes: int = 1024

    @classmethod
    def build(
        cls,
        site: str,
        keys_b64: Mapping[str, str],
        leeway_s: int = 5,
        max_lifetime_s: Mapping[str, int] | None = None,
        max_bytes: int = 1024,
    ) -> TrustPolicy:
        """Decode base64url public keys (padding optional). Raises ValueError naming a bad kid."""
        keys: dict[str, Ed25519PublicKey] = {}
        for kid, b64 in keys_b64.items():
            try:
                keys[kid] = public_key_from_b64(b64)
            except ValueError as exc:
                raise ValueError(f"trusted key {kid!r}: {exc}") from exc
        limits = dict(DEFAULT_MAX_LIFETIME_S)
        limits.update(max_lifetime_s or {})
        return cls(site, MappingProxyType(keys), leeway_s, MappingProxyType(limits), max_bytes)


@dataclass(frozen=True, slots=True)
class TokenClaims:
    iss: str
    sub: str
    kind: str
    jti: str
    exp: int
    nbf: int | None
    zones: tuple[str, ...]
    floors: tuple[int, ...] | None
    uses: int | None


@dataclass(frozen=True, slots=True)
class TokenDenied:
    """A token refused at steps 1-7; ``jti`` is set whenever the claims parsed far enough to read it."""

    reason: str
    jti: str | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class CommandClaims:
    iss: str
    aud: str
    jti: str
    iat: int
    exp: int
    act: str
    target: str
    floor: int | None
    floors: tuple[int, ...] | None
    seconds: int | None
    by: str | None

    def args(self) -> dict[str, Any]:
        """The action's arguments (GateControl.act): what the device acts on and its event reports."""
        return {"floor": self.floor, "floors": self.floors, "seconds": self.seconds, "by": self.by}


@dataclass(frozen=True, slots=True)
class CommandDenied:
    """A refused command; ``jti`` (when readable) lets the caller still publish an R/cmd/result."""

    error: str
    jti: str | None = None
    detail: str = ""


class _Malformed(Exception):
    """Internal: the input is not a well-formed token; the message is the denial detail."""

    def __init__(self, detail: str, jti: str | None = None) -> None:
        super().__init__(detail)
        self.jti = jti


@dataclass(frozen=True, slots=True)
class _Parsed:
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


# --- strict parsing (step 1) ---------------------------------------------------------------------


def _b64url_decode(seg: str, what: str) -> bytes:
    """Unpadded, canonical base64url only: '=', '+', '/', whitespace or stray trailing bits are refused."""
    if len(seg) % 4 == 1 or not _SEGMENT.fullmatch(seg):
        raise _Malformed(f"{what} is not unpadded base64url")
    raw = base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4))
    if b64url_encode(raw) != seg:
        raise _Malformed(f"{what} is not canonical base64url")
    return raw


def _object_no_dupes(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Duplicate names are read differently by different JSON parsers (first vs last wins); the
    # safe reading is to refuse them rather than guess which value the issuer meant.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _Malformed("duplicate key in JSON object")
    return obj


def _no_constant(name: str) -> Any:
    raise _Malformed(f"{name} is not JSON")


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
        value = json.loads(text, object_pairs_hook=_object_no_dupes, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise _Malformed(f"{what} is not UTF-8 JSON") from exc
    if type(value) is not dict:
        raise _Malformed(f"{what} is not a JSON object")
    return value


def _parse(token: object, max_bytes: int) -> _Parsed:
    if not isinstance(token, str) or not token:
        raise _Malformed("empty or not text")
    # Size before anything else, so a hostile input costs at most max_bytes of work.
    if len(token) > max_bytes or len(token.encode("utf-8", "surrogatepass")) > max_bytes:
        raise _Malformed(f"over {max_bytes} bytes")
    parts = token.split(".")
    if len(parts) != 3:
        raise _Malformed(f"{len(parts)} dot-separated segments, not 3")
    h_seg, c_seg, s_seg = parts
    claims = _json_object(_b64url_decode(c_seg, "claims"), "claims")
    try:  # claims first, so a denial can still name the jti (commands publish a result for it)
        header = _json_object(_b64url_decode(h_seg, "header"), "header")
        signature = _b64url_decode(s_seg, "signature")
    except _Malformed as exc:
        raise _Malformed(str(exc), _jti_of(claims)) from None
    return _Parsed(header, claims, f"{h_seg}.{c_seg}".encode("ascii"), signature)


def _text(v: Any, name: str) -> str:
    if type(v) is not str:
        raise _Malformed(f"{name!r} must be a string")
    if not v.isascii():
        try:
            v.encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogate from a \\ud800 escape: unstorable downstream
            raise _Malformed(f"{name!r} is not valid Unicode") from exc
    return v


def _int(v: Any, name: str, lo: int = 0, hi: int = UNIX_S_MAX) -> int:
    """An integer claim in lo..hi (by default a unix time), else malformed: step 1, not a time check."""
    if not int_in(v, lo, hi):
        raise _Malformed(f"{name!r} must be an integer in {lo}..{hi}")
    return v


def _req(c: dict[str, Any], name: str) -> Any:
    v = c.get(name, _MISSING)
    if v is _MISSING:
        raise _Malformed(f"missing {name!r}")
    return v


def _opt_int(c: dict[str, Any], name: str, lo: int, hi: int) -> int | None:
    # Present-but-null is a wrong type, not "absent": the spec types these as integers.
    return None if name not in c else _int(c[name], name, lo, hi)


def _opt_floors(c: dict[str, Any], name: str = "floors") -> tuple[int, ...] | None:
    if name not in c:
        return None
    v = c[name]
    if type(v) is not list:
        raise _Malformed(f"{name!r} must be a list of integers")
    return tuple(_int(x, name, FLOOR_MIN, FLOOR_MAX) for x in v)


def _jti_of(claims: dict[str, Any]) -> str | None:
    try:
        jti = _text(claims.get("jti"), "jti")
    except _Malformed:
        return None
    return jti or None


def _check_header(header: dict[str, Any]) -> None:
    if "crit" in header:  # we understand no extensions, so any critical one must be refused
        raise _Malformed("header has 'crit'")
    _text(_req(header, "kid"), "kid")


def _check_signature(p: _Parsed, policy: TrustPolicy) -> str | None:
    """Steps 2-4. The header is never trusted for choosing an algorithm or key material."""
    if p.header.get("alg") != "EdDSA":
        return "unsupported_alg"
    key = policy.keys.get(p.header["kid"])
    if key is None:
        return "unknown_key"
    try:
        key.verify(p.signature, p.signing_input)  # over header.claims exactly as received
    except (InvalidSignature, ValueError):
        return "bad_signature"
    return None


# --- credential tokens ---------------------------------------------------------------------------


def _token_claims(c: dict[str, Any]) -> TokenClaims:
    iss = _text(_req(c, "iss"), "iss")
    sub = _text(_req(c, "sub"), "sub")
    kind = _text(_req(c, "kind"), "kind")
    if kind not in KINDS:
        raise _Malformed(f"unknown kind {kind!r}")
    jti = _text(_req(c, "jti"), "jti")
    if not jti:
        raise _Malformed("empty 'jti'")  # it keys revocation and use counting: must identify
    exp = _int(_req(c, "exp"), "exp")
    nbf = _opt_int(c, "nbf", 0, UNIX_S_MAX)
    zones_v = _req(c, "zones")
    if type(zones_v) is not list or not zones_v:
        raise _Malformed("'zones' must be a non-empty list of strings")
    zones = tuple(_text(z, "zones") for z in zones_v)
    floors = _opt_floors(c)
    uses = _opt_int(c, "uses", 1, INT64_MAX)
    return TokenClaims(iss, sub, kind, jti, exp, nbf, zones, floors, uses)


def verify_token(
    token: str, policy: TrustPolicy, now: float, *, clock_trusted: bool = True
) -> TokenClaims | TokenDenied:
    """Steps 1-7 of tokens.md, in order; the first failure is the denial reason."""
    try:
        p = _parse(token, policy.max_bytes)
    except _Malformed as exc:
        return TokenDenied("malformed", exc.jti, str(exc))
    jti = _jti_of(p.claims)
    try:
        _check_header(p.header)
        claims = _token_claims(p.claims)
    except _Malformed as exc:
        return TokenDenied("malformed", jti, str(exc))
    reason = _check_signature(p, policy)
    if reason is not None:
        return TokenDenied(reason, jti)
    if claims.iss != policy.site:
        return TokenDenied("wrong_site", jti, f"iss {claims.iss!r}")
    if not clock_trusted:  # every credential token carries exp, so all are time-bound
        return TokenDenied("clock_unsynced", jti)
    leeway = policy.leeway_s
    # Comparisons stay int-vs-float (exact in Python), so a huge exp/nbf cannot overflow a float.
    if claims.nbf is not None and now < claims.nbf - leeway:
        return TokenDenied("not_yet_valid", jti, f"nbf {claims.nbf}")
    if now > claims.exp + leeway:
        return TokenDenied("expired", jti, f"exp {claims.exp}")
    limit = policy.max_lifetime_s.get(claims.kind, DEFAULT_MAX_LIFETIME_S[claims.kind])
    too_long = claims.exp - claims.nbf > limit if claims.nbf is not None else claims.exp > now + limit
    if too_long:
        return TokenDenied("lifetime_too_long", jti, f"over {limit} s for {claims.kind}")
    return claims


def check_token_facts(claims: TokenClaims, zone: str, revoked: bool, used: int) -> str | None:
    """Steps 8-10 of tokens.md with the store's facts: the deny reason, or None to grant."""
    if revoked:
        return "revoked"
    # Only the exact list ["*"] is the wildcard (step 9's wording); "*" among other zones is literal.
    if zone not in claims.zones and claims.zones != ("*",):
        return "zone_denied"
    if claims.uses is not None and used >= claims.uses:
        return "uses_exhausted"
    return None


# --- command tokens (mqtt.md "Commands") ---------------------------------------------------------


def _command_claims(c: dict[str, Any]) -> CommandClaims:
    iss = _text(_req(c, "iss"), "iss")
    aud = _text(_req(c, "aud"), "aud")  # a single gateway id; a JWT-style list is refused
    jti = _text(_req(c, "jti"), "jti")
    if not jti:
        raise _Malformed("empty 'jti'")
    iat = _int(_req(c, "iat"), "iat")
    exp = _int(_req(c, "exp"), "exp")
    act = _text(_req(c, "act"), "act")
    target = _text(_req(c, "target"), "target")
    floor = _opt_int(c, "floor", FLOOR_MIN, FLOOR_MAX)
    floors = _opt_floors(c)
    seconds = _opt_int(c, "seconds", -INT64_MAX - 1, INT64_MAX)  # 1..SECONDS_MAX: an action argument
    by = None if "by" not in c else _text(c["by"], "by")
    return CommandClaims(iss, aud, jti, iat, exp, act, target, floor, floors, seconds, by)


def _check_action_args(cmd: CommandClaims) -> str | None:
    if cmd.act == "elevator_call" and cmd.floor is None:
        return "elevator_call needs an integer 'floor'"
    if cmd.act == "elevator_grant":
        if not cmd.floors:
            return "elevator_grant needs a non-empty 'floors' list"
        if cmd.seconds is None:
            return "elevator_grant needs integer 'seconds'"
    if cmd.seconds is not None and not 1 <= cmd.seconds <= SECONDS_MAX:
        return f"'seconds' must be in 1..{SECONDS_MAX}"
    return None


def verify_command(
    token: str, policy: TrustPolicy, gateway_id: str, now: float
) -> CommandClaims | CommandDenied:
    """Check a command token up to its action arguments. Replay and target checks are the caller's."""
    try:
        p = _parse(token, policy.max_bytes)
    except _Malformed as exc:
        return CommandDenied("malformed", exc.jti, str(exc))
    jti = _jti_of(p.claims)
    try:
        _check_header(p.header)
        cmd = _command_claims(p.claims)
    except _Malformed as exc:
        return CommandDenied("malformed", jti, str(exc))
    error = _check_signature(p, policy)
    if error is not None:
        return CommandDenied(error, jti)
    if cmd.iss != policy.site:
        return CommandDenied("wrong_site", jti, f"iss {cmd.iss!r}")
    if cmd.aud != gateway_id:
        return CommandDenied("wrong_aud", jti, f"aud {cmd.aud!r}")
    leeway = policy.leeway_s
    if now < cmd.iat - leeway:
        return CommandDenied("not_yet_valid", jti, f"iat {cmd.iat}")
    if now > cmd.exp + leeway:
        return CommandDenied("expired", jti, f"exp {cmd.exp}")
    if cmd.exp < cmd.iat or cmd.exp - cmd.iat > MAX_COMMAND_LIFETIME_S:
        return CommandDenied("lifetime_too_long", jti, f"exp - iat = {cmd.exp - cmd.iat}")
    if cmd.act not in ACTIONS:
        return CommandDenied("unknown_action", jti, f"act {cmd.act!r}")
    detail = _check_action_args(cmd)
    if detail is not None:
        return CommandDenied("malformed", jti, detail)
    return cmd
