"""Backlog drain: N events queued while offline, then drained to a loopback Mosquitto at QoS 1.

Reports events/s until every row is PUBACKed and deleted, when a persistent-session subscriber has
them all, disk per million events, and the decision-path latency (outbox.append + store.lookup,
measured on the link's event loop every 5 ms) while draining.

    .venv/bin/python bench/bench_drain.py [--events 1000000] [--inflight 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge.logs import setup_logging  # noqa: E402
from edge.outbox import Outbox  # noqa: E402
from edge.sim.cloud_client import CloudClient, Received  # noqa: E402
from tests.support.broker import Broker  # noqa: E402
from tests.support.cloud import GW, SITE, LinkHarness, access_event, make_config  # noqa: E402


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))] if xs else float("nan")


def disk_mb(d: Path) -> float:
    return sum(f.stat().st_size for f in d.glob("outbox.db*")) / 1e6


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--inflight", type=int, default=20)
    a = ap.parse_args()
    setup_logging("warning", "console")
    tmp = Path(tempfile.mkdtemp(prefix="bench-drain-"))
    data = tmp / "gw"
    data.mkdir()
    ob = Outbox(data / "outbox.db", max_events=max(3_000_000, a.events + 1))
    t0 = time.perf_counter()
    for i in range(a.events):
        ob.append(access_event(i))
    fill_s = time.perf_counter() - t0
    ob.close()
    mb = disk_mb(data)
    print(f"queued {a.events:,} events offline in {fill_s:.1f} s ({a.events / fill_s:,.0f}/s append)")
    print(f"disk: {mb:.1f} MB for {a.events:,} events = {mb * 1e6 / a.events:.0f} B/event, "
          f"{mb * 1e6 / a.events:.0f} MB per million")  # fmt: skip

    with Broker(tmp / "broker") as broker:
        got = 0
        done = threading.Event()
        lock = threading.Lock()

        def count(r: Received) -> None:
            nonlocal got
            if r.topic.endswith("/events"):
                n = r.payload.count(b'"id":')
                with lock:
                    got += n
                    if got >= a.events:
                        done.set()

        cloud = CloudClient("127.0.0.1", broker.port, SITE, GW, on_message=count).connect()
        cfg = make_config(data, broker.port, {}, inflight=a.inflight, keepalive_s=5)
        h = LinkHarness(cfg)
        lat: list[float] = []

        async def decisions() -> None:
            i = 0
            while True:
                t = time.perf_counter()
                h.outbox.append(access_event(10**9 + i))
                h.store.lookup("card", f"{i:08X}")
                lat.append((time.perf_counter() - t) * 1000)
                i += 1
                await asyncio.sleep(0.005)

        t0 = time.perf_counter()
        await h.start()
        probe = asyncio.create_task(decisions())
        while h.outbox.count() > len(lat) and time.perf_counter() - t0 < 600:
            await asyncio.sleep(0.05)
        acked_s = time.perf_counter() - t0
        probe.cancel()
        total = a.events + len(lat)
        await asyncio.to_thread(done.wait, 120)
        recv_s = time.perf_counter() - t0
        await h.stop()
        cloud.close()
    print(f"drained {total:,} events (PUBACKed, deleted) in {acked_s:.2f} s: {total / acked_s:,.0f} events/s "
          f"(inflight {a.inflight} messages of 500)")  # fmt: skip
    print(f"subscriber had {got:,} events after {recv_s:.2f} s")
    print(f"decision path (outbox.append + store.lookup) while draining: n={len(lat)} "
          f"p50 {pct(lat, 50):.3f} ms, p99 {pct(lat, 99):.3f} ms, max {max(lat):.3f} ms")  # fmt: skip
    os.system(f"rm -rf {tmp}")


if __name__ == "__main__":
    asyncio.run(main())
