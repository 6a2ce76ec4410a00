"""Supervision of the daemon's long-lived loops: never a half-alive gateway.

A loop that dies (a Modbus worker, a door's input poller, the outbox flusher, the cloud link) would
leave the process running and looking healthy while a door, the event upload or the whitelist sync is
dead. So every long-lived loop runs under :func:`supervised`: an exception is logged with its
traceback and the loop is restarted after a short backoff; a loop that keeps dying (more than
``max_restarts`` within ``window_s``) is fatal: :func:`fatal_event` is set, the daemon shuts down to its
safe state and exits non-zero, and systemd (``Restart=on-failure``) starts it afresh.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable

import structlog

from edge.db import is_damage

log = structlog.get_logger(__name__)

MAX_RESTARTS = 5
WINDOW_S = 60.0
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 5.0

_fatal: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Event] = weakref.WeakKeyDictionary()
_reasons: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, str] = weakref.WeakKeyDictionary()


def fatal_event() -> asyncio.Event:
    """Set when a supervised loop gave up on this event loop (the daemon must exit non-zero)."""
    loop = asyncio.get_running_loop()
    ev = _fatal.get(loop)
    if ev is None:
        ev = _fatal[loop] = asyncio.Event()
    return ev


def fatal_reason() -> str | None:
    return _reasons.get(asyncio.get_running_loop())


def declare_fatal(name: str, reason: str) -> None:
    """A part of the daemon that cannot go on: shut down cleanly and exit non-zero. (The stop then
    leaves no clean-stop stamp, so the next start checks every database in full.)"""
    loop = asyncio.get_running_loop()
    _reasons.setdefault(loop, f"{name}: {reason}")
    log.critical("task_fatal", task=name, reason=reason)
    fatal_event().set()


async def supervised(
    name: str,
    fn: Callable[[], Awaitable[object]],
    *,
    max_restarts: int = MAX_RESTARTS,
    window_s: float = WINDOW_S,
) -> None:
    """Run ``fn()`` until it returns; restart it when it raises. Cancelling this cancels ``fn``."""
    deaths: list[float] = []
    backoff = BACKOFF_MIN_S
    while True:
        try:
            await fn()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            now = time.monotonic()
            deaths = [t for t in deaths if now - t < window_s] + [now]
            log.exception("task_died", task=name, error=str(exc) or type(exc).__name__, deaths=len(deaths))
            if is_damage(exc):  # restarting on a damaged file is pointless: the next start recovers it
                declare_fatal(name, f"damaged database: {exc}")
                return
            if len(deaths) > max_restarts:
                declare_fatal(name, f"died {len(deaths)} times in {window_s:.0f} s: {exc!r}")
                return
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, BACKOFF_MAX_S)


def spawn(name: str, fn: Callable[[], Awaitable[object]], **kw: float) -> asyncio.Task[None]:
    """``asyncio.create_task(supervised(name, fn))`` with the task named ``name``."""
    return asyncio.get_running_loop().create_task(supervised(name, fn, **kw), name=name)  # type: ignore[arg-type]
