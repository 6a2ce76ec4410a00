"""SIGHUP reload time of a real `edge run`: signal sent -> `config_reloaded` log line arriving.

Two doors on one simulated Modbus TCP board (units 1 and 2), each with a socat pty card reader. Each
trial edits the config file and sends SIGHUP; the kinds of change, in turn:
* reader: `card-south` moves to another pty (a USB adapter that came back under a new name);
* device: `south-gate`'s pulse_ms changes (the door is stopped to its safe state and built again);
* unchanged: the file is rewritten as it is (parse + plan only);
* refused: a broken file (the refusal is timed to its `config_reload_refused` line).
The wall time includes the signal delivery and the log line's trip through the pipe; the daemon's
own `duration_ms` field is printed beside it. A daemon without reload (it logs
`reload_not_supported`) ends the bench with exit status 2.

    .venv/bin/python bench/bench_reload.py [--trials 10] [--entries 0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_startup import Notify, Run, cached_whitelist, proc_status, quiet

from edge.sim.relay_board import RelayBoardSim
from tests.support.gateway import Signer, free_port, gateway_config
from tests.support.ptys import PtyPair

KINDS = ("reader", "device", "unchanged", "refused")


def edit(path: Path, kind: str, i: int, ptys: list[PtyPair]) -> None:
    if kind == "refused":
        path.write_text(path.read_text() + "\ndoors: [this is: not: valid\n")
        return
    cfg = yaml.safe_load(path.read_text())
    if kind == "reader":
        cfg["readers"]["card-south"]["port"] = str(ptys[1 + i % 2].b)
    elif kind == "device":
        cfg["doors"]["south-gate"]["pulse_ms"] = 200 + 100 * (i % 2)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


async def trial(run: Run, cfg: Path, kind: str, i: int, ptys: list[PtyPair], good: str) -> tuple[float, Any]:
    """One edit + SIGHUP; (wall seconds to the result line, the daemon's duration_ms or None)."""
    want = "config_reload_refused" if kind == "refused" else "config_reloaded"
    edit(cfg, kind, i, ptys)
    n0 = len(run.lines)
    t0 = time.monotonic()
    run.proc.send_signal(signal.SIGHUP)

    def result() -> tuple[float, dict[str, object]] | None:
        for t, ln in run.lines[n0:]:
            if ln.get("event") in ("config_reloaded", "config_reload_refused", "config_reload_failed",
                                   "reload_not_supported"):  # fmt: skip
                return t, ln
        return None

    await run.wait(lambda: result() is not None, 30)
    got = result()
    if kind == "refused":
        cfg.write_text(good)
    if got is None:
        raise RuntimeError(f"no reload result line within 30 s after SIGHUP ({kind})")
    t, ln = got
    if ln["event"] == "reload_not_supported":
        print(
            "reload: this edge run logs reload_not_supported: SIGHUP reload has not landed; nothing measured"
        )
        raise SystemExit(2)
    if ln["event"] != want:
        raise RuntimeError(f"{kind}: expected {want}, got {ln}")
    return t - t0, ln.get("duration_ms")


def line(kind: str, xs: list[float], ds: list[Any]) -> str:
    ms = [x * 1000 for x in xs]
    own = [float(d) for d in ds if d is not None]
    tail = f"; daemon duration_ms median {statistics.median(own):.1f}" if own else ""
    return (
        f"SIGHUP -> {'config_reload_refused' if kind == 'refused' else 'config_reloaded'}, {kind} change, "
        f"n={len(ms)}: median {statistics.median(ms):.1f} ms, max {max(ms):.1f} ms{tail}"
    )


async def main() -> None:
    quiet()
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=10, help="per kind of change")
    ap.add_argument("--entries", type=int, default=0, help="whitelist size (cached as in bench_startup)")
    a = ap.parse_args()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-reload-"))
    signer = Signer()
    port = free_port()
    board = RelayBoardSim(device_ids=[1, 2])
    server = asyncio.create_task(board.serve_tcp("127.0.0.1", port))
    await asyncio.sleep(0.3)
    ptys = [PtyPair(tmp, name).start() for name in ("north", "south", "south2")]
    cfg = gateway_config(
        tmp,
        signer=signer,
        bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": port, "timeout": 0.3, "retries": 0},
        readers={"card-north": {"type": "serial", "port": str(ptys[0].b), "content": "card"}},
    )
    c = yaml.safe_load(cfg.read_text())
    c["doors"]["south-gate"] = {**c["doors"]["north-gate"], "device_id": 2, "zone": "south-gate",
                                "readers": ["card-south"]}  # fmt: skip
    c["readers"]["card-south"] = {"type": "serial", "port": str(ptys[1].b), "content": "card"}
    cfg.write_text(yaml.safe_dump(c, sort_keys=False))
    (tmp / "data").mkdir()
    if a.entries:
        src, _ = cached_whitelist(a.entries)
        shutil.copyfile(src, tmp / "data" / "whitelist.db")
    notify = Notify(tmp / "notify.sock")
    run = Run(cfg, notify)
    try:
        await run.ready()
        await asyncio.sleep(1.5)  # readers open, devices polled
        rss0 = proc_status(run.proc.pid)["VmRSS"]
        results: dict[str, tuple[list[float], list[Any]]] = {k: ([], []) for k in KINDS}
        for i in range(a.trials):
            for kind in KINDS:
                good = cfg.read_text()
                wall, own = await trial(run, cfg, kind, i, ptys, good)
                results[kind][0].append(wall)
                results[kind][1].append(own)
                await asyncio.sleep(0.3)
        print(f"whitelist: {a.entries} entries; two doors, two pty card readers, one TCP board")
        for kind in KINDS:
            print(line(kind, *results[kind]))
        alive = run.proc.poll() is None
        rss1 = proc_status(run.proc.pid)["VmRSS"] if alive else float("nan")
        print(
            f"daemon after {a.trials * len(KINDS)} reloads: running {alive}, RSS {rss0:.1f} -> {rss1:.1f} MB"
        )
    finally:
        run.stop()
        notify.close()
        for p in ptys:
            p.stop()
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
