"""Legacy ejyy AES codes (edge/legacy_ejyy.py): the scheme as ejyy's server runs it, refusals with
reasons, off unless configured, and a grant only with the bridge's whitelist entry: pure functions,
the in-process flow, and one real `edge run` with a pty scanner and a Modbus relay board."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from edge.app import Gateway
from edge.config import ConfigError, load_config
from edge.engine import Clock, DeviceContext, decide_legacy
from edge.legacy_ejyy import (
    RESIDENT,
    VISITOR,
    LegacyClaims,
    LegacyDenied,
    LegacyPolicy,
    candidate,
    mint_legacy,
    verify_legacy,
    whitelist_value,
)
from edge.model import Entry, Presentation
from edge.normalize import BadCredential, normalize_card
from edge.sim.relay_board import RelayBoardSim
from edge.store import WhitelistStore
from edge.trust import build_legacy
from tests.support.daemon import Daemon
from tests.support.gateway import Signer, free_port, gateway_config
from tests.support.ptys import PtyPair
from tests.test_gateway_e2e import flash_writes, outbox_rows, wait_for

KEY, IV = "0123456789abcdef0123456789abcdef", "fedcba9876543210"  # as in ejyy's config.crypto
POLICY = LegacyPolicy.from_config(KEY, IV, max_age_s=300)
NOW = 1_760_000_000.0


def code(id_: int = 1042, building: int = 18, type_: int = RESIDENT, age_s: float = 10, **kw: Any) -> str:
    """The QR text a phone shows: residents' pages append the drawing time in hex (owner-mp card.js)."""
    ms = int((kw.pop("now", NOW) - age_s) * 1000)
    uid = mint_legacy(kw.pop("policy", POLICY), id_, building, type_, ms)
    return uid + format(int(NOW * 1000), "x") if type_ == RESIDENT else uid


def entry(type_: int = RESIDENT, id_: int = 1042, building: int = 18, **kw: Any) -> Entry:
    """The entry the bridge puts for a legacy-code holder."""
    sub = f"{'resident' if type_ == RESIDENT else 'visitor'}:{id_}"
    return Entry("card", whitelist_value(type_, id_, building), sub, kw.pop("zones", ("north-gate",)), **kw)


# --- the scheme -----------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
def test_same_ciphertext_as_ejyys_node_code() -> None:
    # ejyy api-server/src/utils/crypto.ts encrypt(), verbatim in its crypto calls
    js = (
        "const c=require('crypto');const x=c.createCipheriv('aes-256-cbc',process.argv[1],process.argv[2]);"
        "let s=x.update(process.argv[3],'utf8','hex');s+=x.final('hex');console.log(s)"
    )
    plain = "1042#18#1#1760000000000"
    out = subprocess.run(["node", "-e", js, KEY, IV, plain], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == mint_legacy(POLICY, 1042, 18, RESIDENT, 1_760_000_000_000)


def test_resident_and_visitor_codes_parse() -> None:
    res = verify_legacy(code(), POLICY, NOW)
    assert res == LegacyClaims(1042, 18, RESIDENT, int((NOW - 10) * 1000))
    vis = verify_legacy(code(7, 3, VISITOR), POLICY, NOW)
    assert isinstance(vis, LegacyClaims) and (vis.kind, vis.id, vis.building_id) == ("visitor", 7, 3)
    assert verify_legacy(code().upper(), POLICY, NOW) == res  # a scanner may upper-case hex


def test_whitelist_value_is_never_a_card_a_reader_yields() -> None:
    v = whitelist_value(RESIDENT, 1042, 18)
    assert len(v) == 41 and v.startswith("EE1")
    assert whitelist_value(VISITOR, 1042, 18) != v and whitelist_value(RESIDENT, 1042, 19) != v
    with pytest.raises(BadCredential):
        normalize_card(v, "hex")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("hello", "malformed"),
        ("ab" * 15, "malformed"),  # too short for one block
        (code()[:-12], "malformed"),  # a length no ejyy code has
        (code(policy=LegacyPolicy.from_config("k" * 32, IV)), "bad_signature"),  # another community's key
        ("0" * 64, "bad_signature"),
        (code(age_s=301 + 5), "expired"),
        (code(age_s=-60), "not_yet_valid"),
    ],
)
def test_refusals(text: str, reason: str) -> None:
    got = verify_legacy(text, POLICY, NOW)
    assert isinstance(got, LegacyDenied) and got.reason == reason, got


