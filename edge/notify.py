"""Telling systemd how the gate is (Type=notify): READY=1, STATUS=, WATCHDOG=1 and STOPPING=1.

The protocol is one datagram of ``KEY=value`` lines to the AF_UNIX socket named by $NOTIFY_SOCKET (a
leading '@' means the abstract namespace), so no library is needed. Sending never raises and never
blocks: a systemd that stopped reading must not stall the gate.

The watchdog ping is the daemon vouching that it can still decide, not that the process exists. A
thread of its own asks the event loop to run a health check: a whitelist lookup on the store's read
connection (the connection presentations use, on the loop thread, as they do) and the verification of
a fixed malformed token, which must come back ``malformed``. Only when the loop ran that check within
half a ping period, and the check passed, does WATCHDOG=1 go out. A stuck loop or a store whose
lookups hang (the SD card stalls, a lock held elsewhere) stops the pings, and systemd kills and
restarts the daemon after WatchdogSec; on restart every output is forced to its safe state again.
The thread, not the loop, reports the trouble (log line and STATUS=), because the loop cannot.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import socket
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from typing import TYPE_CHECKING

import structlog

from edge.tokens import TokenDenied, verify_token

if TYPE_CHECKING:
    from edge.app import Gateway

log = structlog.get_logger(__name__)

STATUS_EVERY_S = 5.0  # health checks (and STATUS= refreshes) without a watchdog
PROBE_CARD = "0"  # looked up on every check: found or not, an answer is what counts
PROBE_TOKEN = "watchdog-probe"  # never a token: verification must say ``malformed``


def _address(raw: str | None) -> str | bytes | None:
    """$NOTIFY_SOCKET as a sendto() address: a path, or an abstract name ('@' becomes NUL)."""
    if not raw or raw[0] not in "/@":
        return None
    return b"\0" + raw[1:].encode() if raw[0] == "@" else raw


def watchdog_period(environ: Mapping[str, str], pid: int | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of $WATCHDOG_USEC), or None when no watchdog is asked of
    this process ($WATCHDOG_PID names another one, or the value is not a positive integer)."""
    usec = environ.get("WATCHDOG_USEC", "")
    owner = environ.get("WATCHDOG_PID", "")
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None


class Notifier:
    """Datagrams to $NOTIFY_SOCKET; does nothing without it. Thread-safe, non-blocking, never raises."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.address = _address(environ.get("NOTIFY_SOCKET"))
        self.dropped = 0
        self._sock: socket.socket | None = None
        if self.address is not None:
            try:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            except OSError as exc:
                log.warning("notify_socket_failed", error=str(exc))

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *fields: str) -> bool:
        """One datagram of ``fields`` (``KEY=value`` each); False (and counted) when it could not go."""
        sock = self._sock
        if sock is None or self.address is None:
            return False
        try:
            sock.sendto("\n".join(fields).encode("utf-8", "replace"), self.address)
        except OSError:  # systemd gone, queue full (EAGAIN), socket removed: the gate goes on
            self.dropped += 1
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def status_line(gw: Gateway) -> str:
    """The short human line `systemctl status` shows: devices and readers online, whitelist, outbox."""
    health = gw.device_health()
    online = sum(1 for h in health.values() if h["online"])
    return f"{online}/{len(health)} devices online, whitelist v{gw.store.version}, outbox {gw.outbox.count()}"


def probe_decision_path(gw: Gateway) -> None:
    """Raise unless the decision path answers: a whitelist lookup and a token verification, on the
    calling (loop) thread with the gateway's own store connection and trust policy."""
    gw.store.lookup("card", PROBE_CARD)
    verdict = verify_token(PROBE_TOKEN, gw.policy, time.time(), clock_trusted=False)
    if not isinstance(verdict, TokenDenied) or verdict.reason != "malformed":
        raise RuntimeError(f"token verification answered {verdict!r} to a non-token")


