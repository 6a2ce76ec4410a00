"""Whitelist snapshot via MQTT: N entries in parts of 10,000, published by the cloud client, until the
gateway's store has swapped to the new version. Also the decision-path lookup p99 during the apply.

    .venv/bin/python bench/bench_snapshot.py [--entries 1000000] [--part-size 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge.cloud.sim_client import CloudClient  # noqa: E402
from edge.logs import setup_logging  # noqa: E402
from tests.support.broker import Broker  # noqa: E402
from tests.support.cloud import GW, SITE, LinkHarness, make_config  # noqa: E402


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))] if xs else float("nan")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--part-size", type=int, default=10_000)
    a = ap.parse_args()
    setup_logging("warning", "console")
    tmp = Path(tempfile.mkdtemp(prefix="bench-snap-"))
    entries = [
        {"kind": "card", "value": f"{i:08X}", "subject": f"resident:{i}", "zones": ["north-gate"]}
        for i in range(a.entries)
    ]
    with Broker(tmp / "broker") as broker:
        h = LinkHarness(make_config(tmp / "gw", broker.port, {}, keepalive_s=5))
        await h.start()
        cloud = CloudClient("127.0.0.1", broker.port, SITE, GW, persistent=False).connect()
        lat: list[float] = []

        async def lookups() -> None:
            i = 0
            while True:
                t = time.perf_counter()
                h.store.lookup("card", f"{i % 1000:08X}")
                lat.append((time.perf_counter() - t) * 1000)
                i += 1
                await asyncio.sleep(0.002)

        probe = asyncio.create_task(lookups())
        t0 = time.perf_counter()
        parts = await asyncio.to_thread(cloud.send_snapshot, entries, 1, a.part_size)
        sent_s = time.perf_counter() - t0
        while h.store.version != 1:
            await asyncio.sleep(0.01)
        total_s = time.perf_counter() - t0
        probe.cancel()
        count = h.store.count()
        cloud.close()
        await h.stop()
    print(f"snapshot of {a.entries:,} entries in {parts} parts: published in {sent_s:.2f} s, "
          f"applied (version swapped, {count:,} rows) {total_s:.2f} s after the first part")  # fmt: skip
    print(f"lookup on the loop meanwhile: n={len(lat)} p50 {pct(lat, 50):.3f} ms, p99 {pct(lat, 99):.3f} ms, "
          f"max {max(lat):.3f} ms")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
