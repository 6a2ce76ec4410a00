"""Proof under faults: a real `edge run` between a pty scanner, a RelayBoardSim door and a Mosquitto cloud.

Shared by scripts/proof_kill9.py and tests/test_kill9.py, so the test is the short run of the very
same measurement. Everything observed is external to the daemon: lines written to the pty, its JSON
log on stderr, the board's write log, what the cloud subscriber received, what is left in the outbox.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import os
import random
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from drivers.modbus_bus import COIL_ON
from edge.sim.cloud_client import CloudClient
from edge.sim.relay_board import FLASH_ON_BASE, RelayBoardSim
from tests.support.broker import Broker
from tests.support.daemon import Daemon
from tests.support.gateway import SITE, Signer, free_port, gateway_config
from tests.support.ptys import PtyPair

GW = "gw-test"
PREFIX = "k9-"


def outbox_bodies(data: Path) -> list[dict[str, object]]:
    """Events still on disk, oldest first (read with a plain sqlite3 connection, the daemon stopped)."""
    con = sqlite3.connect(data / "outbox.db")
    try:
        return [json.loads(b) for (b,) in con.execute("SELECT body FROM events ORDER BY seq")]
    finally:
        con.close()


@dataclass
class Rig:
    tmp: Path
    signer: Signer
    board: RelayBoardSim
    scanner: PtyPair
    broker: Broker
    cloud: CloudClient
    cfg: Path
    fd: int
    # time.time() - time.monotonic(): the board stamps writes with monotonic, events carry wall ms
    mono_to_wall: float = field(default_factory=lambda: time.time() - time.monotonic())
    perf_to_wall: float = field(default_factory=lambda: time.time() - time.perf_counter())  # cloud arrivals

    @property
    def data(self) -> Path:
        return self.tmp / "data"

    def cloud_events(self) -> list[dict[str, object]]:
        return list(self.cloud.events())


@contextlib.asynccontextmanager
async def open_rig(tmp: Path, *, pulse_ms: int = 100) -> AsyncIterator[Rig]:
    """Board (Modbus TCP, unit 1), pty scanner `qr-north`, Mosquitto, persistent cloud subscriber."""
    signer = Signer()
    port = free_port()
    board = RelayBoardSim(device_ids=[1])
    server = asyncio.create_task(board.serve_tcp("127.0.0.1", port))
    scanner = PtyPair(tmp, "qr").start()
    broker = Broker(tmp / "broker").start()
    cloud = CloudClient("127.0.0.1", broker.port, SITE, GW).connect()
    cfg = gateway_config(
        tmp,
        signer=signer,
        bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": port, "timeout": 0.3, "retries": 0},
        readers={"qr-north": {"type": "serial", "port": str(scanner.b), "content": "qr"}},
        door={"pulse_ms": pulse_ms},
        mqtt={"host": "127.0.0.1", "port": broker.port, "keepalive_s": 2, "reconnect_max_s": 1.0},
    )
    fd = os.open(scanner.a, os.O_RDWR | os.O_NOCTTY)
    try:
        yield Rig(tmp, signer, board, scanner, broker, cloud, cfg, fd)
    finally:
        os.close(fd)
        cloud.close()
        broker.stop()
        scanner.stop()
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)


class Presenter(threading.Thread):
    """Writes distinct signed codes (k9-000000, k9-000001, ...) to the scanner pty at ``rate`` per second,
    up to ``count``; minted as they go, or all before the start (``premint``, for exact pacing)."""

    def __init__(
        self, rig: Rig, rate: float, count: int, prefix: str = PREFIX, *, premint: bool = False
    ) -> None:
        super().__init__(daemon=True)
        self.fd, self.rate, self.count = rig.fd, rate, count
        self._mint = lambda i: rig.signer.code(f"{prefix}{i:06d}")
        self.codes = [self._mint(i) for i in range(count)] if premint else None
        self.written = 0
        self._halt = threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        for i in range(self.count):
            if self._halt.is_set():
                return
            code = self.codes[i] if self.codes is not None else self._mint(i)
            os.write(self.fd, code.encode() + b"\r")  # blocks when nobody reads for long: rate drops
            self.written += 1
            delay = t0 + (i + 1) / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


@dataclass
class Life:
    start: float  # wall seconds
    end: float
    lines: list[dict[str, object]]


@dataclass
class KillReport:
    kills: int
    written: int
    read: int  # distinct codes decided (log) or with an event
    decided_logged: int
    lost: list[str]  # decided or stored, yet never reached the cloud
    decided_twice: list[str]  # a code decided more than once (a re-read line: a repeated actuation)
    pulses: int
    grants: int
    extra_pulses: int  # pulses with no grant of their own before them, in the same life
    extra_at: list[tuple[int, float]]  # (life, s after spawn) of each extra pulse
    deliveries: int  # event ids as the cloud received them, duplicates included
    duplicate_ids: int  # ids the cloud received more than once
    duplicates: list[str]  # credentials of the events received more than once
    dup_same_life: int  # of those, received twice within one life of the daemon (no kill between)
    leftover: int  # rows still in the outbox at the end (should be 0: all drained)
    seconds: float
    early_kills: int = 0  # lives killed before their first decision (start-up)
    per_life: list[int] = field(default_factory=list)  # decisions logged in each life, the last unkilled

    def lines(self) -> list[str]:
        return [
            f"kills                         {self.kills}  ({self.early_kills} before the first decision)",
            f"presentations written         {self.written}",
            f"presentations read (decided)  {self.read}  (decision log lines: {self.decided_logged})",
            f"  decided per killed life       median {_median(self.per_life[:-1])}, max {max(self.per_life[:-1], default=0)};"
            f" the last (unkilled) life {self.per_life[-1] if self.per_life else 0}",
            f"events lost for those read    {len(self.lost)}  {self.lost[:5]}",
            f"codes decided twice           {len(self.decided_twice)}  {self.decided_twice[:5]}",
            f"relay pulses / grants         {self.pulses} / {self.grants}",
            f"actuations repeated (extra)   {self.extra_pulses}  {self.extra_at[:5]}",
            f"cloud deliveries              {self.deliveries}",
            f"duplicate event ids at cloud  {self.duplicate_ids}  {self.duplicates[:5]}",
            f"  of which without a kill between the copies: {self.dup_same_life}",
            f"outbox rows left at the end   {self.leftover}",
            f"run time                      {self.seconds:.0f} s",
        ]


def _median(xs: list[int]) -> int:
    return sorted(xs)[len(xs) // 2] if xs else 0


def _pulses(rig: Rig) -> list[float]:
    """Wall times of the door's relay-on writes: flash commands and plain coil-on writes."""
    out = []
    for w in list(rig.board.writes):
        if w.device_id == 1 and (w.address == FLASH_ON_BASE or (w.address == 0 and w.value == COIL_ON)):
            out.append(w.t + rig.mono_to_wall)
    return out


