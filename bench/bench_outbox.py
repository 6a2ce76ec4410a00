"""Outbox benchmark: append latency, peek+delete drain rate, disk bytes per million events.

Run: .venv/bin/python bench/bench_outbox.py [--events 1000000] [--dir /tmp/x]
Events look like real ones (ULID id, 14-hex card tail, subject, reason); the flusher runs during appends.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.outbox import Outbox


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def event(i: int) -> object:
    return Outbox.make_event(
        "north-gate",
        "nfc",
        f"****{i % 65536:04X}",
        "granted",
        "ok",
        reader="nfc-north",
        subject=f"resident:{i % 5000}",
        latency_ms=12.3,
    )


async def appends(ob: Outbox, n: int) -> list[float]:
    flusher = asyncio.create_task(ob.run_flusher())
    lat = []
    for i in range(n):
        ev = event(i)
        t0 = time.perf_counter_ns()
        ob.append(ev)
        lat.append((time.perf_counter_ns() - t0) / 1000)
        if i % 1000 == 0:
            await asyncio.sleep(0)  # let the flusher run, as the real loop would
    flusher.cancel()
    return lat


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--dir", type=Path, default=None)
    a = ap.parse_args()
    d = a.dir or Path(tempfile.mkdtemp(prefix="bench-outbox-"))
    for p in d.glob("outbox.db*"):
        p.unlink()
    ob = Outbox(d / "outbox.db", max_events=a.events + 10, flush_interval_s=1.0)
    t0 = time.perf_counter()
    lat = asyncio.run(appends(ob, a.events))
    el = time.perf_counter() - t0
    print(
        f"append n={len(lat)}: p50 {statistics.median(lat):.1f} us, p99 {pct(lat, 0.99):.1f} us, "
        f"p99.9 {pct(lat, 0.999):.0f} us, max {max(lat):.0f} us ({len(lat) / el:.0f}/s incl. event build)"
    )
    wal_peak = (d / "outbox.db-wal").stat().st_size
    ob.checkpoint()
    size = (d / "outbox.db").stat().st_size
    print(f"WAL at the end of the burst: {wal_peak / 1e6:.1f} MB (bounded by the flusher's checkpoints)")
    body = len(ob.peek(0, 1)[0][1])
    print(
        f"database file: {size / 1e6:.1f} MB for {a.events} events = {size / a.events:.0f} B/event "
        f"({size / a.events * 1e6 / 1e9:.2f} GB per million; 3M -> {size / a.events * 3e6 / 1e9:.2f} GB); "
        f"event JSON {body} B"
    )
    t0, after, n = time.perf_counter(), 0, 0
    while rows := ob.peek(after, 500):
        ob.delete((rows[0][0], rows[-1][0]))
        after, n = rows[-1][0], n + len(rows)
    el = time.perf_counter() - t0
    print(f"peek+delete batches of 500: {n} rows in {el:.2f} s = {n / el:.0f} rows/s; count={ob.count()}")
    ob.close()


if __name__ == "__main__":
    main()