def test_tampering_any_block_is_refused() -> None:
    text = code()
    for pos in range(0, len(text) - 11, 7):  # the ciphertext; the suffix is unauthenticated and ignored
        flipped = text[:pos] + format(int(text[pos], 16) ^ 0x1, "x") + text[pos + 1 :]
        assert verify_legacy(flipped, POLICY, NOW) == LegacyDenied(
            "bad_signature", "does not decrypt to an ejyy code with this key"
        ), pos
    assert isinstance(verify_legacy(text[:-11] + "00000000000", POLICY, NOW), LegacyClaims)


def test_other_plaintexts_are_refused() -> None:
    from edge.legacy_ejyy import encrypt_text

    for plain in ("1042#18#3#1760000000000", "1042#18#1#176000000000", "01042#18#1#1760000000000",
                  "1042-1760000000000", "1042#18#1#1760000000000#x"):  # fmt: skip
        text = encrypt_text(POLICY.key, POLICY.iv, plain)
        assert isinstance(verify_legacy(text, POLICY, NOW), LegacyDenied), plain


def test_untrusted_clock_refuses() -> None:
    got = verify_legacy(code(), POLICY, NOW, clock_trusted=False)
    assert isinstance(got, LegacyDenied) and got.reason == "clock_unsynced"
    assert candidate(code()) and not candidate("a.b.c")


# --- the engine: a whitelist entry or nothing -----------------------------------------------------

CTX = DeviceContext("north-gate", "north-gate")
CLOCK = Clock(NOW, ZoneInfo("Asia/Shanghai"))
PRES = Presentation("token", "x", "qr", "qr-north")


def test_decryption_alone_never_grants() -> None:
    claims = verify_legacy(code(), POLICY, NOW)
    assert isinstance(claims, LegacyClaims)
    assert decide_legacy(PRES, claims, None, CTX, CLOCK).reason == "unknown_credential"
    d = decide_legacy(PRES, claims, entry(), CTX, CLOCK)
    assert (d.result, d.subject, d.credential) == ("granted", "resident:1042", claims.credential)
    assert decide_legacy(PRES, claims, entry(zones=("south-gate",)), CTX, CLOCK).reason == "zone_denied"
    assert decide_legacy(PRES, claims, entry(blocked=True), CTX, CLOCK).reason == "blocked"
    visitor = verify_legacy(code(7, 3, VISITOR), POLICY, NOW)
    assert isinstance(visitor, LegacyClaims)
    gone = entry(VISITOR, 7, 3, valid_until=int(NOW) - 1)  # ejyy_vistor.expire, through the bridge
    assert decide_legacy(PRES, visitor, gone, CTX, CLOCK).reason == "expired"
    denied = verify_legacy(code(age_s=9999), POLICY, NOW)
    assert decide_legacy(PRES, denied, entry(), CTX, CLOCK).reason == "expired"


# --- configuration --------------------------------------------------------------------------------


def _cfg(tmp_path: Path, legacy: dict[str, Any] | None, port: int = 5020, **readers: Any) -> Path:
    trust: dict[str, Any] = {"keys": {}, "require_clock_sync": False}
    if legacy is not None:
        trust["legacy_ejyy"] = legacy
    return gateway_config(
        tmp_path,
        signer=Signer(),
        bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": port, "timeout": 0.3, "retries": 0},
        readers=readers or {"qr-north": {"type": "serial", "port": "/dev/null", "content": "qr"}},
        extra={"trust": trust},
    )


