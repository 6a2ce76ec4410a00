"""Door supervision (door_forced / door_held_open) against a simulated relay board on a real pymodbus
server, and once through the in-process Gateway down to the outbox on disk.

Board wiring in these tests: input 0 is the door contact (on = closed), input 3 the exit button, coil 2
the lock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from drivers.device import Grant
from drivers.door import Door
from drivers.modbus import ModbusTcpBusConfig
from drivers.modbus_bus import ModbusBus
from edge.app import Gateway
from edge.config import load_config
from edge.model import Decision
from edge.sim.relay_board import RelayBoardSim
from tests.support import devices
from tests.support.devices import env_for
from tests.support.gateway import Signer, gateway_config
from tests.support.modbus import eventually, free_port, tcp_board
from tests.support.ptys import PtyPair
from tests.test_door import FAST, door_cfg
from tests.test_gateway_e2e import outbox_rows

SENSOR, BUTTON = 0, 3
FORCED = [("alarm", "door_forced")]


def alarms(env: devices.TestEnv) -> list[tuple[str, str]]:
    """The supervision events so far, as (result, reason)."""
    return [(e.result, e.reason) for e in env.events if e.method == "sensor"]


def supervised(**kw: Any) -> dict[str, Any]:
    return {"door_sensor_input": SENSOR, "exit_button_input": BUTTON, "held_open_s": 0, **kw}


@pytest.fixture
async def board() -> AsyncIterator[tuple[RelayBoardSim, ModbusBus]]:
    sim = RelayBoardSim([1])
    sim.set_input(1, SENSOR, True)  # closed
    port = free_port()
    async with tcp_board(sim, port):
        cfg = ModbusTcpBusConfig.model_validate(
            {"type": "modbus_tcp", "host": "127.0.0.1", "port": port, **FAST}
        )
        bus = ModbusBus("b0", cfg)
        await bus.start()
        try:
            yield sim, bus
        finally:
            await bus.stop()


@contextlib.asynccontextmanager
async def running(bus: ModbusBus, **kw: Any) -> AsyncIterator[tuple[Door, devices.TestEnv]]:
    env = env_for(bus)
    door = Door("d1", door_cfg(**supervised(**kw)), env)
    await door.start()
    try:
        assert await eventually(lambda: door.door_open is not None)
        yield door, env
    finally:
        await door.stop()


async def open_door(sim: RelayBoardSim, door: Door) -> None:
    sim.set_input(1, SENSOR, False)
    assert await eventually(lambda: door.door_open is True)


async def close_door(sim: RelayBoardSim, door: Door) -> None:
    sim.set_input(1, SENSOR, True)
    assert await eventually(lambda: door.door_open is False)


async def past_release(sim: RelayBoardSim, door: Door) -> None:
    """Until the lock is back on and the grace for a late-reported opening has run out."""
    assert await eventually(lambda: not sim.coil(1, 2))
    assert door.supervisor is not None
    await asyncio.sleep(door.supervisor.watch.grace_s + 0.1)


async def test_opened_while_locked_is_forced_and_closing_ends_it(
    board: tuple[RelayBoardSim, ModbusBus],
) -> None:
    sim, bus = board
    async with running(bus) as (door, env):
        await open_door(sim, door)
        assert await eventually(lambda: alarms(env) == FORCED)
        assert env.events[-1].device == "d1"
        assert door.status()["alarms"] == ["door_forced"]
        await close_door(sim, door)
        assert await eventually(lambda: alarms(env) == [*FORCED, ("info", "door_forced")])
        assert door.status()["alarms"] == []


@pytest.mark.parametrize("how", ["grant", "remote_open"])
async def test_opened_after_a_release_is_not_forced(board: tuple[RelayBoardSim, ModbusBus], how: str) -> None:
    sim, bus = board
    async with running(bus, pulse_ms=600) as (door, env):
        if how == "grant":
            await door.grant(Grant(Decision("granted", "ok"), "qr"))
        else:
            assert await door.act("open", {}) is None
        assert sim.coil(1, 2)
        await open_door(sim, door)
        await close_door(sim, door)
        await past_release(sim, door)
        assert alarms(env) == []
        await open_door(sim, door)  # the release is over: the same opening now is forced
        assert await eventually(lambda: alarms(env) == FORCED)


async def test_exit_button_shunts_until_relock(board: tuple[RelayBoardSim, ModbusBus]) -> None:
    sim, bus = board
    async with running(bus, pulse_ms=600) as (door, env):
        sim.set_input(1, BUTTON, True)
        assert await eventually(lambda: any(e.method == "button" for e in env.events))
        sim.set_input(1, BUTTON, False)
        await open_door(sim, door)
        await close_door(sim, door)
        await past_release(sim, door)
        assert alarms(env) == []
        assert [(e.method, e.result) for e in env.events] == [("button", "granted")]
        await open_door(sim, door)
        assert await eventually(lambda: alarms(env) == FORCED)


async def test_exit_button_in_lock_mode_opens_nothing_but_is_no_break_in(
    board: tuple[RelayBoardSim, ModbusBus],
) -> None:
    sim, bus = board
    async with running(bus, pulse_ms=600) as (door, env):
        await door.set_mode("lock")
        sim.set_input(1, BUTTON, True)
        assert await eventually(lambda: ("button", "denied") in [(e.method, e.result) for e in env.events])
        await open_door(sim, door)  # free egress by the handle
        await close_door(sim, door)
        assert not sim.coil(1, 2)
        await asyncio.sleep(door.supervisor.watch.grace_s + 0.7)  # type: ignore[union-attr]
        assert alarms(env) == []
        await open_door(sim, door)  # nobody pressed since: forced
        assert await eventually(lambda: alarms(env) == FORCED)


async def test_held_open_past_the_limit_then_closed(board: tuple[RelayBoardSim, ModbusBus]) -> None:
    sim, bus = board
    async with running(bus, pulse_ms=200, held_open_s=0.8) as (door, env):
        await door.pulse()
        await open_door(sim, door)
        assert alarms(env) == []  # not yet: open for well under held_open_s
        assert await eventually(lambda: alarms(env) == [("alarm", "door_held_open")])
        await asyncio.sleep(1.0)
        assert alarms(env) == [("alarm", "door_held_open")]  # one alarm per opening
        await close_door(sim, door)
        assert await eventually(
            lambda: alarms(env) == [("alarm", "door_held_open"), ("info", "door_held_open")]
        )


async def test_forced_and_held_open_both_close(board: tuple[RelayBoardSim, ModbusBus]) -> None:
    sim, bus = board
    async with running(bus, held_open_s=0.3) as (door, env):
        await open_door(sim, door)
        both = [("alarm", "door_forced"), ("alarm", "door_held_open")]
        assert await eventually(lambda: alarms(env) == both)
        await close_door(sim, door)
        assert await eventually(
            lambda: alarms(env)[2:] == [("info", "door_forced"), ("info", "door_held_open")]
        )


@pytest.mark.parametrize("release", ["hold_open", "fire"])
async def test_deliberate_release_raises_nothing(
    board: tuple[RelayBoardSim, ModbusBus], release: str
) -> None:
    sim, bus = board
    async with running(bus, held_open_s=0.3) as (door, env):
        if release == "hold_open":
            await door.set_mode("hold_open")
        else:
            await door.fire(True)
        assert sim.coil(1, 2)
        await open_door(sim, door)
        await asyncio.sleep(0.8)  # past held_open_s: suspended
        await close_door(sim, door)
        await open_door(sim, door)
        await asyncio.sleep(0.5)
        assert alarms(env) == []
        if release == "hold_open":
            await door.set_mode("normal")
        else:
            await door.fire(False)
        # Supervised again: the door still open gets a full held_open_s from now; a new opening is forced.
        assert await eventually(lambda: alarms(env) == [("alarm", "door_held_open")])
        await close_door(sim, door)
        await asyncio.sleep(door.supervisor.watch.grace_s + 0.1)  # type: ignore[union-attr]
        await open_door(sim, door)
        assert await eventually(lambda: ("alarm", "door_forced") in alarms(env))


async def test_found_open_at_start_is_not_forced_but_held_open_counts(
    board: tuple[RelayBoardSim, ModbusBus],
) -> None:
    sim, bus = board
    sim.set_input(1, SENSOR, False)  # propped open across the restart
    async with running(bus, held_open_s=0.5) as (door, env):
        assert door.door_open is True
        assert await eventually(lambda: alarms(env) == [("alarm", "door_held_open")])
        await close_door(sim, door)
        assert await eventually(lambda: alarms(env)[-1] == ("info", "door_held_open"))


async def test_opened_during_a_board_outage_is_not_forced() -> None:
    sim = RelayBoardSim([1])
    sim.set_input(1, SENSOR, True)
    port = free_port()
    cfg = ModbusTcpBusConfig.model_validate({"type": "modbus_tcp", "host": "127.0.0.1", "port": port, **FAST})
    bus = ModbusBus("b0", cfg)
    env = env_for(bus)
    door = Door("d1", door_cfg(**supervised()), env)
    try:
        async with tcp_board(sim, port):
            await bus.start()
            await door.start()
            assert await eventually(lambda: door.door_open is False)
        assert await eventually(lambda: not door.online)
        sim.set_input(1, SENSOR, False)
        async with tcp_board(sim, port):
            assert await eventually(lambda: door.door_open is True)  # a state after the outage
            await asyncio.sleep(0.3)
            assert alarms(env) == []
            await close_door(sim, door)
            await open_door(sim, door)  # a change again
            assert await eventually(lambda: alarms(env) == FORCED)
    finally:
        await door.stop()
        await bus.stop()


async def test_alarms_off_by_config_and_timer_cancelled_at_stop(
    board: tuple[RelayBoardSim, ModbusBus],
) -> None:
    sim, bus = board
    seen: list[tuple[str, bool]] = []
    async with running(bus, forced_alarm=False) as (door, env):
        door.on_input(lambda d, kind, v: seen.append((kind, v)))
        await open_door(sim, door)
        await asyncio.sleep(0.5)
        assert seen == [("door_sensor", True)]  # the sensor is read...
        assert alarms(env) == []  # ...and raises nothing
    sim.set_input(1, SENSOR, True)
    async with running(bus, held_open_s=0.4) as (door, env):
        await door.pulse()
        await open_door(sim, door)
    await asyncio.sleep(0.8)  # the held-open deadline passed after stop()
    assert alarms(env) == []


async def test_forced_alarm_reaches_the_outbox_through_the_gateway(tmp_path: Path) -> None:
    port = free_port()
    board = RelayBoardSim(device_ids=[1])
    board.set_input(1, SENSOR, True)
    server = asyncio.create_task(board.serve_tcp("127.0.0.1", port))
    with PtyPair(tmp_path, "qr") as scanner:
        cfg_path = gateway_config(
            tmp_path,
            signer=Signer(),
            bus={
                "type": "modbus_tcp",
                "host": "127.0.0.1",
                "port": port,
                "timeout": 0.3,
                "poll_interval_s": 0.05,
            },
            readers={"qr-north": {"type": "serial", "port": str(scanner.b), "content": "qr"}},
            door={"door_sensor_input": SENSOR, "held_open_s": 0},
        )
        await asyncio.sleep(0.2)
        gw = Gateway(load_config(cfg_path))
        door = gw.devices["north-gate"]
        assert isinstance(door, Door)
        try:
            await gw.start()
            assert await eventually(lambda: door.door_open is False)
            board.set_input(1, SENSOR, False)
            data = tmp_path / "data"

            def sensor_rows() -> list[tuple[object, ...]]:
                return [
                    (r["device"], r["method"], r["result"], r["reason"])
                    for r in outbox_rows(data)
                    if r["method"] == "sensor"
                ]

            assert await eventually(
                lambda: sensor_rows() == [("north-gate", "sensor", "alarm", "door_forced")]
            )
            board.set_input(1, SENSOR, True)
            assert await eventually(
                lambda: sensor_rows()[-1] == ("north-gate", "sensor", "info", "door_forced")
            )
        finally:
            await gw.stop()
            server.cancel()
            await asyncio.gather(server, return_exceptions=True)
