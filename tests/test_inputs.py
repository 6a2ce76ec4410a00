"""Board inputs (issue 7): one FC02 read per board per cycle shared by every device; debounced changes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from drivers.door import Door, DoorConfig
from drivers.inputs import InputHub
from drivers.modbus import ModbusTcpBusConfig
from drivers.modbus_bus import ModbusBus
from edge.sim.relay_board import RelayBoardSim
from tests.support.devices import env_for
from tests.support.modbus import eventually, free_port, tcp_board


@pytest.fixture
async def board() -> AsyncIterator[tuple[RelayBoardSim, ModbusBus]]:
    sim = RelayBoardSim([1])
    port = free_port()
    cfg = ModbusTcpBusConfig.model_validate(
        {
            "type": "modbus_tcp",
            "host": "127.0.0.1",
            "port": port,
            "poll_interval_s": 0.05,
            "debounce_ms": 300,
            "keepalive_s": 0,
        }
    )
    async with tcp_board(sim, port):
        bus = ModbusBus("b0", cfg)
        await bus.start()
        try:
            yield sim, bus
        finally:
            await bus.stop()


def fc02(sim: RelayBoardSim) -> int:
    return len([r for r in sim.requests if r.function_code == 2])


async def test_one_read_per_board_per_cycle_for_every_device_on_it(board: tuple[RelayBoardSim, ModbusBus]) -> None:
    sim, bus = board
    env = env_for(bus)
    cfgs = [
        DoorConfig(bus="b0", device_id=1, zone="z", lock_coil=i, door_sensor_input=i, exit_button_input=4 + i)
        for i in range(3)
    ]
    doors = [Door(f"d{i}", c, env) for i, c in enumerate(cfgs)]
    for d in doors:
        await d.start()
    try:
        assert await eventually(lambda: fc02(sim) >= 5)
        n0 = fc02(sim)
        await asyncio.sleep(1.0)
        reads = fc02(sim) - n0
        # three doors with two inputs each on one board: ~20 cycles in 1 s at 0.05 s, one read a cycle
        assert 5 <= reads <= 25, f"{reads} FC02 reads in 1 s for one board"
    finally:
        for d in doors:
            await d.stop()


async def test_a_change_shorter_than_debounce_is_not_reported(board: tuple[RelayBoardSim, ModbusBus]) -> None:
    sim, bus = board
    hub = InputHub({"b0": bus})
    seen: list[tuple[bool, bool]] = []
    hub.watch("b0", 1, 2, lambda v, first: seen.append((v, first)))
    await hub.start()
    try:
        assert await eventually(lambda: seen == [(False, True)])
        sim.set_input(1, 2, True)
        n = fc02(sim)
        assert await eventually(lambda: fc02(sim) > n, 2)  # the glitch was read: its confirmation is due
        sim.set_input(1, 2, False)  # back within the 300 ms debounce
        await asyncio.sleep(0.8)
        assert seen == [(False, True)], "a glitch shorter than debounce_ms was reported"
        sim.set_input(1, 2, True)
        assert await eventually(lambda: seen == [(False, True), (True, False)], 3)
        assert hub.value("b0", 1, 2) is True
    finally:
        await hub.stop()


async def test_a_board_that_stops_answering_is_reported_and_its_values_restart_as_first(
    board: tuple[RelayBoardSim, ModbusBus],
) -> None:
    sim, bus = board
    hub = InputHub({"b0": bus})
    seen: list[tuple[bool, bool]] = []
    lost: list[bool] = []
    hub.watch("b0", 1, 0, lambda v, first: seen.append((v, first)))
    hub.on_lost("b0", 1, lambda is_lost, err: lost.append(is_lost))
    await hub.start()
    try:
        assert await eventually(lambda: seen == [(False, True)])
        sim.remove_device(1)
        assert await eventually(lambda: lost == [True], 10)
        sim.add_device(1)
        sim.set_input(1, 0, True)
        assert await eventually(lambda: lost == [True, False], 40)
        assert await eventually(lambda: seen[-1] == (True, True), 5)  # a state after the outage, not a change
    finally:
        await hub.stop()


async def test_a_change_to_the_urgent_value_is_reported_at_first_sight(
    board: tuple[RelayBoardSim, ModbusBus],
) -> None:
    """The fire input: "fire" counts at once (a glitch errs toward release), its end is debounced."""
    sim, bus = board
    hub = InputHub({"b0": bus})
    seen: list[tuple[bool, bool]] = []
    hub.watch("b0", 1, 3, lambda v, first: seen.append((v, first)), urgent=True)
    await hub.start()
    try:
        assert await eventually(lambda: seen == [(False, True)])
        sim.set_input(1, 3, True)
        n = fc02(sim)
        assert await eventually(lambda: fc02(sim) > n, 2)
        assert await eventually(lambda: seen == [(False, True), (True, False)], 0.2)  # no 300 ms wait
        sim.set_input(1, 3, False)
        n = fc02(sim)
        assert await eventually(lambda: fc02(sim) > n, 2)
        sim.set_input(1, 3, True)  # back within the debounce: the end of the fire never counted
        await asyncio.sleep(0.8)
        assert seen == [(False, True), (True, False)]
    finally:
        await hub.stop()


async def test_a_released_scope_hears_nothing_and_a_late_watcher_gets_the_state(
    board: tuple[RelayBoardSim, ModbusBus],
) -> None:
    """Reload (edge/reload.py): a rebuilt device's old watches go with it; the new one learns the
    current input state at once instead of waiting for a change."""
    from drivers.inputs import ScopedInputs

    sim, bus = board
    hub = InputHub({"b0": bus})
    old_scope, old_seen = ScopedInputs(hub), []
    old_scope.watch("b0", 1, 2, lambda v, first: old_seen.append((v, first)))
    sim.set_input(1, 2, True)
    await hub.start()
    try:
        assert await eventually(lambda: old_seen == [(True, True)])
        old_scope.release()
        new_seen: list[tuple[bool, bool]] = []
        ScopedInputs(hub).watch("b0", 1, 2, lambda v, first: new_seen.append((v, first)))
        assert await eventually(lambda: new_seen == [(True, True)])  # the state, before any change
        sim.set_input(1, 2, False)
        assert await eventually(lambda: new_seen[-1] == (False, False))
        assert old_seen == [(True, True)]  # the released watch heard none of it
        # a board nobody watches stops being polled
        hub.unwatch("b0", 1, 2, hub._boards[("b0", 1)].watchers[2][0])
        await asyncio.sleep(0.2)
        n0 = fc02(sim)
        await asyncio.sleep(0.5)
        assert fc02(sim) == n0
    finally:
        await hub.stop()
