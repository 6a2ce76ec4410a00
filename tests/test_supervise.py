"""Supervision (issue 6.1): a dying loop is restarted; one that keeps dying ends the daemon non-zero."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edge import supervise
from edge.config import load_config
from edge.runner import run_gateway
from edge.sim.relay_board import RelayBoardSim
from tests.support.gateway import Signer, free_port, gateway_config
from tests.support.modbus import eventually
from tests.support.ptys import PtyPair


async def test_a_loop_that_dies_is_restarted() -> None:
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError("boom")
        await asyncio.sleep(3600)

    task = supervise.spawn("flaky", flaky)
    try:
        assert await eventually(lambda: runs == 3, 5)
        assert not task.done()
        assert not supervise.fatal_event().is_set()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_loop_that_keeps_dying_is_fatal() -> None:
    async def broken() -> None:
        raise OSError("wedged")

    task = asyncio.create_task(supervise.supervised("broken", broken, max_restarts=2, window_s=60))
    await asyncio.wait_for(task, 10)
    assert supervise.fatal_event().is_set()
    assert "broken" in (supervise.fatal_reason() or "")


async def test_daemon_exits_nonzero_in_safe_state_when_a_loop_gives_up(tmp_path: Path) -> None:
    port = free_port()
    board = RelayBoardSim(device_ids=[1])
    server = asyncio.create_task(board.serve_tcp("127.0.0.1", port))
    scanner = PtyPair(tmp_path, "qr").start()
    cfg = gateway_config(
        tmp_path,
        signer=Signer(),
        bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": port, "timeout": 0.3},
        readers={"qr-north": {"type": "serial", "port": str(scanner.b), "content": "qr"}},
        door={"pulse_mode": "coil"},
    )
    try:
        await asyncio.sleep(0.2)
        run = asyncio.create_task(run_gateway(load_config(cfg)))
        assert await eventually(lambda: len(board.writes) >= 1)  # start-up: lock coil forced off
        board.set_coil(1, 0, True)  # as if a release were under way when the loop gave up

        async def dies() -> None:
            raise RuntimeError("a part of the daemon that cannot go on")

        supervise.spawn("doomed", dies, max_restarts=1, window_s=60)
        assert await asyncio.wait_for(run, 20) == 1
        last = board.writes_to(1, 0)[-1]
        assert last.value == 0, "shutdown did not switch the lock off"
        assert not board.coil(1, 0)
    finally:
        scanner.stop()
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
