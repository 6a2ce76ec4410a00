"""End-to-end latency: last byte of a scanner line -> relay write reaching the Modbus server.

Runs a real `edge run` (child process) with 1,000,000 whitelist entries, a socat pty scanner and card
reader, and a pymodbus relay board in this process. Presents codes and card numbers at 50/s and
splits each latency into pty time, gateway software time and Modbus wire time from the gateway's
debug log (t_in: terminator read; t_act: actuation task starts; clocks are CLOCK_MONOTONIC in both).

    .venv/bin/python bench/bench_e2e.py [--n 1000] [--entries 1000000] [--rate 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge.config import load_config  # noqa: E402
from edge.model import Entry  # noqa: E402
from edge.sim.relay_board import RelayBoardSim  # noqa: E402
from edge.store import WhitelistStore  # noqa: E402
from tests.support.gateway import Signer, free_port, gateway_config  # noqa: E402
from tests.support.ptys import PtyPair  # noqa: E402


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def fmt(name: str, xs: list[float]) -> str:
    return f"{name:<28} p50 {pct(xs, 50):7.3f} ms   p99 {pct(xs, 99):7.3f} ms   max {max(xs):7.3f} ms"


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000, help="presentations")
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--rate", type=float, default=50.0)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    signer = Signer()
    port = free_port()
    board = RelayBoardSim(device_ids=[1])
    seen: list[float] = []
    board.on_write(lambda w: seen.append(time.perf_counter()) if w.address == 0x0200 else None)
    server = asyncio.create_task(board.serve_tcp("127.0.0.1", port))
    qr, card = PtyPair(tmp, "qr").start(), PtyPair(tmp, "card").start()
    cfg_path = gateway_config(
        tmp,
        signer=signer,
        bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": port},
        readers={
            "qr-north": {"type": "serial", "port": str(qr.b), "content": "qr"},
            "card-north": {"type": "serial", "port": str(card.b), "content": "card"},
        },
        door={"pulse_ms": 100},
    )
    cfg = load_config(cfg_path)
    cfg.gateway.data_dir.mkdir(parents=True)
    t0 = time.perf_counter()
    store = WhitelistStore(cfg.gateway.data_dir / "whitelist.db")
    store.import_entries(
        Entry("card", f"{i:08X}", f"resident:{i}", ("north-gate",)) for i in range(a.entries)
    )
    store.close()
    print(f"whitelist: {a.entries} entries imported in {time.perf_counter() - t0:.1f} s")

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge.cli",
            "run",
            "-c",
            str(cfg_path),
            "--log-format",
            "json",
            "--log-level",
            "debug",
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    logs: list[dict[str, object]] = []

    def pump() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            try:
                logs.append(json.loads(raw))
            except json.JSONDecodeError:
                pass

    threading.Thread(target=pump, daemon=True).start()
    fds = {"qr": os.open(qr.a, os.O_RDWR | os.O_NOCTTY), "card": os.open(card.a, os.O_RDWR | os.O_NOCTTY)}
    for _ in range(400):
        if sum(1 for ln in logs if ln.get("event") == "device_status" and ln.get("online")) >= 2:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)
    lines = []
    for i in range(a.n):
        if i % 2:
            lines.append(("card", f"{(i * 7919) % a.entries:08X}".encode(), f"card-{i}"))
        else:
            lines.append(("qr", signer.code(f"b-{i:06d}").encode(), f"b-{i:06d}"))
    writes: list[float] = []
    for kind, data, _ in lines:
        seen_before = len(seen)
        os.write(fds[kind], data + b"\r")
        t_w = time.perf_counter()
        writes.append(t_w)
        for _ in range(2000):
            if len(seen) > seen_before:
                break
            await asyncio.sleep(0.0005)
        await asyncio.sleep(max(0.0, 1 / a.rate - (time.perf_counter() - t_w)))
    await asyncio.sleep(1.0)
    rss_kb = int(
        next(
            ln.split()[1]
            for ln in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
            if ln.startswith("VmRSS")
        )
    )
    proc.send_signal(signal.SIGTERM)
    proc.wait(20)
    acts = [ln for ln in logs if ln.get("event") == "actuated"]
    n = min(len(writes), len(seen), len(acts))
    total = [(seen[i] - writes[i]) * 1000 for i in range(n)]
    pty = [(float(acts[i]["t_in"]) - writes[i]) * 1000 for i in range(n)]
    soft = [(float(acts[i]["t_act"]) - float(acts[i]["t_in"])) * 1000 for i in range(n)]
    wire = [(seen[i] - float(acts[i]["t_act"])) * 1000 for i in range(n)]
    print(f"presentations {a.n} at {a.rate}/s, relay writes seen {len(seen)}, actuations logged {len(acts)}")
    print(fmt("total (last byte -> server)", total))
    print(fmt("  pty (byte -> reader)", pty))
    print(fmt("  gateway software", soft))
    print(fmt("  modbus tcp client+wire", wire))
    share = statistics.median(pty) / statistics.median(total) * 100
    print(f"pty share of the median: {share:.0f}%;  gateway RSS after run: {rss_kb / 1024:.1f} MB")
    for fd in fds.values():
        os.close(fd)
    qr.stop()
    card.stop()
    server.cancel()


if __name__ == "__main__":
    asyncio.run(main())
