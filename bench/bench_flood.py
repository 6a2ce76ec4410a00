"""A flood of valid card lines at a real `edge run` (issue 6.5): RSS, relay writes, pulses after the end.

A pymodbus TCP board (this process) records every write; a socat pty plays the card reader; the card is
on the whitelist, so every line is a grant. Prints RSS before/after, grants, relay on-writes, and the
last on-write relative to the end of the flood.

.venv/bin/python bench/bench_flood.py [--rate 10000] [--seconds 10] [--pulse-mode coil|flash]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge.sim.relay_board import RelayBoardSim  # noqa: E402
from tests.support.gateway import Signer, free_port, gateway_config  # noqa: E402
from tests.support.ptys import PtyPair  # noqa: E402

CARD = "04A1B2C3"


def rss_mb(pid: int) -> float:
    for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
        if ln.startswith("VmRSS"):
            return int(ln.split()[1]) / 1024
    return 0.0


def granted(data: Path) -> int:
    con = sqlite3.connect(data / "outbox.db")
    try:
        return sum(json.loads(b)["result"] == "granted" for (b,) in con.execute("SELECT body FROM events"))
    finally:
        con.close()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=10_000, help="card lines per second offered")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--pulse-mode", choices=["coil", "flash"], default="flash")
    a = ap.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    work = Path(tempfile.mkdtemp(prefix="bench-flood-"))
    port = free_port()
    board = RelayBoardSim(device_ids=[1])
    server = asyncio.create_task(board.serve_tcp("127.0.0.1", port))
    reader = PtyPair(work, "card").start()
    cfg = gateway_config(
        work,
        signer=Signer(),
        bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": port, "timeout": 0.3},
        readers={"card-north": {"type": "serial", "port": str(reader.b), "content": "card"}},
        door={"pulse_ms": 3000, "pulse_mode": a.pulse_mode},
        extra={"outbox": {"max_events": 3_000_000}},
    )
    wl = work / "wl.json"
    wl.write_text(json.dumps([{"kind": "card", "value": CARD, "subject": "resident:1", "zones": ["north-gate"]}]))
    edge = [sys.executable, "-m", "edge.cli"]
    subprocess.run([*edge, "whitelist", "import", "-c", str(cfg), str(wl)], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    gw = subprocess.Popen([*edge, "run", "-c", str(cfg), "--log-format", "json"], cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    fd = os.open(reader.a, os.O_RDWR | os.O_NOCTTY)
    try:
        await asyncio.sleep(4)
        rss0 = rss_mb(gw.pid)
        board.writes.clear()
        line = (CARD + "\r").encode()
        per_tick = max(1, a.rate // 100)
        sent = 0

        def flood() -> None:
            nonlocal sent
            t0 = time.monotonic()
            for i in range(int(a.seconds * 100)):
                os.write(fd, line * per_tick)
                sent += per_tick
                delay = t0 + (i + 1) / 100 - time.monotonic()
                if delay > 0:
                    time.sleep(delay)

        th = threading.Thread(target=flood)
        th.start()
        peak = rss0
        while th.is_alive():
            peak = max(peak, rss_mb(gw.pid))
            await asyncio.sleep(0.1)
        t_end = time.monotonic()
        rss_end = rss_mb(gw.pid)
        await asyncio.sleep(6)  # decisions still queued in the pty, then the last release runs out
        ons = [w for w in board.writes if w.value != 0]
        last_on = max((w.t for w in ons), default=t_end) - t_end
        print(f"offered {sent} card lines at {a.rate}/s for {a.seconds:.0f} s ({a.pulse_mode} mode)")
        print(f"grants decided: {granted(work / 'data')}; relay on-writes: {len(ons)}")
        print(f"last on-write {last_on:+.2f} s after the flood ended")
        print(f"RSS: before {rss0:.1f} MB, peak {peak:.1f} MB, at end {rss_end:.1f} MB, "
              f"6 s later {rss_mb(gw.pid):.1f} MB")  # fmt: skip
    finally:
        gw.send_signal(signal.SIGTERM)
        gw.wait(20)
        os.close(fd)
        reader.stop()
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main())