def test_off_unless_enabled_and_key_checked(tmp_path: Path) -> None:
    assert build_legacy(load_config(_cfg(tmp_path, None))) is None
    assert build_legacy(load_config(_cfg(tmp_path, {"enabled": False, "key": KEY, "iv": IV}))) is None
    on = build_legacy(load_config(_cfg(tmp_path, {"enabled": True, "key": KEY, "iv": IV, "max_age_s": 60})))
    assert on is not None and on.max_age_s == 60 and KEY not in repr(on)
    for bad in ({"key": KEY, "iv": IV}, {"enabled": True, "key": KEY[:-1], "iv": IV},
                {"enabled": True, "key": KEY, "iv": IV + "x"}):  # fmt: skip
        with pytest.raises(ConfigError):
            load_config(_cfg(tmp_path, bad))


def test_check_config_flags_legacy_codes_as_forgeable(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.support.daemon import ROOT

    def check(legacy: dict[str, Any] | None) -> str:
        r = subprocess.run([sys.executable, "-m", "edge.cli", "check-config", str(_cfg(tmp_path, legacy))],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert r.returncode == 0, r.stderr
        return r.stdout

    assert "legacy_ejyy" not in check(None)
    out = check({"enabled": True, "key": KEY, "iv": IV, "max_age_s": 60})
    assert "WARNING: trust.legacy_ejyy is enabled" in out and "forge" in out and "60 s" in out
    assert KEY not in out and IV not in out


# --- the flow, in process: off by default, whitelist-bound when on ---------------------------------


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, legacy: dict[str, Any] | None) -> AsyncIterator[tuple[Gateway, RelayBoardSim]]:
    port = free_port()
    board = RelayBoardSim(device_ids=[1])
    server = asyncio.create_task(board.serve_tcp("127.0.0.1", port))
    await asyncio.sleep(0.1)
    gw = Gateway(load_config(_cfg(tmp_path, legacy, port)))
    try:
        gw.store.import_entries([entry(), entry(VISITOR, 7, 3, valid_until=int(time.time()) + 3600)])
        await gw.start()
        await wait_for(lambda: gw.devices["north-gate"].online)
        yield gw, board
    finally:
        await gw.stop()
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)


def present(gw: Gateway, text: str) -> str:
    return gw.flow.present(Presentation("token", text, "qr", "qr-north", time.perf_counter())).reason


async def test_off_by_default_a_legacy_code_is_malformed_as_before(tmp_path: Path) -> None:
    async with rig(tmp_path, None) as (gw, board):
        assert present(gw, code(now=time.time())) == "malformed"
        await asyncio.sleep(0.3)
        assert flash_writes(board) == []


async def test_enabled_grants_only_listed_people(tmp_path: Path) -> None:
    async with rig(tmp_path, {"enabled": True, "key": KEY, "iv": IV}) as (gw, board):
        now = time.time()
        assert present(gw, code(now=now)) == "ok"
        assert present(gw, code(7, 3, VISITOR, now=now)) == "ok"
        assert present(gw, code(1043, 18, now=now)) == "unknown_credential"  # decrypts; not listed
        assert present(gw, code(1042, 19, now=now)) == "unknown_credential"  # another building
        assert present(gw, code(age_s=400, now=now)) == "expired"
        await wait_for(lambda: len(flash_writes(board)) >= 1)  # the second grant may join the open pulse
        rows = [r for r in outbox_rows(tmp_path / "data") if r["method"] == "qr"]  # not the reader alarm
        assert [(r["result"], r["subject"]) for r in rows[:2]] == [
            ("granted", "resident:1042"),
            ("granted", "visitor:7"),
        ]
        assert str(rows[0]["credential"]).startswith("ejyy:1:1042:18:")


# --- end to end: `edge run`, a pty scanner, a relay board -----------------------------------------


