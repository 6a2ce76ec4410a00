"""Door driver against the simulated relay board (real pymodbus servers over TCP and RTU-over-pty)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from drivers.door import Door, DoorConfig, DoorLocked
from drivers.modbus import ModbusRtuBusConfig, ModbusTcpBusConfig
from drivers.modbus_bus import COIL_OFF, COIL_ON, DeviceUnavailable, ModbusBus
from edge.sim.relay_board import RelayBoardSim
from tests.support.devices import env_for
from tests.support.modbus import eventually, free_port, rtu_board, tcp_board
from tests.support.ptys import PtyPair

FAST = {
    "timeout": 0.15,
    "retries": 1,
    "offline_after": 2,
    "probe_min_s": 0.1,
    "probe_max_s": 0.4,
    "poll_interval_s": 0.03,
}


def door_cfg(**kw: Any) -> DoorConfig:
    base: dict[str, Any] = {"bus": "b0", "device_id": 1, "zone": "z", "lock_coil": 2, "pulse_ms": 200}
    return DoorConfig.model_validate({**base, **kw})


def values(sim: RelayBoardSim, device_id: int = 1, address: int = 2) -> list[int]:
    return [w.value for w in sim.writes_to(device_id, address)]


@pytest.fixture
async def tcp_setup() -> AsyncIterator[tuple[RelayBoardSim, ModbusBus]]:
    sim = RelayBoardSim([1])
    port = free_port()
    async with tcp_board(sim, port):
        bus = ModbusBus(
            "b0",
            ModbusTcpBusConfig.model_validate(
                {"type": "modbus_tcp", "host": "127.0.0.1", "port": port, **FAST}
            ),
        )
        await bus.start()
        try:
            yield sim, bus
        finally:
            await bus.stop()


async def test_coil_pulse_over_tcp(tcp_setup: tuple[RelayBoardSim, ModbusBus]) -> None:
    sim, bus = tcp_setup
    door = Door("d1", door_cfg(), env_for(bus))
    await door.start()
    try:
        await door.pulse()
        assert sim.coil(1, 2)
        assert await eventually(lambda: not sim.coil(1, 2))
        assert values(sim) == [COIL_OFF, COIL_ON, COIL_OFF]  # start-up off, then the pulse
    finally:
        await door.stop()


async def test_second_pulse_extends_instead_of_closing_early(
    tcp_setup: tuple[RelayBoardSim, ModbusBus],
) -> None:
    sim, bus = tcp_setup
    door = Door("d1", door_cfg(pulse_ms=300), env_for(bus))
    await door.start()
    try:
        await door.pulse()
        await asyncio.sleep(0.1)
        t_second = time.monotonic()
        await door.pulse()  # lock already released: only the relock moves, nothing is written
        assert await eventually(lambda: not sim.coil(1, 2))
        assert values(sim) == [COIL_OFF, COIL_ON, COIL_OFF]
        assert sim.writes[-1].t - t_second >= 0.3, "the second grant did not get its full release"
    finally:
        await door.stop()


async def test_coil_pulse_over_rtu(pty_pair: PtyPair) -> None:
    sim = RelayBoardSim([1])
    async with rtu_board(sim, str(pty_pair.a)):
        cfg = ModbusRtuBusConfig.model_validate({"type": "modbus_rtu", "port": str(pty_pair.b), **FAST})
        bus = ModbusBus("b0", cfg)
        await bus.start()
        door = Door("d1", door_cfg(), env_for(bus))
        try:
            await door.start()
            await door.pulse()
            assert await eventually(lambda: len(values(sim)) == 3)
            assert values(sim) == [COIL_OFF, COIL_ON, COIL_OFF]
            assert not sim.coil(1, 2)
        finally:
            await door.stop()
            await bus.stop()


async def test_flash_pulse_board_switches_itself_off(tcp_setup: tuple[RelayBoardSim, ModbusBus]) -> None:
    sim, bus = tcp_setup
    door = Door("d1", door_cfg(pulse_mode="flash", pulse_ms=300, lock_coil=5), env_for(bus))
    await door.start()
    try:
        await door.pulse()
        flash = sim.writes_to(1, 0x0205)
        assert [w.value for w in flash] == [3]
        assert sim.coil(1, 5)
        assert await eventually(lambda: not sim.coil(1, 5))
        assert values(sim, address=5) == [COIL_OFF]  # only the start-up off: the board did the rest
    finally:
        await door.stop()


async def test_start_forces_lock_off_and_stop_switches_off_in_hold_open(
    tcp_setup: tuple[RelayBoardSim, ModbusBus],
) -> None:
    sim, bus = tcp_setup
    sim.set_coil(1, 2, True)  # left on by a previous run / board power-up state
    door = Door("d1", door_cfg(), env_for(bus))
    await door.start()
    assert not sim.coil(1, 2)

    await door.set_mode("hold_open")
    assert door.mode == "hold_open"
    assert sim.coil(1, 2)
    await door.pulse()  # already open: no-op
    await door.stop()
    assert not sim.coil(1, 2)
    assert values(sim) == [COIL_OFF, COIL_ON, COIL_OFF]


async def test_modes(tcp_setup: tuple[RelayBoardSim, ModbusBus]) -> None:
    sim, bus = tcp_setup
    door = Door("d1", door_cfg(), env_for(bus))
    await door.start()
    try:
        await door.set_mode("hold_open")
        assert sim.coil(1, 2)
        await door.set_mode("lock")
        assert not sim.coil(1, 2)
        with pytest.raises(DoorLocked):
            await door.pulse()
        assert values(sim) == [COIL_OFF, COIL_ON, COIL_OFF]  # the refused pulse wrote nothing
        await door.set_mode("normal")
        await door.pulse()
        assert sim.coil(1, 2)
    finally:
        await door.stop()
    assert not sim.coil(1, 2)


async def test_inputs_reported_on_change(tcp_setup: tuple[RelayBoardSim, ModbusBus]) -> None:
    sim, bus = tcp_setup
    sim.set_input(1, 0, True)  # door contact: closed
    env = env_for(bus)
    # Input reporting only: the alarms have their own tests (test_door_alarms.py).
    door = Door("d1", door_cfg(door_sensor_input=0, exit_button_input=3, forced_alarm=False), env)
    seen: list[tuple[str, str, bool]] = []
    door.on_input(lambda d, kind, v: seen.append((d, kind, v)))
    await door.start()
    try:
        assert await eventually(lambda: door.door_open is False)
        sim.set_input(1, 3, True)
        assert await eventually(lambda: ("d1", "exit_button", True) in seen)
        sim.set_input(1, 3, False)
        assert await eventually(lambda: ("d1", "exit_button", False) in seen)
        sim.set_input(1, 0, False)
        assert await eventually(lambda: ("d1", "door_sensor", True) in seen)
        assert seen == [
            ("d1", "exit_button", True),
            ("d1", "exit_button", False),
            ("d1", "door_sensor", True),
        ]
        assert COIL_ON in values(sim)  # the exit button opens the door...
        assert [(e.method, e.result, e.reason) for e in env.events] == [("button", "granted", "ok")]
    finally:
        await door.stop()


async def test_dead_door_beside_live_one_on_rtu(pty_pair: PtyPair) -> None:
    sim = RelayBoardSim([1])
    async with rtu_board(sim, str(pty_pair.a)):
        cfg = ModbusRtuBusConfig.model_validate({"type": "modbus_rtu", "port": str(pty_pair.b), **FAST})
        bus = ModbusBus("b0", cfg)
        await bus.start()
        live = Door("live", door_cfg(pulse_ms=100), env_for(bus))
        dead = Door("dead", door_cfg(device_id=2, exit_button_input=0), env_for(bus))
        try:
            await live.start()
            await dead.start()  # must not raise: the unit is reported, not fatal
            assert await eventually(lambda: not dead.online)
            with pytest.raises(DeviceUnavailable):
                await dead.pulse()

            ok = 0
            for _ in range(10):
                try:
                    await live.pulse()
                    ok += 1
                except DeviceUnavailable:
                    pass
                assert await eventually(lambda: not sim.coil(1, 2))  # relocked: the next is a new release
            assert ok == 10
            assert values(sim).count(COIL_ON) == 10
            assert live.online

            sim.add_device(2)
            sim.set_coil(2, 2, True)  # came back in an unknown state
            assert await eventually(lambda: dead.online)
            assert await eventually(lambda: not sim.coil(2, 2))  # re-asserted: locked
        finally:
            await live.stop()
            await dead.stop()
            await bus.stop()


async def test_tcp_board_goes_away_and_comes_back() -> None:
    sim = RelayBoardSim([1])
    port = free_port()
    cfg = ModbusTcpBusConfig.model_validate({"type": "modbus_tcp", "host": "127.0.0.1", "port": port, **FAST})
    bus = ModbusBus("b0", cfg)
    door = Door("d1", door_cfg(exit_button_input=0), env_for(bus))  # polling notices the outage
    changes: list[bool] = []
    bus.on_status(lambda d, online, err: changes.append(online))
    try:
        async with tcp_board(sim, port):
            await bus.start()
            await door.start()
            await door.pulse()
        assert await eventually(lambda: not door.online)
        with pytest.raises(DeviceUnavailable):
            await door.pulse()
        async with tcp_board(sim, port):
            assert await eventually(lambda: door.online)
            await door.pulse()
            assert sim.coil(1, 2)
            assert await eventually(lambda: not sim.coil(1, 2))
        assert changes == [False, True]
    finally:
        await door.stop()
        await bus.stop()


async def test_a_door_started_again_after_stop_still_restores_its_state_when_its_board_returns(
    tcp_setup: tuple[RelayBoardSim, ModbusBus],
) -> None:
    """stop() drops the door's bus listener (a reload must leave none behind); start() takes it again,
    so a rebooted board (coils off) still gets the door's hold_open written back."""
    sim, bus = tcp_setup
    door = Door("d1", door_cfg(exit_button_input=0), env_for(bus))  # polled: the outage is noticed
    await door.start()
    await door.stop()
    await door.start()
    try:
        await door.set_mode("hold_open")
        assert sim.coil(1, 2)
        sim.remove_device(1)
        assert await eventually(lambda: not door.online)
        sim.add_device(1)  # back after a power cycle: every coil off
        assert await eventually(lambda: door.online)
        assert await eventually(lambda: sim.coil(1, 2))  # written again by the door's status listener
    finally:
        await door.stop()
    assert not sim.coil(1, 2)
