"""Start-up and shutdown switch nothing on: a door, a barrier and an elevator on RelayBoardSim boards
under a real `edge run`, judged by the boards' own write logs.

The only on-writes allowed are those of a grant triggered in the middle, excluded by time window
(presented after start-up was done, over before SIGTERM). A kill -9 during start-up leaves nothing
on either, and the next start-up switches off whatever a board had on.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from drivers.modbus_bus import COIL_ON
from edge.sim.relay_board import FLASH_ON_BASE, CoilWrite, RelayBoardSim
from tests.support.daemon import Daemon
from tests.support.gateway import Signer, free_port, gateway_config
from tests.support.ptys import PtyPair

DOOR, BARRIER, LIFT = 1, 2, 3


def switches_on(w: CoilWrite) -> bool:
    """An on write, or a vendor flash command (0x0200+n on for a time, 0x0400+n on again after it)."""
    return w.address >= FLASH_ON_BASE or w.value == COIL_ON


@dataclass
class Site:
    board: RelayBoardSim
    cfg: Path
    fd: int
    signer: Signer

    def writes(self, t0: float, t1: float = float("inf")) -> list[CoilWrite]:
        return [w for w in list(self.board.writes) if t0 <= w.t < t1]

    def units_written(self, t0: float) -> set[int]:
        return {w.device_id for w in self.writes(t0)}


@asynccontextmanager
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    signer = Signer()
    port = free_port()
    board = RelayBoardSim(device_ids=[DOOR, BARRIER, LIFT])
    server = asyncio.create_task(board.serve_tcp("127.0.0.1", port))
    scanner = PtyPair(tmp_path, "qr").start()
    cfg = gateway_config(
        tmp_path,
        signer=signer,
        bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": port, "timeout": 0.3, "retries": 0},
        readers={"qr-north": {"type": "serial", "port": str(scanner.b), "content": "qr"}},
        door={"pulse_ms": 300, "pulse_mode": "coil"},
        extra={
            "barriers": {
                "car-in": {
                    "bus": "b1",
                    "device_id": BARRIER,
                    "zone": "car-north",
                    "direction": "in",
                    "open_coil": 0,
                    "close_coil": 1,
                    "pulse_ms": 300,
                    "loop_input": 0,
                    "travel_s": 1.0,
                }
            },
            "elevators": {
                "lift-1": {
                    "zone": "lift-1",
                    "floor_outputs": {
                        f: {"bus": "b1", "device_id": LIFT, "coil": f - 1} for f in (1, 2, 3, 4)
                    },
                    "enable_when": "energised",
                    "grant_s": 5,
                }
            },
        },
    )
    fd = os.open(scanner.a, os.O_RDWR | os.O_NOCTTY)
    try:
        yield Site(board, cfg, fd, signer)
    finally:
        os.close(fd)
        scanner.stop()
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)


async def until(pred: object, within: float = 20.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.05)
    return False


def all_relays_off(board: RelayBoardSim) -> bool:
    return not any(board.coil(u, n) for u in (DOOR, BARRIER, LIFT) for n in range(board.channels))


async def test_startup_and_sigterm_switch_nothing_on(tmp_path: Path) -> None:
    async with site(tmp_path) as s:
        t_spawn = time.monotonic()
        gw = Daemon(s.cfg)
        try:
            await gw.wait_for("device_status", device="qr-north", online=True)
            # every board got its start-up writes (each device puts its outputs to the safe state)
            assert await until(lambda: s.units_written(t_spawn) == {DOOR, BARRIER, LIFT}), s.board.writes
            await asyncio.sleep(1.0)  # anything start-up does late is still inside the window
            t_grant = time.monotonic()
            startup = s.writes(t_spawn, t_grant)
            assert [w for w in startup if switches_on(w)] == [], "an output switched on at start-up"

            # a grant in the middle: the door pulses (on, then off), proving the rig sees on-writes
            os.write(s.fd, s.signer.code("safe-1").encode() + b"\r")
            await gw.wait_for("decision", credential="safe-1", result="granted")
            assert await until(lambda: any(switches_on(w) for w in s.writes(t_grant)))
            assert await until(lambda: all_relays_off(s.board))
            await asyncio.sleep(0.5)
            t_term = time.monotonic()
            gw.proc.send_signal(signal.SIGTERM)
            # waited for off the loop: the boards answer on this loop, and must, for the final writes
            assert await asyncio.to_thread(gw.proc.wait, 30) == 0
            await asyncio.sleep(0.3)  # the board serves what was on the wire at exit
        finally:
            gw.finish()
        grant_writes = s.writes(t_grant, t_term)
        assert [(w.device_id, w.address) for w in grant_writes if switches_on(w)] == [(DOOR, 0)]
        shutdown = s.writes(t_term)
        assert [w for w in shutdown if switches_on(w)] == [], "an output switched on at shutdown"
        assert {w.device_id for w in shutdown} == {DOOR, BARRIER, LIFT}, "shutdown wrote no safe state"
        assert all_relays_off(s.board)
        assert gw.seen("gateway_stopped")


async def test_kill9_during_startup_switches_nothing_on_and_restart_clears_relays(tmp_path: Path) -> None:
    rng = random.Random(7)
    async with site(tmp_path) as s:
        t0 = time.monotonic()
        for _ in range(5):  # killed at random moments of start-up, before it can have decided anything
            gw = Daemon(s.cfg)
            await asyncio.sleep(rng.uniform(0.2, 2.0))
            gw.proc.send_signal(signal.SIGKILL)
            gw.finish()
        await asyncio.sleep(0.3)
        assert [w for w in s.writes(t0) if switches_on(w)] == [], "an output switched on at start-up"
        # a board left with relays on (power blip mid-pulse, a previous crash): start-up turns them off
        for unit, coil in ((DOOR, 0), (BARRIER, 0), (BARRIER, 1), (LIFT, 2)):
            s.board.set_coil(unit, coil, True)
        t1 = time.monotonic()
        gw = Daemon(s.cfg)
        try:
            await gw.wait_for("device_status", device="qr-north", online=True)
            assert await until(lambda: all_relays_off(s.board)), "start-up left a relay on"
            assert [w for w in s.writes(t1) if switches_on(w)] == []
        finally:
            gw.finish()
