"""Visitor codes and vehicles (issue 8): use counts survive restarts, a revocation applies at once, a
visitor vehicle is a plate entry with from/until. A real gateway on real ptys and a real board."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edge.app import Gateway
from edge.config import load_config
from edge.model import Entry
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


class Site:
    def __init__(self, tmp: Path) -> None:
        self.signer = Signer()
        self.port = free_port()
        self.board = RelayBoardSim(device_ids=[1])
        self.qr = PtyPair(tmp, "qr").start()
        self.plate = PtyPair(tmp, "plate").start()
        self.cfg = gateway_config(
            tmp,
            signer=self.signer,
            bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": self.port},
            readers={
                "qr-north": {"type": "serial", "port": str(self.qr.b), "content": "qr"},
                "plate-north": {"type": "serial", "port": str(self.plate.b), "content": "plate"},
            },
            extra={"rate_limit": {"denials": 0}},
        )
        self.data = tmp / "data"
        self.gw: Gateway | None = None

    async def start(self) -> Gateway:
        self.gw = Gateway(load_config(self.cfg))
        await self.gw.start()
        assert await eventually(lambda: all(r.online for r in self.gw.readers.values()))  # type: ignore[union-attr]
        return self.gw

    async def stop(self) -> None:
        if self.gw is not None:
            await self.gw.stop()
            self.gw = None

    async def show(self, reader: str, text: str) -> dict[str, object]:
        n = len(rows(self.data)) if (self.data / "outbox.db").exists() else 0
        pty = self.qr if reader == "qr" else self.plate
        fd = os.open(pty.a, os.O_RDWR | os.O_NOCTTY)
        try:
            os.write(fd, text.encode() + b"\r")
            assert await eventually(lambda: len(rows(self.data)) > n)
        finally:
            os.close(fd)
        return rows(self.data)[-1]


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    s = Site(tmp_path)
    server = asyncio.create_task(s.board.serve_tcp("127.0.0.1", s.port))
    await asyncio.sleep(0.2)
    try:
        yield s
    finally:
        await s.stop()
        s.qr.stop()
        s.plate.stop()
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server


async def test_a_limited_code_keeps_its_use_count_across_a_restart(site: Site) -> None:
    code = site.signer.code("visit-3x", uses=2)
    await site.start()
    assert (await site.show("qr", code))["reason"] == "ok"
    await site.stop()
    await site.start()  # the box rebooted: the visitor has one use left, not two
    assert (await site.show("qr", code))["reason"] == "ok"
    assert (await site.show("qr", code))["reason"] == "uses_exhausted"


async def test_a_revocation_applies_at_once(site: Site) -> None:
    code = site.signer.code("visit-revoked")
    gw = await site.start()
    assert (await site.show("qr", code))["reason"] == "ok"
    revoke = {"op": "revoke", "jti": "visit-revoked", "until": int(time.time()) + 3600}
    assert await gw.store.apply_delta({"type": "delta", "from": 0, "to": 1, "ops": [revoke]})
    assert (await site.show("qr", code))["reason"] == "revoked"


async def test_a_visitor_vehicle_is_a_plate_entry_with_from_and_until(site: Site) -> None:
    now = int(time.time())
    gw = await site.start()
    gw.store.import_entries(
        [
            Entry("plate", "沪B7C316", "visitor:301", ("north-gate",), valid_from=now - 60, valid_until=now + 3600),
            Entry("plate", "沪B7C317", "visitor:302", ("north-gate",), valid_from=now - 7200, valid_until=now - 3600),
            Entry("plate", "沪B7C318", "visitor:303", ("north-gate",), valid_from=now + 3600, valid_until=now + 7200),
        ]
    )
    assert [(await site.show("plate", p))["reason"] for p in ("沪B·7C316", "沪B7C317", "沪B 7C318")] == [
        "ok",
        "expired",
        "not_yet_valid",
    ]
    grants = [r for r in rows(site.data) if r["result"] == "granted"]
    assert [(g["method"], g["subject"]) for g in grants] == [("plate", "visitor:301")]
    assert await eventually(lambda: any(w.address == 0x0200 for w in site.board.writes))