def extra_pulses(lives: list[Life], grants: list[float], pulses: list[float]) -> list[tuple[int, float]]:
    """Pulses that no grant accounts for: each grant (ts, wall s) pays for at most one pulse after it,
    in the same life of the daemon. A grant may have no pulse (coalesced while the lock is released, or
    killed before the write), never two. Returns (life index, seconds after its spawn) per extra pulse."""
    extra: list[tuple[int, float]] = []
    slack = 0.002  # event ts is in whole ms
    for k, life in enumerate(lives):
        gs = sorted(g for g in grants if life.start - slack <= g <= life.end + slack)
        ps = sorted(p for p in pulses if life.start <= p < life.end)
        free = 0  # grants seen before the current pulse and not yet matched
        gi = 0
        for p in ps:
            while gi < len(gs) and gs[gi] <= p + slack:
                free += 1
                gi += 1
            if free:
                free -= 1
            else:
                extra.append((k, round(p - life.start, 3)))
    return extra


async def kill_run(
    rig: Rig, *, kills: int, rate: float, max_life: float = 3.0, seed: int = 9, startup_share: float = 0.25
) -> KillReport:
    """``kills`` kill -9 of `edge run` while codes flow in. A share of the kills land at a random moment
    of start-up (before the daemon's first decision, timed on the previous life); the rest at a random
    moment 0..``max_life`` s after its first decision, so a loaded box still gets kills mid-stream."""
    rng = random.Random(seed)
    t_run = time.monotonic()
    pres = Presenter(rig, rate, 10_000_000)
    pres.start()
    lives: list[Life] = []
    ready_s = 1.0  # spawn -> first decision, as last seen
    for _ in range(kills):
        start = time.time()
        gw = Daemon(rig.cfg)
        if rng.random() < startup_share:
            await asyncio.sleep(rng.uniform(0.05, ready_s))
        else:
            with contextlib.suppress(AssertionError):  # died or never decided: killed all the same
                await gw.wait_for("decision", timeout=60)
                ready_s = time.time() - start
            await asyncio.sleep(rng.uniform(0.0, max_life))
        if gw.proc.poll() is None:
            gw.proc.send_signal(signal.SIGKILL)
        gw.finish()
        await asyncio.sleep(0.3)  # the board serves what was on the wire before the kill: still this life
        lives.append(Life(start, time.time(), gw.lines))
    # the last life: no kill; the gate still decides, then codes stop, it drains, then SIGTERM
    start = time.time()
    gw = Daemon(rig.cfg)
    try:
        await gw.wait_for("mqtt_connected", timeout=60)
        await gw.wait_for("decision", timeout=60)
        await asyncio.sleep(1.0)
        pres.stop()
        await _settle(rig, gw)
        gw.proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(gw.proc.wait, 30)  # the board answers on this loop: keep it running
    finally:
        gw.finish()
    lives.append(Life(start, time.time(), gw.lines))
    return _report(rig, lives, kills, pres.written, time.monotonic() - t_run)


