"""Run simulated relay boards as real pymodbus servers (TCP on loopback, RTU on a pty) inside a test."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable

from edge.sim.relay_board import RelayBoardSim


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _serve(factory: Callable[[asyncio.Event], object]) -> asyncio.Task[None]:
    started = asyncio.Event()
    task: asyncio.Task[None] = asyncio.create_task(factory(started))  # type: ignore[arg-type]
    waiter = asyncio.create_task(started.wait())
    done, _ = await asyncio.wait({task, waiter}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
    if waiter not in done:
        waiter.cancel()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task  # re-raises the server's start-up error, if any
        raise RuntimeError("simulated board did not start")
    return task


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@contextlib.asynccontextmanager
async def tcp_board(sim: RelayBoardSim, port: int) -> AsyncIterator[None]:
    """Serve ``sim`` on 127.0.0.1:port for the duration of the block."""
    task = await _serve(lambda ev: sim.serve_tcp("127.0.0.1", port, started=ev))
    try:
        yield
    finally:
        await _cancel(task)


@contextlib.asynccontextmanager
async def rtu_board(sim: RelayBoardSim, path: str, baudrate: int = 9600) -> AsyncIterator[None]:
    """Serve ``sim`` as an RTU slave on one end of a pty pair."""
    task = await _serve(lambda ev: sim.serve_rtu(path, baudrate, started=ev))
    try:
        yield
    finally:
        await _cancel(task)


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0, step: float = 0.02) -> bool:
    """Poll until ``predicate()`` holds; returns its final value (tests assert on it)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return predicate()
        await asyncio.sleep(step)
    return True
