"""A flood of valid presentations (issue 6.5): per-door work stays bounded, no pulses after the flood.

A real `edge run`, a real pty card reader and a real pymodbus board. A card held to a reader that
repeats it, or a reader gone mad, must not queue one relay write per line: a pulse on a door whose lock
is already released only extends it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from edge.sim.relay_board import RelayBoardSim
from tests.support.gateway import Signer, free_port, gateway_config
from tests.support.modbus import eventually
from tests.support.ptys import PtyPair

ROOT = Path(__file__).resolve().parent.parent
CARD = "04A1B2C3"
LINES = 20_000


def outbox_count(data: Path) -> int:
    try:
        con = sqlite3.connect(data / "outbox.db")
        try:
            return int(con.execute("SELECT count(*) FROM events").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def granted(data: Path) -> int:
    con = sqlite3.connect(data / "outbox.db")
    try:
        return sum(json.loads(b)["result"] == "granted" for (b,) in con.execute("SELECT body FROM events"))
    finally:
        con.close()


async def settled(data: Path, quiet_s: float = 1.0, timeout: float = 120.0) -> int:
    """Wait until the outbox stops growing: every line sent has been decided."""
    last, still = -1, 0.0
    for _ in range(int(timeout / 0.2)):
        n = outbox_count(data)
        if n == last:
            still += 0.2
            if still >= quiet_s:
                return n
        else:
            last, still = n, 0.0
        await asyncio.sleep(0.2)
    raise AssertionError("the outbox never settled")


@pytest.mark.parametrize("pulse_mode", ["coil", "flash"])
async def test_card_flood_writes_a_bounded_number_of_pulses(tmp_path: Path, pulse_mode: str) -> None:
    port = free_port()
    board = RelayBoardSim(device_ids=[1])
    server = asyncio.create_task(board.serve_tcp("127.0.0.1", port))
    reader = PtyPair(tmp_path, "card").start()
    cfg = gateway_config(
        tmp_path,
        signer=Signer(),
        bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": port, "timeout": 0.3},
        readers={"card-north": {"type": "serial", "port": str(reader.b), "content": "card"}},
        door={"pulse_ms": 1000, "pulse_mode": pulse_mode},
    )
    wl = tmp_path / "wl.json"
    wl.write_text(json.dumps([{"kind": "card", "value": CARD, "subject": "resident:1", "zones": ["north-gate"]}]))
    edge = [sys.executable, "-m", "edge.cli"]
    subprocess.run([*edge, "whitelist", "import", "-c", str(cfg), str(wl)], cwd=ROOT, check=True)
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [*edge, "run", "-c", str(cfg), "--log-format", "json", "--log-level", "warning"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    fd = os.open(reader.a, os.O_RDWR | os.O_NOCTTY)
    try:
        await asyncio.sleep(0.2)
        for _ in range(100):  # the reader is open once a first card is decided
            os.write(fd, CARD.encode() + b"\r")
            if await eventually(lambda: outbox_count(data) > 0, 0.3):
                break
        await settled(data, quiet_s=1.5)  # the first release is over
        board.writes.clear()

        def flood() -> None:  # blocking writes: the pty pushes back while the gateway keeps up
            chunk = (CARD + "\r").encode() * 500
            for _ in range(LINES // 500):
                os.write(fd, chunk)

        sender = threading.Thread(target=flood)
        sender.start()
        while sender.is_alive():
            await asyncio.sleep(0.05)
        await settled(data)
        grants = granted(data)
        assert grants >= 1000, f"only {grants} grants: the flood did not load the gateway"
        ons = [w for w in board.writes if w.address in (0, 0x0200) and w.value != 0]
        after = len(board.writes)
        await asyncio.sleep(1.5)  # the last release ends
        late_ons = [w for w in board.writes[after:] if w.value != 0]
        assert not late_ons, f"{len(late_ons)} pulses after the last decision"
        assert len(ons) * 20 < grants, f"{len(ons)} relay writes for {grants} grants: per-door work unbounded"
        assert not board.coil(1, 0), "the door stayed released after the flood"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        os.close(fd)
        reader.stop()
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
