"""RSS and idle CPU of `edge run` with the demo config (simulated hardware from `edge sim`).

.venv/bin/python bench/bench_idle.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def rss_mb(pid: int) -> float:
    for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
        if ln.startswith("VmRSS"):
            return int(ln.split()[1]) / 1024
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-idle-"))
    shutil.copytree(ROOT / "config", work / "config")
    cfg = work / "config" / "demo.yaml"
    edge = [sys.executable, "-m", "edge.cli"]
    sim = subprocess.Popen(
        [*edge, "sim", "-c", str(cfg), "--no-input"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    time.sleep(2)
    gw = subprocess.Popen(
        [*edge, "run", "-c", str(cfg), "--log-format", "json"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(5)  # start-up done
        c0, t0 = cpu_s(gw.pid), time.monotonic()
        time.sleep(a.seconds)
        c1, t1 = cpu_s(gw.pid), time.monotonic()
        print(
            f"edge run (demo config, simulated board polled every 0.2 s): RSS {rss_mb(gw.pid):.1f} MB, "
            f"idle CPU {(c1 - c0) / (t1 - t0) * 100:.2f}% of one core over {t1 - t0:.0f} s"
        )
    finally:
        gw.send_signal(signal.SIGTERM)
        gw.wait(20)
        sim.send_signal(signal.SIGINT)
        try:
            sim.wait(10)
        except subprocess.TimeoutExpired:
            sim.kill()


if __name__ == "__main__":
    main()