async def test_edge_run_opens_the_door_for_a_listed_legacy_code(tmp_path: Path) -> None:
    port = free_port()
    board = RelayBoardSim(device_ids=[1])
    server = asyncio.create_task(board.serve_tcp("127.0.0.1", port))
    with PtyPair(tmp_path, "qr") as scanner:
        readers = {"qr-north": {"type": "serial", "port": str(scanner.b), "content": "qr"}}
        cfg = _cfg(tmp_path, {"enabled": True, "key": KEY, "iv": IV, "max_age_s": 120}, port, **readers)
        (tmp_path / "data").mkdir()
        store = WhitelistStore(tmp_path / "data" / "whitelist.db")
        store.import_entries([entry()])
        store.close()
        daemon = Daemon(cfg)
        fd = os.open(scanner.a, os.O_RDWR | os.O_NOCTTY)
        try:
            await daemon.wait_for("device_status", device="qr-north", online=True)
            await daemon.wait_for("gateway_started")
            os.write(fd, code(1043, 18, now=time.time()).encode() + b"\r")  # not listed: nothing opens
            os.write(fd, code(now=time.time()).encode() + b"\r")
            await daemon.wait_for("decision", result="granted", subject="resident:1042")
            await wait_for(lambda: len(flash_writes(board)) == 1)
            assert (flash_writes(board)[0].device_id, flash_writes(board)[0].value) == (1, 3)
            assert daemon.seen("decision", result="denied", reason="unknown_credential")
        finally:
            os.close(fd)
            daemon.finish()
            server.cancel()
            await asyncio.gather(server, return_exceptions=True)


# --- a phone over NFC: the same code in an NDEF text record, through nfcpy's udp driver --------------


async def test_a_phone_tapped_with_a_legacy_code_is_decided_as_that_code(tmp_path: Path) -> None:
    from edge.sim.nfc_card import FelicaCard, ndef_text
    from tests.test_nfc import free_udp_port

    port, field = free_port(), free_udp_port()
    board = RelayBoardSim(device_ids=[1])
    server = asyncio.create_task(board.serve_tcp("127.0.0.1", port))
    await asyncio.sleep(0.1)
    reader = {"type": "nfc", "device": f"udp:127.0.0.1:{field}", "ndef_tokens": True}
    legacy = {"enabled": True, "key": KEY, "iv": IV}
    gw = Gateway(load_config(_cfg(tmp_path, legacy, port, **{"nfc-north": reader})))
    try:
        gw.store.import_entries([entry()])
        await gw.start()
        await wait_for(lambda: gw.devices["north-gate"].online)
        phone = FelicaCard(field, idm="02FE0102030405AB", ndef=ndef_text(code(now=time.time())))
        phone.place()
        try:
            await wait_for(lambda: any(r["method"] == "nfc" for r in outbox_rows(tmp_path / "data")), 15)
        finally:
            phone.lift()
        rows = [r for r in outbox_rows(tmp_path / "data") if r["method"] == "nfc"]
        assert [(r["result"], r["reason"], r["subject"]) for r in rows] == [("granted", "ok", "resident:1042")]
        assert str(rows[0]["credential"]).startswith("ejyy:1:1042:18:")
        await wait_for(lambda: len(flash_writes(board)) == 1)
        assert phone.errors == []
    finally:
        await gw.stop()
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)


def test_edge_token_verify_explains_a_legacy_code(tmp_path: Path) -> None:
    """`edge token verify` decides an ejyy code as the gateway would: against its whitelist entry."""
    import json
    import subprocess
    import sys

    from edge.store import WhitelistStore
    from tests.support.daemon import ROOT

    on = _cfg(tmp_path, {"enabled": True, "key": KEY, "iv": IV})
    (tmp_path / "data").mkdir()
    store = WhitelistStore(tmp_path / "data" / "whitelist.db")
    store.import_entries([entry()])
    store.close()

    def verify(cfg: Path, text: str) -> tuple[int, dict[str, Any]]:
        r = subprocess.run([sys.executable, "-m", "edge.cli", "token", "verify", "-v", "-c", str(cfg), text],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
        return r.returncode, json.loads(r.stdout)

    now = time.time()
    rc, out = verify(on, code(now=now))
    assert (rc, out["result"], out["reason"], out["subject"]) == (0, "granted", "ok", "resident:1042")
    assert str(out["credential"]).startswith("ejyy:1:1042:18:")
    rc, out = verify(on, code(1043, 18, now=now))  # decrypts, but nobody listed
    assert (rc, out["reason"]) == (1, "unknown_credential")
    rc, out = verify(on, code(age_s=400, now=now))
    assert (rc, out["reason"]) == (1, "expired")
    rc, out = verify(_cfg(tmp_path, None), code(now=now))  # legacy codes off: not a token at all
    assert (rc, out["reason"]) == (1, "malformed")
