"""Faults in the log stream (issue 6.1): a dead log reader or a full disk must never disable a door.

Each test runs a real `edge run` whose stderr goes somewhere broken, a real pymodbus board and a real
pty scanner; what the gate does is read from the board's recorded writes and the outbox on disk, since
the daemon's own log is exactly what cannot be trusted here.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from edge.sim.relay_board import RelayBoardSim
from tests.support.gateway import Signer, free_port, gateway_config
from tests.support.modbus import eventually
from tests.support.ptys import PtyPair

ROOT = Path(__file__).resolve().parent.parent


def outbox_events(data: Path) -> list[dict[str, object]]:
    try:
        con = sqlite3.connect(data / "outbox.db")
    except sqlite3.Error:
        return []
    try:
        return [json.loads(b) for (b,) in con.execute("SELECT body FROM events ORDER BY seq")]
    except sqlite3.Error:
        return []
    finally:
        con.close()


def flash_writes(board: RelayBoardSim) -> int:
    return len([w for w in board.writes if w.address == 0x0200])


class _Rig:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.signer = Signer()
        self.port = free_port()
        self.board = RelayBoardSim(device_ids=[1])
        self.scanner = PtyPair(tmp_path, "qr").start()
        self.cfg = gateway_config(
            tmp_path,
            signer=self.signer,
            bus={
                "type": "modbus_tcp",
                "host": "127.0.0.1",
                "port": self.port,
                "timeout": 0.2,
                "retries": 0,
                "offline_after": 1,
                "probe_min_s": 0.2,
                "probe_max_s": 0.5,
            },
            readers={"qr-north": {"type": "serial", "port": str(self.scanner.b), "content": "qr"}},
            door={"pulse_ms": 100},
        )
        self.fd = os.open(self.scanner.a, os.O_RDWR | os.O_NOCTTY)
        self.data = tmp_path / "data"
        self.server: asyncio.Task[None] | None = None

    async def start_board(self) -> None:
        self.server = asyncio.create_task(self.board.serve_tcp("127.0.0.1", self.port))
        await asyncio.sleep(0.2)

    def spawn(self, stderr: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "run", "-c", str(self.cfg), "--log-format", "json"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=stderr,  # type: ignore[arg-type]
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def show(self, jti: str) -> None:
        os.write(self.fd, self.signer.code(jti).encode() + b"\r")

    async def wait_ready(self) -> None:
        """The daemon has decided a first code (the reader is open and the board answers)."""
        for i in range(100):
            self.show(f"ready-{i}")
            if await eventually(lambda: any(e["reason"] == "ok" for e in outbox_events(self.data)), 0.3):
                return
        raise AssertionError("the gateway never decided a code")

    async def close(self) -> None:
        os.close(self.fd)
        self.scanner.stop()
        if self.server is not None:
            self.server.cancel()
            await asyncio.gather(self.server, return_exceptions=True)


def _finish(proc: subprocess.Popen[bytes]) -> int | None:
    if proc.poll() is None:
        proc.kill()
    return proc.wait(10)


async def test_dead_log_reader_then_a_modbus_failure_keeps_the_door_working(tmp_path: Path) -> None:
    rig = _Rig(tmp_path)
    await rig.start_board()
    proc = rig.spawn(subprocess.PIPE)
    try:
        await rig.wait_ready()
        assert await eventually(lambda: flash_writes(rig.board) >= 1)
        assert proc.stderr is not None
        proc.stderr.close()  # `| tee log` and tee dies: every later log write gets EPIPE
        rig.board.remove_device(1)  # the unit stops answering: a Modbus request fails (and is logged)
        rig.show("while-dead")
        assert await eventually(
            lambda: any(e["reason"] == "device_unavailable" for e in outbox_events(rig.data)), 10
        ), "a grant whose actuation failed must be followed by a device_unavailable event"
        rig.board.add_device(1)  # back: probes bring it online, and doors must open again
        before = flash_writes(rig.board)
        for i in range(50):
            rig.show(f"after-{i}")
            if await eventually(lambda: flash_writes(rig.board) > before, 0.5):
                break
        assert flash_writes(rig.board) > before, "no request reached the board after the failure"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 15) == 0
        last = rig.board.writes_to(1)[-1]
        assert (last.address, last.value) == (0, 0), f"shutdown left the lock as it was: {last}"
    finally:
        _finish(proc)
        await rig.close()


async def test_dead_log_reader_sigterm_exits_zero(tmp_path: Path) -> None:
    rig = _Rig(tmp_path)
    await rig.start_board()
    proc = rig.spawn(subprocess.PIPE)
    try:
        await rig.wait_ready()
        assert proc.stderr is not None
        proc.stderr.close()
        granted = len(outbox_events(rig.data))
        rig.show("after-close")
        assert await eventually(lambda: len(outbox_events(rig.data)) > granted)
        await asyncio.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 15) == 0
    finally:
        _finish(proc)
        await rig.close()


async def test_stderr_on_a_full_disk_runs_and_exits_zero(tmp_path: Path) -> None:
    rig = _Rig(tmp_path)
    await rig.start_board()
    with open("/dev/full", "wb") as full:
        proc = rig.spawn(full)
    try:
        await rig.wait_ready()
        assert proc.poll() is None, "the daemon died with stderr on a full disk"
        before = flash_writes(rig.board)
        rig.show("full-disk")
        assert await eventually(lambda: flash_writes(rig.board) > before)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 15) == 0
    finally:
        _finish(proc)
        await rig.close()
