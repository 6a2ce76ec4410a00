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

from edge.logs import setup_logging  # noqa: E402
from edge.sim.cloud_client import CloudClient  # noqa: E402
from tests.support.broker import Broker  # noqa: E402
from tests.support.cloud import GW, SITE, LinkHarness, make_config  # noqa: E402


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))] if xs else float("nan")


def make_entries(n: int) -> list[dict[str, object]]:
    return [
        {"kind": "card", "value": f"{i:08X}", "subject": f"resident:{i}", "zones": ["north-gate"]}
        for i in range(n)
    ]


def publisher(port: int, n: int, part_size: int) -> None:
    """Child process: the cloud publishing snapshot version 1."""
    with CloudClient("127.0.0.1", port, SITE, GW, persistent=False) as c:
        c.send_snapshot(make_entries(n), 1, part_size)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--part-size", type=int, default=10_000)
    ap.add_argument("--in-process", action="store_true", help="publish from a thread of this process")
    ap.add_argument(
        "--queued",
        action="store_true",
        help="publish while the gateway is offline (its persistent session queues the parts), then time "
        "the gateway alone from reconnect to swap: the apply cost without the publisher sharing the CPU",
    )
    a = ap.parse_args()
    setup_logging("warning", "console")
    tmp = Path(tempfile.mkdtemp(prefix="bench-snap-"))
    entries = make_entries(a.entries) if a.in_process else []
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

        if a.queued:
            await h.stop()  # the broker keeps the session and queues what the cloud publishes meanwhile
            proc = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--publisher", str(broker.port), str(a.entries), str(a.part_size)
            )
            await proc.wait()
            h = LinkHarness(make_config(tmp / "gw", broker.port, {}, keepalive_s=5))
        probe = asyncio.create_task(lookups())
        t0 = time.perf_counter()
        if a.queued:
            await h.start()
            parts = -(-a.entries // a.part_size)
        elif a.in_process:
            parts = await asyncio.to_thread(cloud.send_snapshot, entries, 1, a.part_size)
        else:  # the cloud in its own process, so its JSON encoding does not compete for our GIL
            proc = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--publisher", str(broker.port), str(a.entries), str(a.part_size)
            )
            await proc.wait()
            parts = -(-a.entries // a.part_size)
        sent_s = time.perf_counter() - t0
        while h.store.version != 1:
            await asyncio.sleep(0.01)
        total_s = time.perf_counter() - t0
        probe.cancel()
        count = h.store.count()
        cloud.close()
        await h.stop()
    if a.queued:
        print(f"snapshot of {a.entries:,} entries in {parts} parts queued at the broker while offline: "
              f"applied (version swapped, {count:,} rows) {total_s:.2f} s after reconnecting")  # fmt: skip
    else:
        print(f"snapshot of {a.entries:,} entries in {parts} parts: published in {sent_s:.2f} s, "
              f"applied (version swapped, {count:,} rows) {total_s:.2f} s after the first part")  # fmt: skip
    print(f"lookup on the loop meanwhile: n={len(lat)} p50 {pct(lat, 50):.3f} ms, p99 {pct(lat, 99):.3f} ms, "
          f"max {max(lat):.3f} ms")  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--publisher":
        publisher(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    else:
        asyncio.run(main())
