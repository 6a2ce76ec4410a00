"""Rate limiting (issue 8): denials at one reader -> every presentation there denied for a cooldown."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from pathlib import Path

from edge.app import Gateway
from edge.config import load_config
from edge.engine import DeviceContext, decide_entry
from edge.model import Entry, Presentation
from edge.ratelimit import RateLimiter
from edge.sim.relay_board import RelayBoardSim
from tests.support.gateway import Signer, free_port, gateway_config
from tests.support.modbus import eventually
from tests.support.ptys import PtyPair


def rows(data: Path) -> list[dict[str, object]]:
    con = sqlite3.connect(data / "outbox.db")
    try:
        return [json.loads(b) for (b,) in con.execute("SELECT body FROM events ORDER BY seq")]
    finally:
        con.close()


def test_limiter_counts_denials_in_the_window_then_cools_down() -> None:
    rl = RateLimiter(3, window_s=10, cooldown_s=5)
    assert not rl.denied("r", "unknown_credential", 0.0)
    assert not rl.denied("r", "device_unavailable", 1.0)  # not a judgement of the credential
    assert not rl.denied("r", "bad_signature", 2.0)
    assert not rl.blocked("r", 2.5)
    assert rl.denied("r", "expired", 3.0)  # the third counted denial within 10 s
    assert rl.blocked("r", 7.9) and not rl.blocked("other", 7.9)
    assert not rl.blocked("r", 8.0)
    assert not rl.denied("r", "unknown_credential", 30.0)  # old denials left the window


def test_low_confidence_plate_is_denied_before_the_whitelist() -> None:
    entry = Entry("plate", "京A12345", "resident:1", ("car",))
    dev = DeviceContext("car-in", "car")
    low = Presentation("plate", "京A12345", "plate", "lpr", confidence=60, min_confidence=80)
    ok = Presentation("plate", "京A12345", "plate", "lpr", confidence=95, min_confidence=80)
    from zoneinfo import ZoneInfo

    from edge.engine import Clock

    clock = Clock(1_800_000_000, ZoneInfo("UTC"))
    assert decide_entry(low, entry, dev, clock, "2345").reason == "low_confidence"
    assert decide_entry(ok, entry, dev, clock, "2345").granted


async def test_a_reader_under_attack_is_cooled_down_then_works_again(tmp_path: Path) -> None:
    port = free_port()
    board = RelayBoardSim(device_ids=[1])
    server = asyncio.create_task(board.serve_tcp("127.0.0.1", port))
    cards = PtyPair(tmp_path, "card").start()
    other = PtyPair(tmp_path, "card2").start()
    cfg = gateway_config(
        tmp_path,
        signer=Signer(),
        bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": port},
        readers={
            "card-north": {"type": "serial", "port": str(cards.b), "content": "card"},
            "card-south": {"type": "serial", "port": str(other.b), "content": "card"},
        },
        extra={"rate_limit": {"denials": 3, "window_s": 60, "cooldown_s": 1.5}},
    )
    await asyncio.sleep(0.2)
    gw = Gateway(load_config(cfg))
    gw.store.import_entries([Entry("card", "04A1B2C3", "resident:1", ("north-gate",))])
    fd = fd2 = -1
    try:
        await gw.start()
        assert await eventually(lambda: all(r.online for r in gw.readers.values()))
        fd = os.open(cards.a, os.O_RDWR | os.O_NOCTTY)
        fd2 = os.open(other.a, os.O_RDWR | os.O_NOCTTY)
        data = tmp_path / "data"
        for i in range(3):  # someone tries card numbers
            os.write(fd, f"DEAD00{i:02X}\r".encode())
        assert await eventually(lambda: len(rows(data)) == 3)
        os.write(fd, b"04A1B2C3\r")  # a valid card during the cooldown: refused too
        os.write(fd2, b"04A1B2C3\r")  # the same card at another reader: not limited
        assert await eventually(lambda: len(rows(data)) == 5)
        by_reader = {(r["reader"], r["reason"]) for r in rows(data)[3:]}
        assert by_reader == {("card-north", "rate_limited"), ("card-south", "ok")}
        await asyncio.sleep(1.6)
        os.write(fd, b"04A1B2C3\r")
        assert await eventually(lambda: len(rows(data)) == 6)
        assert rows(data)[-1]["reason"] == "ok"
    finally:
        for f in (fd, fd2):
            if f >= 0:
                os.close(f)
        await gw.stop()
        cards.stop()
        other.stop()
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
