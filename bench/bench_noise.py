"""Noise flood (issue 6): a real `edge run` whose QR scanner pty gets ~10k garbage lines/s for some seconds,
with real codes mixed into the same stream; a pymodbus relay board in this process drives the door.

Prints the real events kept out of those sent, outbox rows and log lines added per noise line, whether
every noise line is accounted for (an individual event or a count in a summary), and the daemon's RSS
before and after the flood. The outbox is read from disk after a SIGTERM (which flushes the summaries).

    .venv/bin/python bench/bench_noise.py [--seconds 10] [--rate 10000] [--grants 2] [--max-events 1000]
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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import structlog  # noqa: E402

from edge.sim.relay_board import RelayBoardSim  # noqa: E402
from tests.support.gateway import Signer, free_port, gateway_config  # noqa: E402
from tests.support.ptys import PtyPair  # noqa: E402

NOISE = b"\x00\x01\xff\xfe line noise\r"  # control bytes: rejected by the reader


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    """utime + stime of a process, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rows(db: Path) -> list[dict[str, object]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [json.loads(b) for (b,) in con.execute("SELECT body FROM events ORDER BY seq")]
    finally:
        con.close()


def last_seq(db: Path) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(con.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])
    finally:
        con.close()


def flood(fd: int, codes: list[bytes], seconds: float, rate: float) -> tuple[int, float]:
    """Paced writes every 10 ms; the codes spread evenly over the run. Returns (noise lines, seconds)."""
    t0, sent, nxt = time.monotonic(), 0, 0
    while (el := time.monotonic() - t0) < seconds:
        due = int(el * rate) - sent
        data = NOISE * due
        if nxt < len(codes) and el >= nxt * seconds / len(codes):
            data += codes[nxt] + b"\r"
            nxt += 1
        view = memoryview(data)
        while view:  # blocks when the daemon falls behind: the rate reached is then reported
            view = view[os.write(fd, view[:65536]) :]
        sent += due
        time.sleep(0.01)
    for code in codes[nxt:]:
        os.write(fd, code + b"\r")
    return sent, time.monotonic() - t0


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=10_000.0, help="noise lines per second")
    ap.add_argument("--grants", type=float, default=2.0, help="real codes per second, mixed in")
    ap.add_argument("--max-events", type=int, default=1000, help="outbox.max_events (config minimum 1000)")
    a = ap.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))  # quiet board
    tmp = Path(tempfile.mkdtemp(prefix="bench-noise-"))
    signer = Signer()
    port = free_port()
    board = RelayBoardSim(device_ids=[1])
    server = asyncio.create_task(board.serve_tcp("127.0.0.1", port))
    qr = PtyPair(tmp, "qr").start()
    cfg = gateway_config(
        tmp,
        signer=signer,
        bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": port},
        readers={"qr-north": {"type": "serial", "port": str(qr.b), "content": "qr"}},
        door={"pulse_ms": 100},
        extra={"outbox": {"max_events": a.max_events}},
    )
    log_path = tmp / "edge.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "run", "-c", str(cfg), "--log-format", "json"],
            cwd=ROOT,
            stderr=log_file,
            stdout=subprocess.DEVNULL,
        )
    fd = os.open(qr.a, os.O_RDWR | os.O_NOCTTY)
    try:
        for _ in range(400):
            if b'"reader_online"' in log_path.read_bytes():
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        db = tmp / "data" / "outbox.db"
        seq0 = last_seq(db)
        rss0, logs0, cpu0 = rss_mb(proc.pid), len(log_path.read_bytes().splitlines()), cpu_s(proc.pid)
        jtis = [f"real-{i:05d}" for i in range(int(a.seconds * a.grants))]
        codes = [signer.code(j).encode() for j in jtis]
        sent, took = await asyncio.to_thread(flood, fd, codes, a.seconds, a.rate)
        t_end = time.monotonic() + 120
        while time.monotonic() < t_end:  # the last code is on disk: every line before it was handled
            if any(r["credential"] == jtis[-1] for r in rows(db)):
                break
            await asyncio.sleep(0.2)
        rss1, logs1, cpu1 = rss_mb(proc.pid), len(log_path.read_bytes().splitlines()), cpu_s(proc.pid)
        appended = last_seq(db) - seq0  # rows written during the flood, evicted or not
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    finally:
        os.close(fd)
        if proc.poll() is None:
            proc.kill()
        qr.stop()
        server.cancel()
    out = rows(db)
    want = set(jtis)
    kept = sum(1 for r in out if r["result"] == "granted" and r["credential"] in want)
    noise = [r for r in out if r["reader"] == "qr-north" and r["result"] in ("denied", "info")]
    counted = sum(1 for r in noise if r["result"] == "denied") + sum(
        int(str(r["credential"])) for r in noise if r["result"] == "info"
    )
    rate = sent / took
    print(f"noise: {sent} lines in {took:.1f} s = {rate:.0f} lines/s on one pty; {len(jtis)} codes mixed in")
    print(f"real events kept: {kept} / {len(jtis)} granted codes in the outbox (max_events {a.max_events})")
    per_line = (appended - len(jtis)) / sent
    print(
        f"outbox: {appended} rows appended during the flood = {per_line:.5f} per noise line; at that rate "
        f"noise alone fills the default 3M bound in {3e6 / max(per_line * sent / took, 1e-9) / 60:.0f} min; "
        f"{len(out)} rows on disk after the stop, {len(noise)} of them from noise"
    )
    print(f"noise lines accounted for (individual events + summary counts on disk): {counted} / {sent}")
    print(f"log lines during the flood: {logs1 - logs0} = {(logs1 - logs0) / sent:.4f} per noise line")
    cpu = cpu1 - cpu0
    print(f"daemon CPU during the flood: {cpu:.1f} s in {took:.1f} s = {cpu / took:.0%} of a core")
    print(f"daemon RSS: {rss0:.1f} MB before, {rss1:.1f} MB after the flood")


if __name__ == "__main__":
    asyncio.run(main())
