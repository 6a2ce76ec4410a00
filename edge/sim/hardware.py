"""The simulated hardware of a config (relay boards, pty scanners) and the DEMO-key codes shown to it.

Shared by `edge sim` and the scripted `edge demo`; it imports only the product and other simulators.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.config import Config
from edge.sim.demo_key import DEMO_KID, demo_private_key

DEMO_WHITELIST = Path(__file__).resolve().parents[2] / "config" / "demo-whitelist.json"


def mint_demo_code(
    cfg: Config,
    kind: str = "visitor",
    sub: str = "visitor:88",
    ttl: int = 3600,
    uses: int | None = 5,
    zones: list[str] | None = None,
    floors: list[int] | None = None,
) -> str:
    """A code signed with the public DEMO key; only a config trusting kid demo-only-2026 accepts it."""
    from edge.ids import new_event_id
    from edge.tokens import mint_token

    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": cfg.gateway.site,
        "sub": sub,
        "kind": kind,
        "jti": "demo-" + new_event_id(),
        "nbf": now - 5,
        "exp": now + ttl,
        "zones": zones or sorted({d.zone for d in cfg.doors.values()}) or ["*"],
    }
    if uses is not None:
        claims["uses"] = uses
    if floors:
        claims["floors"] = floors
    return mint_token(demo_private_key(), DEMO_KID, claims)


class SimHardware:
    """Relay boards and scanners for every simulated-able device of a config."""

    def __init__(self, cfg: Config, say: Callable[[str], None] = print) -> None:
        from edge.sim.relay_board import RelayBoardSim
        from edge.sim.scanner import SimScanner

        self.cfg = cfg
        self.say = say
        self.boards: dict[str, Any] = {}
        self.scanners: dict[str, Any] = {}
        self._tasks: list[asyncio.Task[None]] = []
        for bid, bus in cfg.buses.items():
            if bus.type == "modbus_tcp":
                ids = sorted({d.device_id for d in cfg.doors.values() if d.bus == bid}) or [1]
                board = RelayBoardSim(device_ids=ids)
                board.on_write(lambda w, bid=bid: self._coil(bid, w))
                self.boards[bid] = board
        for rid, r in cfg.readers.items():
            if r.type == "serial":
                self.scanners[rid] = SimScanner(Path(r.port), terminator=b"\r")

    def _coil(self, bus_id: str, w: Any) -> None:
        names = [
            did
            for did, d in self.cfg.doors.items()
            if d.bus == bus_id and d.device_id == w.device_id and d.lock_coil == (w.address & 0xFF)
        ]
        what = f"door {names[0]}" if names else f"unit {w.device_id}"
        if w.address >= 0x0200:
            self.say(f"  [relay board] {what}: lock RELEASED for {w.value * 0.1:.1f} s (flash pulse)")
        else:
            self.say(
                f"  [relay board] {what}: coil {w.address} {'ON (lock released)' if w.value else 'OFF (locked)'}"
            )

    async def start(self) -> None:
        for bid, board in self.boards.items():
            bus = self.cfg.buses[bid]
            self._tasks.append(asyncio.create_task(board.serve_tcp(bus.host, bus.port)))  # type: ignore[union-attr]
        for sc in self.scanners.values():
            await sc.start()
        await asyncio.sleep(0.3)  # let the servers bind before the gateway connects

    async def stop(self) -> None:
        for sc in self.scanners.values():
            with contextlib.suppress(Exception):
                await sc.stop()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def scanner_for(self, content: str) -> Any | None:
        for rid, sc in self.scanners.items():
            if self.cfg.readers[rid].content == content:
                return sc
        return None

    def type_line(self, line: str) -> None:
        """`card:XXXX` goes to the first card reader, anything else to the first QR scanner."""
        if line.lower().startswith("card:"):
            sc, text = self.scanner_for("card"), line[5:].strip()
        else:
            sc, text = self.scanner_for("qr"), line.strip()
        if sc is None:
            self.say("  (no such simulated reader in this config)")
        else:
            sc.send(text)


async def stdin_lines(hw: SimHardware) -> None:
    """Typed lines to the simulated readers until end of input."""
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        if line.strip():
            hw.type_line(line)