async def _settle(rig: Rig, gw: Daemon, quiet_s: float = 2.0, within: float = 120.0) -> None:
    """Wait until decisions stop coming and the cloud has every event id the daemon logged as stored."""
    deadline = time.monotonic() + within
    last, still = -1, 0.0
    while time.monotonic() < deadline:
        n = len(gw.lines) + len(rig.cloud.on("events"))
        if n == last:
            still += 0.2
            if still >= quiet_s:
                return
        else:
            last, still = n, 0.0
        await asyncio.sleep(0.2)


def _report(rig: Rig, lives: list[Life], kills: int, written: int, seconds: float) -> KillReport:
    decided: Counter[str] = Counter()
    for life in lives:
        for ln in life.lines:
            cred = ln.get("credential")
            if ln.get("event") == "decision" and isinstance(cred, str) and cred.startswith(PREFIX):
                decided[cred] += 1
    received = rig.cloud_events()
    ids = Counter(str(e["id"]) for e in received)
    starts = [life.start for life in lives]
    arrivals: dict[str, set[int]] = {}
    for r in rig.cloud.on("events"):
        k = bisect.bisect_right(starts, r.t + rig.perf_to_wall) - 1
        for e in r.json()["events"]:
            if ids[str(e["id"])] > 1:
                arrivals.setdefault(str(e["id"]), set()).add(k)
    by_id = {str(e["id"]): e for e in received}
    stored = outbox_bodies(rig.data)
    events = list(by_id.values()) + [e for e in stored if str(e["id"]) not in by_id]
    ours = [e for e in events if str(e.get("credential", "")).startswith(PREFIX)]
    per_cred: Counter[str] = Counter(str(e["credential"]) for e in ours if e.get("result") == "granted")
    at_cloud = {str(e["credential"]) for e in by_id.values()}
    read = set(decided) | set(per_cred)
    grants = [int(e["ts"]) / 1000 for e in ours if e.get("result") == "granted"]  # type: ignore[call-overload]
    twice = sorted({c for c, n in decided.items() if n > 1} | {c for c, n in per_cred.items() if n > 1})
    pulses = _pulses(rig)
    extra = extra_pulses(lives, grants, pulses)
    return KillReport(
        kills=kills,
        written=written,
        read=len(read),
        decided_logged=len(decided),
        lost=sorted(read - at_cloud),
        decided_twice=twice,
        pulses=len(pulses),
        grants=len(grants),
        extra_pulses=len(extra),
        extra_at=extra,
        deliveries=sum(ids.values()),
        duplicate_ids=sum(1 for n in ids.values() if n > 1),
        dup_same_life=sum(1 for i, n in ids.items() if n > 1 and len(arrivals.get(i, ())) < n),
        duplicates=sorted(str(by_id[i].get("credential")) for i, n in ids.items() if n > 1),
        leftover=len(stored),
        seconds=seconds,
        per_life=[sum(1 for ln in life.lines if ln.get("event") == "decision") for life in lives],
        early_kills=sum(
            1 for life in lives[:-1] if not any(ln.get("event") == "decision" for ln in life.lines)
        ),
    )
