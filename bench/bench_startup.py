"""Start-up of `edge run` to READY=1 with a 1,000,000-entry whitelist, and the daemon's RSS.

The bench plays systemd's part: it binds the datagram socket named by $NOTIFY_SOCKET and times the
spawn of a real `edge run` (child process, JSON logs) to the arrival of READY=1, the moment the unit
counts as started. A pymodbus relay board runs in this process and a socat pty card reader feeds
the daemon, so READY means what it means at a gate (outputs forced safe, stores open, readers up).

The 1M-entry whitelist is built once with the store's own import and cached under var/bench/ keyed
by size; every run gets a fresh copy of it. "warm" runs find the file in the page cache; "cold" runs
evict the copy's pages first (posix_fadvise DONTNEED, no root needed), as after a reboot. The Python
code itself stays cached in both. An empty-whitelist series shows what the list itself costs.

    .venv/bin/python bench/bench_startup.py [--entries 1000000] [--runs 5] [--decisions 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge.model import Entry  # noqa: E402
from edge.sim.relay_board import RelayBoardSim  # noqa: E402
from edge.sim.systemd_notify import NotifySocket  # noqa: E402
from edge.store import WhitelistStore  # noqa: E402
from tests.support.gateway import Signer, free_port, gateway_config  # noqa: E402
from tests.support.ptys import PtyPair  # noqa: E402

CACHE = ROOT / "var" / "bench"
PHASES = [str(Path(__file__).resolve().parent / "startup_phases.py")]


def card(i: int) -> str:
    return f"{i:08X}"


def cached_whitelist(n: int) -> tuple[Path, float | None]:
    """var/bench/whitelist-<n>/whitelist.db, built once (returns its path and the build time, None
    when reused). Built in a temporary directory and renamed, so a killed build is never reused."""
    final = CACHE / f"whitelist-{n}"
    if (final / "whitelist.db").exists():
        return final / "whitelist.db", None
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".whitelist-{n}-", dir=CACHE))
    t0 = time.perf_counter()
    store = WhitelistStore(work / "whitelist.db")
    store.import_entries(
        (Entry("card", card(i), f"resident:{i}", ("north-gate",)) for i in range(n)), version=1
    )
    store.close()
    con_path = work / "whitelist.db"
    import sqlite3

    con = sqlite3.connect(con_path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # one self-contained file to copy
    con.close()
    for p in work.iterdir():
        if p.name != "whitelist.db":
            p.unlink()
    os.replace(work, final)
    return final / "whitelist.db", time.perf_counter() - t0


def evict(path: Path) -> None:
    """Drop ``path``'s pages from the page cache (written back first: only clean pages go)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of ``pid`` in MB."""
    out: dict[str, float] = {}
    for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = ln.split(":", 1)[0]
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(ln.split()[1]) / 1024
    return out


