"""Coalesced writes: many callers, at most one run in flight and one queued (drivers share it)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from drivers.modbus_bus import DeviceUnavailable


class Coalescer:
    """Runs one async action for many callers: at most one run in flight and one queued.

    A caller waits for a run that *started after* its call, so it sees its own effect (the release it
    asked for reached the board) and its failure; a flood of a thousand callers costs two runs, not a
    thousand queued writes that would go on opening the door long after the flood stopped.
    """

    def __init__(self, action: Callable[[], Awaitable[None]], name: str) -> None:
        self._action = action
        self._name = name
        self._pending: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    async def __call__(self) -> None:
        loop = asyncio.get_running_loop()
        if self._pending is None:
            self._pending = loop.create_future()
            self._pending.add_done_callback(_retrieve)
            if self._task is None or self._task.done():
                self._task = loop.create_task(self._drain(), name=self._name)
        # shield: one caller giving up (its own timeout) must not cancel the write the others wait for
        await asyncio.shield(self._pending)

    async def _drain(self) -> None:
        while self._pending is not None:
            fut, self._pending = self._pending, None
            try:
                await self._action()
            except asyncio.CancelledError:
                if not fut.done():
                    fut.set_exception(DeviceUnavailable("stopped"))
                raise
            except Exception as exc:
                if not fut.done():
                    fut.set_exception(exc)
            else:
                if not fut.done():
                    fut.set_result(None)

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._pending is not None and not self._pending.done():
            self._pending.set_exception(DeviceUnavailable("stopped"))
        self._pending = None


def _retrieve(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()  # retrieved: no "exception was never retrieved" when every waiter gave up
