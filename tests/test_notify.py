"""sd_notify with a real `edge run`: the test owns NOTIFY_SOCKET (a datagram socket it binds) and plays
systemd's part; a real relay board and a pty card reader make the gateway a real one.

The wedged store: the test takes, from its own process, every WAL read lock of the whitelist's -shm
file (the fcntl byte locks SQLite itself uses, offsets 123..127). A lookup on the daemon's read
connection then waits inside SQLite, on the loop thread, exactly as it would on a stalled SD card or a
lock held by a hung process; nothing in the product is there for the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from edge.notify import Notifier, watchdog_period
from edge.sim.relay_board import RelayBoardSim
from edge.sim.systemd_notify import notify_socket
from tests.support.daemon import Daemon
from tests.support.gateway import Signer, gateway_config
from tests.support.modbus import eventually, free_port, tcp_board
from tests.support.ptys import PtyPair

SHM_READ_LOCKS = (123, 5)  # SQLite's WAL_READ_LOCK(0..4): offset 120 + 3, five bytes


@contextlib.asynccontextmanager
async def gate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **env: str
) -> AsyncIterator[tuple[Daemon, RelayBoardSim, Path]]:
    """A real daemon on a simulated TCP board with a pty card reader, started with ``env``."""
    board = RelayBoardSim(device_ids=[1])
    port = free_port()
    async with tcp_board(board, port):
        with PtyPair(tmp_path, "card") as cards:
            cfg = gateway_config(
                tmp_path,
                signer=Signer(),
                bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": port, "timeout": 0.3, "retries": 0},
                readers={"card-north": {"type": "serial", "port": str(cards.b), "content": "card"}},
            )
            for k, v in env.items():
                monkeypatch.setenv(k, v)
            daemon = Daemon(cfg)
            try:
                yield daemon, board, tmp_path / "data"
            finally:
                daemon.finish()


@contextlib.contextmanager
def wedged_store(data_dir: Path) -> Iterator[None]:
    """Hold every WAL read lock of whitelist.db: the daemon's lookups wait inside SQLite."""
    fd = os.open(data_dir / "whitelist.db-shm", os.O_RDWR)
    try:
        deadline = time.monotonic() + 5
        while True:  # a read in progress holds one of them for microseconds
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, SHM_READ_LOCKS[1], SHM_READ_LOCKS[0])
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.001)
        yield
    finally:
        os.close(fd)  # drops the locks


async def test_ready_after_safe_outputs_status_and_stopping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with notify_socket(str(tmp_path / "notify.sock")) as ns:
        monkeypatch.delenv("WATCHDOG_USEC", raising=False)
        async with gate(tmp_path, monkeypatch, NOTIFY_SOCKET=ns.address) as (daemon, board, _):
            assert await eventually(lambda: bool(ns.times("READY", "1")), timeout=20), ns.messages
            # The lock coil was forced off before READY=1 went out (the board saw the write first).
            ready_at = ns.times("READY", "1")[0]
            assert any(w.t <= ready_at and not w.on for w in board.writes), board.writes
            # STATUS at READY: a line a person reads in `systemctl status`.
            ready_msg = next(f for t, f in ns.messages if f.get("READY") == "1")
            assert ready_msg["STATUS"].endswith("whitelist v0, outbox 0"), ready_msg
            assert "devices online" in ready_msg["STATUS"]
            # Readers come up after the start: the line follows, without a watchdog too.
            assert await eventually(lambda: ns.statuses()[-1].startswith("2/2 devices online"), timeout=15), (
                ns.statuses()
            )
            assert not ns.times("WATCHDOG")  # none asked for
            daemon.proc.send_signal(signal.SIGTERM)
            assert daemon.proc.wait(15) == 0
            assert ns.times("STOPPING", "1"), ns.messages
            assert ns.statuses()[-1] == "stopping: stop requested"