class Run:
    """One `edge run`: spawn time, READY time, its JSON log lines with their arrival times."""

    def __init__(self, cfg: Path, notify: NotifySocket, extra: list[str] | None = None) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "NOTIFY_SOCKET": notify.address}
        env["SPAWN_T0"] = str(time.monotonic())  # read by startup_phases.py
        env.pop("WATCHDOG_USEC", None)
        self.notify = notify
        self.lines: list[tuple[float, dict[str, object]]] = []
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, *(extra or []), "-m", "edge.cli", "run", "-c", str(cfg), "--log-format", "json"],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            env=env,
        )
        self._t = threading.Thread(target=self._pump, daemon=True)
        self._t.start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            try:
                self.lines.append((time.monotonic(), json.loads(raw)))
            except json.JSONDecodeError:
                self.lines.append((time.monotonic(), {"event": "raw", "text": raw.decode(errors="replace")}))

    def count(self, event: str) -> int:
        return sum(1 for _, ln in list(self.lines) if ln.get("event") == event)

    async def wait(self, pred: object, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if pred():  # type: ignore[operator]
                return True
            await asyncio.sleep(0.005)
        return bool(pred())  # type: ignore[operator]

    async def ready(self, timeout: float = 60.0) -> float:
        """Seconds from spawn to READY=1."""
        if not await self.wait(lambda: self.notify.ready_at is not None, timeout):
            tail = [ln for _, ln in self.lines[-8:]]
            raise RuntimeError(f"no READY=1 within {timeout} s (exit {self.proc.poll()}): {tail}")
        assert self.notify.ready_at is not None
        return self.notify.ready_at - self.t0

    def phases(self) -> dict[str, float]:
        """Seconds from spawn to the first log line of each event (the first occurrence)."""
        out: dict[str, float] = {}
        for t, ln in list(self.lines):
            out.setdefault(str(ln.get("event")), t - self.t0)
        return out

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(5)
        self._t.join(5)
        return rc


def summary(xs: list[float]) -> str:
    return f"median {statistics.median(xs):.3f} s, min {min(xs):.3f} s, max {max(xs):.3f} s"


async def series(
    label: str,
    src: Path | None,
    runs: int,
    cold: bool,
    tmp: Path,
    port: int,
    cards: PtyPair,
    signer: Signer,
    extra: list[str] | None = None,
    after_clean_stop: bool = False,
) -> tuple[list[float], Run]:
    """``runs`` start-ups, each on a fresh copy of ``src`` (None: an empty whitelist), so no start
    follows a clean stop of that data dir (as after a crash or power cut). ``after_clean_stop``: one
    data dir, started and stopped cleanly once untimed, then each timed start follows the previous
    run's clean stop (a planned restart). The last Run is returned still running, for RSS."""
    times: list[float] = []
    last: Run | None = None
    for i in range(runs + after_clean_stop):
        d = tmp / (label if after_clean_stop else f"{label}-{i}")
        cfg = d / "gateway.yaml"
        if not d.exists():
            d.mkdir()
            cfg = gateway_config(
                d,
                signer=signer,
                bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": port, "timeout": 0.3, "retries": 0},
                readers={"card-north": {"type": "serial", "port": str(cards.b), "content": "card"}},
            )
            (d / "data").mkdir()
            if src is not None:
                shutil.copyfile(src, d / "data" / "whitelist.db")
        if cold and src is not None:
            evict(d / "data" / "whitelist.db")
        (d / "notify.sock").unlink(missing_ok=True)
        notify = NotifySocket(str(d / "notify.sock"))
        run = Run(cfg, notify, extra)
        try:
            took = await run.ready()
        except BaseException:
            run.stop()
            notify.close()
            raise
        if not (after_clean_stop and i == 0):  # the priming start is not timed
            times.append(took)
        if i < runs - 1 + after_clean_stop:
            # a planned restart comes long after start: let any check deferred past READY finish first
            await asyncio.sleep(4.0 if after_clean_stop else 0.3)
            run.stop()
            notify.close()
            if not after_clean_stop:
                shutil.rmtree(d, ignore_errors=True)
        else:
            last = run
    assert last is not None
    return times, last


async def decide(run: Run, fd: int, n: int, entries: int) -> int:
    """``n`` card presentations (half in the list, half not); returns the decisions logged."""
    await run.wait(lambda: run.count("reader_status") + run.count("device_status") >= 1, 10)
    await asyncio.sleep(1.0)  # the reader opens its pty just after READY
    before = run.count("decision")
    for i in range(n):
        value = card((i * 7919) % max(entries, 1)) if i % 2 == 0 and entries else f"F{i:07X}0"
        os.write(fd, value.encode() + b"\r")
        await asyncio.sleep(0.05)
    await run.wait(lambda: run.count("decision") - before >= n, 10)
    return run.count("decision") - before


def quiet() -> None:
    """The board simulator's and pymodbus' own logging stays out of the bench's output."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    logging.getLogger().setLevel(logging.CRITICAL)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


async def main() -> None:
    quiet()
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--decisions", type=int, default=20)
    ap.add_argument("--no-cold", action="store_true", help="skip the cold-file series")
    ap.add_argument("--phases", action="store_true", help="also one warm and one cold start, phases timed")
    a = ap.parse_args()
    src, built = cached_whitelist(a.entries)
    how = "reused" if built is None else f"built in {built:.1f} s"
    print(f"whitelist: {a.entries} entries, {src.stat().st_size / 1e6:.0f} MB ({src.parent}, {how})")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    signer = Signer()
    port = free_port()
    board = RelayBoardSim(device_ids=[1])
    server = asyncio.create_task(board.serve_tcp("127.0.0.1", port))
    await asyncio.sleep(0.3)
    cards = PtyPair(tmp, "card").start()
    fd = os.open(cards.a, os.O_RDWR | os.O_NOCTTY)
    try:
        empty, run = await series("empty", None, a.runs, False, tmp, port, cards, signer)
        run.stop()
        print(f"start-up to READY=1, empty whitelist, {a.runs} runs: {summary(empty)}")
        if not a.no_cold:
            cold, run = await series("cold", src, a.runs, True, tmp, port, cards, signer)
            run.stop()
            print(f"start-up to READY=1, {a.entries} entries, cold file, {a.runs} runs: {summary(cold)}")
        if a.phases:
            for how in ("warm", "cold"):
                _, run = await series(
                    f"phases-{how}", src, 1, how == "cold", tmp, port, cards, signer, PHASES
                )
                run.stop()
                run.notify.close()
                marks = [
                    str(ln["text"]).strip()[6:]
                    for _, ln in run.lines
                    if str(ln.get("text", "")).startswith("PHASE")
                ]
                print(f"phases of one {how} start ({a.entries} entries), s since spawn:")
                print("\n".join(f"  {m}" for m in marks))
        clean, run = await series(
            "clean", src, a.runs, False, tmp, port, cards, signer, after_clean_stop=True
        )
        run.stop()
        run.notify.close()
        print(
            f"start-up to READY=1, {a.entries} entries, warm, after a clean stop, {a.runs} runs: {summary(clean)}"
        )
        warm, run = await series("warm", src, a.runs, False, tmp, port, cards, signer)
        print(
            f"start-up to READY=1, {a.entries} entries, warm, {a.runs} runs: {summary(warm)} (target <= 1 s)"
        )
        ph = run.phases()
        marks = ", ".join(f"{k} {v:.3f}" for k, v in list(ph.items())[:8])
        print(f"  last warm run, s from spawn to first log line of: {marks}")
        after_ready = proc_status(run.proc.pid)
        print(
            f"RSS after READY, {a.entries} entries: VmRSS {after_ready['VmRSS']:.1f} MB, "
            f"VmHWM {after_ready['VmHWM']:.1f} MB"
        )
        n = await decide(run, fd, a.decisions, a.entries)
        after = proc_status(run.proc.pid)
        print(
            f"RSS after {a.decisions} presentations ({n} decisions logged), {a.entries} entries: VmRSS {after['VmRSS']:.1f} MB, "
            f"VmHWM {after['VmHWM']:.1f} MB"
        )
        rc = run.stop()
        run.notify.close()
        if rc != 0:
            print(f"warning: edge run exited {rc}")
    finally:
        os.close(fd)
        cards.stop()
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
