"""Plate camera latency: a Vzenith push leaving the camera -> relay write reaching the Modbus server,
and the HTTP answer time the camera sees (its own relay lifts on that answer).

Runs a real `edge run` (child process) with ``--entries`` plate whitelist entries and the `lpr` listener,
and a pymodbus relay board in this process. Pushes granted plates at ``--rate``/s, one TCP connection
per push as cameras do (``--keepalive`` reuses one), each with a ``--image-kb`` base64 picture. Both
clocks are CLOCK_MONOTONIC (perf_counter), so the write time seen by the board is comparable.

    .venv/bin/python bench/bench_lpr.py [--n 1000] [--entries 100000] [--rate 50] [--image-kb 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge.config import load_config  # noqa: E402
from edge.model import Entry  # noqa: E402
from edge.sim.relay_board import RelayBoardSim  # noqa: E402
from edge.store import WhitelistStore  # noqa: E402
from tests.support import lpr_pushes as push  # noqa: E402
from tests.support.gateway import Signer, free_port, gateway_config  # noqa: E402

SERIAL = "a1b2c3d4-e5f6a7b8"
PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"


def plate(i: int) -> str:
    return f"{PROVINCES[i % len(PROVINCES)]}A{i % 100000:05d}" if i < 3_100_000 else f"京AD{i:06d}"


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def fmt(name: str, xs: list[float]) -> str:
    return f"{name:<30} p50 {pct(xs, 50):7.3f} ms   p99 {pct(xs, 99):7.3f} ms   max {max(xs):7.3f} ms"


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000, help="pushes")
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--image-kb", type=int, default=200)
    ap.add_argument("--keepalive", action="store_true")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-lpr-"))
    board_port, http_port = free_port(), free_port()
    board = RelayBoardSim(device_ids=[1])
    seen: list[float] = []
    board.on_write(lambda w: seen.append(time.perf_counter()) if w.address == 0x0200 else None)
    server = asyncio.create_task(board.serve_tcp("127.0.0.1", board_port))
    cfg_path = gateway_config(
        tmp,
        signer=Signer(),
        bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": board_port},
        readers={"lpr-in": {"type": "lpr", "serialno": SERIAL, "min_confidence": 80}},
        door={"pulse_ms": 100},
        extra={"lpr": {"listen": f"127.0.0.1:{http_port}", "path": "/lpr/push"}},
    )
    cfg = load_config(cfg_path)
    cfg.gateway.data_dir.mkdir(parents=True)
    store = WhitelistStore(cfg.gateway.data_dir / "whitelist.db")
    store.import_entries(Entry("plate", plate(i), f"resident:{i}", ("north-gate",)) for i in range(a.entries))
    store.close()
    print(f"whitelist: {a.entries} plate entries; {a.n} pushes at {a.rate}/s, {a.image_kb} KiB pictures")
    cmd = [sys.executable, "-m", "edge.cli", "run", "-c", str(cfg_path), "--log-format", "json"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    bodies = [
        json.dumps(
            push.vzenith(SERIAL, plate((i * 7919) % a.entries), plateid=i + 1, image_bytes=a.image_kb * 1024),
            ensure_ascii=False,
        ).encode()
        for i in range(a.n)
    ]
    url = f"http://127.0.0.1:{http_port}/lpr/push"
    answer_ms: list[float] = []
    write_ms: list[float] = []
    missed = 0
    connector = aiohttp.TCPConnector(force_close=not a.keepalive)
    async with aiohttp.ClientSession(connector=connector) as http:
        for _ in range(400):  # the listener is up once it answers (a 403 for an unknown camera)
            try:
                async with http.post(url, data=b'{"AlarmInfoPlate": {}}') as r:
                    await r.read()
                break
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        for body in bodies:
            before = len(seen)
            t0 = time.perf_counter()
            async with http.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                answer = await r.json()
            t1 = time.perf_counter()
            assert answer["Response_AlarmInfoPlate"]["info"] == "ok", answer
            answer_ms.append((t1 - t0) * 1000)
            for _ in range(2000):
                if len(seen) > before:
                    break
                await asyncio.sleep(0.0005)
            if len(seen) > before:
                write_ms.append((seen[before] - t0) * 1000)
            else:
                missed += 1
            await asyncio.sleep(max(0.0, 1 / a.rate - (time.perf_counter() - t0)))
    proc.send_signal(signal.SIGTERM)
    proc.wait(20)
    server.cancel()
    await asyncio.gather(server, return_exceptions=True)
    print(fmt("push -> relay write", write_ms))
    print(fmt("push -> HTTP answer", answer_ms))
    print(f"writes missed: {missed}; target: push -> relay write p99 <= 10 ms")


if __name__ == "__main__":
    asyncio.run(main())
