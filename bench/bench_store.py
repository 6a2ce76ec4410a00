"""Whitelist store benchmark: import, lookup latency, snapshot apply and lookups while it runs.

Run: .venv/bin/python bench/bench_store.py [--entries 1000000] [--part-size 5000] [--dir /tmp/x]
Snapshot parts are fed as JSON text (parsed per part, as the MQTT link would) in shuffled order.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.model import Entry, Window
from edge.store import WhitelistStore, entry_to_wire

WIN = (Window((1, 2, 3, 4, 5), 420, 1320),)


def make_entries(n: int, seed: int) -> list[Entry]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        if i % 10 == 9:
            value, kind = f"A{rnd.randrange(10**6):06d}{i % 97:02d}", "plate"
        else:
            value, kind = f"{rnd.getrandbits(56):014X}", "card"
        out.append(
            Entry(
                kind,
                value,
                f"resident:{i}",
                ("north-gate", "lobby-a"),  # type: ignore[arg-type]
                (i % 30 + 1,) if i % 3 == 0 else None,
                None,
                1_900_000_000 if i % 5 == 0 else None,
                WIN if i % 4 == 0 else None,
                i % 1000 == 0,
            )
        )
    return out


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def time_lookups(store: WhitelistStore, keys: list[tuple[str, str]]) -> list[float]:
    out = []
    for kind, value in keys:
        t0 = time.perf_counter_ns()
        store.lookup(kind, value)
        out.append((time.perf_counter_ns() - t0) / 1000)
    return out


async def snapshot_run(store: WhitelistStore, parts: list[str], keys: list[tuple[str, str]]) -> tuple:
    lat: list[float] = []
    done = asyncio.Event()

    async def reader() -> None:
        i = 0
        while not done.is_set():
            kind, value = keys[i % len(keys)]
            t0 = time.perf_counter_ns()
            store.lookup(kind, value)
            lat.append((time.perf_counter_ns() - t0) / 1000)
            i += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(reader())
    t0 = time.perf_counter()
    swapped = 0
    for text in parts:
        swapped += await store.add_snapshot_part(json.loads(text))
    elapsed = time.perf_counter() - t0
    done.set()
    await task
    return elapsed, swapped, lat


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--part-size", type=int, default=5000)
    ap.add_argument("--dir", type=Path, default=None)
    a = ap.parse_args()
    d = a.dir or Path(tempfile.mkdtemp(prefix="bench-store-"))
    db = d / "whitelist.db"
    for p in d.glob("whitelist.db*"):
        p.unlink()
    store = WhitelistStore(db)
    entries = make_entries(a.entries, 1)
    t0 = time.perf_counter()
    n = store.import_entries(entries, version=1)
    print(f"import {n} entries: {time.perf_counter() - t0:.2f} s")
    rnd = random.Random(2)
    keys = [(e.kind, e.value) for e in rnd.sample(entries, min(100_000, len(entries)))] + [("card", "DEADBEEF00")] * 1000
    rnd.shuffle(keys)
    time_lookups(store, keys[:10_000])  # warm
    lat = time_lookups(store, keys)
    print(
        f"lookup (idle) n={len(lat)}: p50 {statistics.median(lat):.1f} us, p99 {pct(lat, 0.99):.1f} us, "
        f"max {max(lat):.0f} us"
    )

    snap = make_entries(a.entries, 3)
    k = a.part_size
    chunks = [snap[i : i + k] for i in range(0, len(snap), k)]
    parts = [
        json.dumps(
            {
                "type": "snapshot",
                "id": "bench-2",
                "version": 2,
                "part": i + 1,
                "parts": len(chunks),
                "entries": [entry_to_wire(e) for e in c],
            }
        )
        for i, c in enumerate(chunks)
    ]
    rnd.shuffle(parts)
    del snap, chunks
    elapsed, swapped, lat2 = asyncio.run(snapshot_run(store, parts, keys))
    print(
        f"snapshot {a.entries} entries in {len(parts)} parts of {k}: {elapsed:.2f} s, swapped={swapped}, "
        f"version={store.version}, count={store.count()}"
    )
    print(
        f"lookup during snapshot n={len(lat2)}: p50 {statistics.median(lat2):.1f} us, "
        f"p99 {pct(lat2, 0.99):.1f} us, max {max(lat2):.0f} us"
    )
    store.close()
    size = sum(p.stat().st_size for p in d.glob("whitelist.db*"))
    print(f"disk: {size / 1e6:.0f} MB (both A/B tables full)")


if __name__ == "__main__":
    main()
