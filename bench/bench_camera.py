"""Camera QR reader figures: decode rate per decoder on one core at 640x480, share of codes decoded on a
mild blur/perspective set, and a real `edge run` with a camera reader on an MJPEG stream over HTTP
(127.0.0.1) and a pymodbus relay board in this process: CPU and RSS of the gateway, and latency from
the first frame showing a code leaving the camera to the relay write reaching the board.

    .venv/bin/python bench/bench_camera.py [--frames 300] [--set 500] [--n 100] [--fps 10] [--cam-fps 25]

Latency is split with the gateway's own stamps: ``latency_ms`` of the event (frame captured -> event
committed) and the debug line ``actuated`` (t_act). A code that appears just after a decoded frame waits
for the next decode slot, so at ``fps`` the sampling alone adds up to 1/fps (100 ms at 10).
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

import cv2
import numpy as np
import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from drivers.camera_decode import make_decoder  # noqa: E402
from edge.sim.relay_board import RelayBoardSim  # noqa: E402
from edge.sim.video import MjpegServer, blank_frame, mild_look, qr_frame  # noqa: E402
from tests.support.gateway import Signer, free_port, gateway_config  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def fmt(name: str, xs: list[float]) -> str:
    return f"  {name:<34} p50 {pct(xs, 50):7.1f} ms   p99 {pct(xs, 99):7.1f} ms   max {max(xs):7.1f} ms"


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def rss_mb(pid: int) -> float:
    for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
        if ln.startswith("VmRSS"):
            return int(ln.split()[1]) / 1024
    return 0.0


def token_like(rng: np.random.Generator) -> str:
    """Random text the length and alphabet of a signed code (~290 base64url characters)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return "".join(alphabet[i] for i in rng.integers(0, 64, 290)) + "." + str(int(rng.integers(1 << 30)))


def decoders(a: argparse.Namespace) -> None:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    cv2.setNumThreads(1)
    rng = np.random.default_rng(7)
    texts = [token_like(rng) for _ in range(a.set)]
    mild = [cv2.cvtColor(qr_frame(t, mild_look(rng, i)), cv2.COLOR_BGR2GRAY) for i, t in enumerate(texts)]
    blank = cv2.cvtColor(blank_frame(noise=4), cv2.COLOR_BGR2GRAY)
    print(f"decoders at 640x480 on one core ({a.frames} frames each; mild set {a.set} codes):")
    for name in ("zxing", "zbar"):
        _, decode = make_decoder(name)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        for i in range(a.frames):
            decode(mild[i % len(mild)])
        code_fps = a.frames / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for _ in range(a.frames):
            decode(blank)
        blank_fps = a.frames / (time.perf_counter() - t0)
        hits = sum(1 for text, frame in zip(texts, mild, strict=True) if text in decode(frame))
        print(f"  {name:<5} {code_fps:6.0f} frames/s with a code, {blank_fps:6.0f} frames/s without; "
              f"mild set decoded {hits}/{len(texts)} = {100 * hits / len(texts):.1f}%")  # fmt: skip
    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))


async def gateway_run(a: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-camera-"))
    signer = Signer()
    port = free_port()
    board = RelayBoardSim(device_ids=[1])
    seen: list[float] = []
    board.on_write(lambda w: seen.append(time.perf_counter()) if w.address == 0x0200 else None)
    server_task = asyncio.create_task(board.serve_tcp("127.0.0.1", port))
    cam = MjpegServer(free_port(), fps=a.cam_fps, frame=blank_frame(noise=3)).start()
    cfg_path = gateway_config(
        tmp, signer=signer, bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": port},
        readers={"cam-north": {"type": "camera", "source": cam.url, "fps": a.fps, "decoder": a.decoder}},
        door={"pulse_ms": 100},
    )  # fmt: skip
    cmd = [sys.executable, "-m", "edge.cli", "run", "-c", str(cfg_path), "--log-format", "json",
           "--log-level", "debug"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    logs: list[dict[str, object]] = []

    def pump() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            try:
                logs.append(json.loads(raw))
            except json.JSONDecodeError:
                pass

    threading.Thread(target=pump, daemon=True).start()
    try:
        for _ in range(400):
            if any(ln.get("event") == "reader_online" for ln in logs):
                break
            await asyncio.sleep(0.05)
        else:
            raise SystemExit("camera reader never came online")
        await asyncio.sleep(2.0)
        print(f"edge run, camera on MJPEG {a.cam_fps:g} fps over HTTP, decoder {a.decoder}, fps {a.fps:g}:")
        for label, frame in (("no code in view", blank_frame(noise=3)),
                             ("a code in view", qr_frame(signer.code("cpu", sub="cpu"), mild_look(np.random.default_rng(1), 1)))):  # fmt: skip
            cam.show(frame)
            await asyncio.sleep(1.0)
            c0, t0 = cpu_s(proc.pid), time.perf_counter()
            await asyncio.sleep(a.cpu_s)
            share = (cpu_s(proc.pid) - c0) / (time.perf_counter() - t0) * 100
            print(f"  CPU of the gateway process, {label:<16} {share:5.1f}% of a core")
        cam.show(blank_frame(noise=3))
        await asyncio.sleep(1.0)
        rng = np.random.default_rng(3)
        totals: list[float] = []
        for i in range(a.n):
            frame = qr_frame(signer.code(f"lat-{i}", sub=f"visitor:{i}"), mild_look(rng, i))
            before = len(seen)
            version = cam.show(frame)
            deadline = time.perf_counter() + 2.0
            while len(seen) == before and time.perf_counter() < deadline:
                await asyncio.sleep(0.001)
            if len(seen) > before and version in cam.first_sent:
                totals.append((seen[before] - cam.first_sent[version]) * 1000)
            cam.show(blank_frame(noise=3))
            await asyncio.sleep(0.35 + float(rng.uniform(0, 0.1)))  # codes arrive at random phases
        await asyncio.sleep(1.0)
        rss = rss_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        cam.stop()
        server_task.cancel()
    con = sqlite3.connect(tmp / "data" / "outbox.db")
    bodies = [json.loads(r[0]) for r in con.execute("SELECT body FROM events ORDER BY seq")]
    con.close()
    capture = [
        float(b["latency_ms"])
        for b in bodies
        if b["result"] == "granted" and str(b["subject"]).startswith("visitor:")
    ]
    print(f"  codes shown {a.n}, relay writes {len(totals)}, grants in the outbox {len(capture)}")
    if totals:
        print(fmt("first frame sent -> relay write", totals))
    if capture:
        print(fmt("  frame captured -> event committed", capture))
    print(f"  RSS of edge run with the camera reader: {rss:.1f} MB")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=300, help="frames per decoder for the rate")
    ap.add_argument("--set", type=int, default=500, help="codes in the mild blur/perspective set")
    ap.add_argument("--n", type=int, default=100, help="codes shown to the running gateway")
    ap.add_argument("--fps", type=float, default=10, help="the reader's fps cap")
    ap.add_argument("--cam-fps", type=float, default=25, help="frame rate of the simulated IP camera")
    ap.add_argument("--cpu-s", type=float, default=8.0, help="seconds of each CPU measurement")
    ap.add_argument("--decoder", default="auto")
    ap.add_argument("--skip-decoders", action="store_true")
    a = ap.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))  # quiet board
    if not a.skip_decoders:
        decoders(a)
    asyncio.run(gateway_run(a))


if __name__ == "__main__":
    main()