async def test_watchdog_stops_while_the_store_is_wedged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with notify_socket(str(tmp_path / "notify.sock")) as ns:
        env = {"NOTIFY_SOCKET": ns.address, "WATCHDOG_USEC": "2000000"}  # a ping every second
        async with gate(tmp_path, monkeypatch, **env) as (daemon, _, data_dir):
            assert await eventually(lambda: len(ns.times("WATCHDOG", "1")) >= 3, timeout=20), ns.messages
            with wedged_store(data_dir):
                t_wedged = time.monotonic()
                await asyncio.sleep(6)
                t_freed = time.monotonic()
                assert daemon.proc.poll() is None  # alive: only its own check holds the pings back
            late = [t for t in ns.times("WATCHDOG", "1") if t_wedged + 1.5 < t <= t_freed]
            assert late == [], f"WATCHDOG=1 while the store was wedged: {[t - t_wedged for t in late]}"
            # The watchdog thread said why while the loop could not.
            assert any(
                s.startswith("unhealthy: event loop has not run the health check") for s in ns.statuses()
            )
            await daemon.wait_for("watchdog_withheld")
            withheld = next(ln for ln in daemon.lines if ln.get("event") == "watchdog_withheld")
            stack = withheld["loop_stack"]
            assert isinstance(stack, list) and "edge/store.py" in stack[-1] and "lookup" in stack[-1], stack
            # Freed: pings come back and the status line is the normal one again.
            assert await eventually(lambda: any(t > t_freed for t in ns.times("WATCHDOG", "1")), timeout=15)
            await daemon.wait_for("watchdog_resumed")
            assert await eventually(lambda: "devices online" in ns.statuses()[-1], timeout=10), ns.statuses()
            daemon.proc.send_signal(signal.SIGTERM)
            assert daemon.proc.wait(15) == 0
            assert ns.times("STOPPING", "1")


async def test_abstract_socket_and_a_watchdog_meant_for_another_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WATCHDOG_PID names another process (the variables were inherited): no pings, the rest as usual."""
    with notify_socket(f"@gate-edge-test-{uuid.uuid4().hex}") as ns:
        env = {"NOTIFY_SOCKET": ns.address, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}
        async with gate(tmp_path, monkeypatch, **env) as (daemon, _, _):
            assert await eventually(lambda: bool(ns.times("READY", "1")), timeout=20), ns.messages
            await asyncio.sleep(2.5)  # five periods
            assert not ns.times("WATCHDOG"), ns.messages
            daemon.proc.send_signal(signal.SIGTERM)
            assert daemon.proc.wait(15) == 0
            assert ns.times("STOPPING", "1")


def test_watchdog_period_honours_watchdog_pid() -> None:
    assert watchdog_period({"WATCHDOG_USEC": "10000000"}, pid=42) == 5.0
    assert watchdog_period({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "42"}, pid=42) == 5.0
    assert watchdog_period({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "43"}, pid=42) is None
    assert watchdog_period({"WATCHDOG_USEC": "0"}, pid=42) is None
    assert watchdog_period({"WATCHDOG_USEC": "ten"}, pid=42) is None
    assert watchdog_period({}, pid=42) is None


def test_a_systemd_that_stops_reading_never_blocks_the_sender(tmp_path: Path) -> None:
    """A full receive queue drops (and counts) datagrams instead of blocking the caller."""
    path = str(tmp_path / "n.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    try:
        notifier = Notifier({"NOTIFY_SOCKET": path})
        sent = [notifier.send("WATCHDOG=1", "STATUS=" + "x" * 200) for _ in range(5000)]
        assert sent[0] and not all(sent)  # the first went out; later ones found the queue full
        assert notifier.dropped == sent.count(False) > 0
        assert receiver.recv(4096) == b"WATCHDOG=1\nSTATUS=" + b"x" * 200
        notifier.close()
        assert Notifier({}).send("READY=1") is False  # outside systemd: nothing to do, no error
        assert Notifier({"NOTIFY_SOCKET": "relative/path"}).enabled is False
    finally:
        receiver.close()