class Systemd:
    """The daemon's side of the unit's Type=notify and WatchdogSec=. A no-op outside systemd."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.notifier = Notifier(env)
        self.period = watchdog_period(env) if self.notifier.enabled else None
        self._gw: Gateway | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._phase = "starting"  # starting -> ready -> stopping
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pending: concurrent.futures.Future[str] | None = None
        self._pending_since = 0.0
        self._last_status = ""
        self._trouble: str | None = None
        self._loop_thread = 0

    def watch(self, gw: Gateway, loop: asyncio.AbstractEventLoop) -> None:
        """Start checking (and pinging) as soon as the stores are open: the start itself, with boards
        that do not answer, may take longer than WatchdogSec."""
        if not self.notifier.enabled:
            return
        self._gw, self._loop = gw, loop
        self._loop_thread = threading.get_ident()
        self._send_status("starting: outputs to their safe state")
        self._thread = threading.Thread(target=self._run, name="systemd-watchdog", daemon=True)
        self._thread.start()

    def ready(self) -> None:
        """Gateway.start() returned: outputs safe, stores open, readers started."""
        self._phase = "ready"
        line = status_line(self._gw) if self._gw is not None else "ready"
        self._last_status = line
        self.notifier.send("READY=1", f"STATUS={line}")

    def stopping(self, why: str) -> None:
        """The stop begins; from now on the checks leave the (closing) stores alone."""
        with self._lock:
            self._phase = "stopping"
            self._last_status = f"stopping: {why}"
            self.notifier.send("STOPPING=1", f"STATUS={self._last_status}")

    async def close(self) -> None:
        """Stop the thread; joined off the loop, so a check it waits for can still run."""
        self._halt.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5.0)
        self.notifier.close()

    # --- the watchdog thread ------------------------------------------------------------------
    def _run(self) -> None:
        period = self.period or STATUS_EVERY_S
        due = time.monotonic()
        while not self._halt.wait(max(0.0, due - time.monotonic())):
            due = max(due + period, time.monotonic())
            problem, line = self._check_once(period / 2)
            if self._halt.is_set():
                return
            self._report(problem)
            fields = ["WATCHDOG=1"] if problem is None and self.period is not None else []
            status = line if problem is None else f"unhealthy: {problem} (watchdog withheld)"
            with self._lock:  # never a stale line after STOPPING's
                if status != self._last_status and self._phase != "stopping":
                    self._last_status = status
                    fields.append(f"STATUS={status}")
                if fields:
                    self.notifier.send(*fields)

    def _check_once(self, deadline: float) -> tuple[str | None, str]:
        """(None, status line) when the loop ran the check within ``deadline`` s and it passed, else
        (what is wrong, ""). A check the loop has not run yet is waited for again, never duplicated."""
        assert self._loop is not None
        if self._pending is None or self._pending.done():
            check = self._check()
            try:
                self._pending = asyncio.run_coroutine_threadsafe(check, self._loop)
            except RuntimeError:  # the loop is closed: the daemon is ending
                check.close()
                return "event loop closed", ""
            self._pending_since = time.monotonic()
        try:
            line = self._pending.result(timeout=deadline)
        except concurrent.futures.TimeoutError:
            stuck = time.monotonic() - self._pending_since
            return f"event loop has not run the health check for {stuck:.1f} s", ""
        except Exception as exc:
            return f"decision path probe failed: {exc!s} ({type(exc).__name__})", ""
        finally:
            if self._pending is not None and self._pending.done():
                self._pending = None
        return None, line

    async def _check(self) -> str:
        gw = self._gw
        assert gw is not None
        if self._phase == "stopping":
            return self._last_status
        probe_decision_path(gw)
        return status_line(gw) if self._phase == "ready" else "starting: outputs to their safe state"

    def _report(self, problem: str | None) -> None:
        """A log line when the pings stop and when they resume (not one per period)."""
        if problem is not None and self._trouble is None:
            log.error("watchdog_withheld", reason=problem, loop_stack=self._loop_stack())
        elif problem is None and self._trouble is not None:
            log.warning("watchdog_resumed", after=self._trouble)
        self._trouble = problem

    def _loop_stack(self) -> list[str]:
        """Where the loop thread is right now (innermost last): what it is stuck in."""
        frame = sys._current_frames().get(self._loop_thread)
        if frame is None:
            return []
        return [f"{f.filename}:{f.lineno} {f.name}" for f in traceback.extract_stack(frame)[-8:]]

    def _send_status(self, line: str) -> None:
        self._last_status = line
        self.notifier.send(f"STATUS={line}")
