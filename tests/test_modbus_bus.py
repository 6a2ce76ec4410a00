"""ModbusBus against real pymodbus servers (the simulated relay board) over TCP and RTU-over-pty."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from drivers.modbus import ModbusRtuBusConfig, ModbusTcpBusConfig
from drivers.modbus_bus import COIL_OFF, COIL_ON, DeviceUnavailable, ModbusBus, ModbusRequestError
from edge.sim.relay_board import RelayBoardSim
from tests.support.modbus import eventually, free_port, rtu_board, tcp_board
from tests.support.ptys import PtyPair

FAST = {"timeout": 0.15, "retries": 1, "offline_after": 2, "probe_min_s": 0.1, "probe_max_s": 0.4}


def rtu_cfg(port: str, **kw: object) -> ModbusRtuBusConfig:
    return ModbusRtuBusConfig.model_validate({"type": "modbus_rtu", "port": port, **FAST, **kw})


def tcp_cfg(port: int, **kw: object) -> ModbusTcpBusConfig:
    return ModbusTcpBusConfig.model_validate(
        {"type": "modbus_tcp", "host": "127.0.0.1", "port": port, **FAST, **kw}
    )


class Status:
    def __init__(self, bus: ModbusBus) -> None:
        self.seen: list[tuple[int, bool, str | None]] = []
        bus.on_status(lambda d, online, err: self.seen.append((d, online, err)))

    def has(self, device_id: int, online: bool) -> bool:
        return any(d == device_id and o == online for d, o, _ in self.seen)


@pytest.fixture
async def tcp_bus() -> AsyncIterator[tuple[RelayBoardSim, ModbusBus]]:
    sim = RelayBoardSim([1])
    port = free_port()
    async with tcp_board(sim, port):
        bus = ModbusBus("tcp0", tcp_cfg(port))
        await bus.start()
        try:
            yield sim, bus
        finally:
            await bus.stop()


async def test_tcp_coil_write_and_inputs(tcp_bus: tuple[RelayBoardSim, ModbusBus]) -> None:
    sim, bus = tcp_bus
    await bus.write_coil(1, 3, True)
    assert sim.coil(1, 3)
    await bus.write_coil(1, 3, False)
    assert not sim.coil(1, 3)
    assert [w.value for w in sim.writes_to(1, 3)] == [COIL_ON, COIL_OFF]

    sim.set_input(1, 5, True)
    assert await bus.read_discrete_inputs(1, 4, 3) == [False, True, False]
    assert bus.is_online(1)


async def test_exception_reply_is_an_error_but_device_stays_online(
    tcp_bus: tuple[RelayBoardSim, ModbusBus],
) -> None:
    sim, bus = tcp_bus
    for _ in range(3):
        with pytest.raises(ModbusRequestError):
            await bus.write_coil(1, 40, True)  # the board has 8 channels
    assert bus.is_online(1)
    await bus.write_coil(1, 0, True)
    assert sim.coil(1, 0)


async def test_urgent_write_goes_ahead_of_queued_polls(tcp_bus: tuple[RelayBoardSim, ModbusBus]) -> None:
    sim, bus = tcp_bus
    done_reads: list[int] = []
    reads_done_when_written: list[int] = []
    sim.on_write(lambda w: reads_done_when_written.append(len(done_reads)))

    async def read(i: int) -> None:
        await bus.read_discrete_inputs(1, 0, 8)
        done_reads.append(i)

    polls = [asyncio.create_task(read(i)) for i in range(20)]
    await asyncio.sleep(0)  # the polls are queued first
    await bus.write_coil(1, 0, True)
    await asyncio.gather(*polls)
    assert len(done_reads) == 20
    assert reads_done_when_written[0] < 20


async def test_rtu_over_pty(pty_pair: PtyPair) -> None:
    sim = RelayBoardSim([1])
    async with rtu_board(sim, str(pty_pair.a)):
        bus = ModbusBus("rtu0", rtu_cfg(str(pty_pair.b)))
        await bus.start()
        try:
            await bus.write_coil(1, 2, True)
            await bus.write_coil_raw(1, 0x0202, 7)
            sim.set_input(1, 0, True)
            assert await bus.read_discrete_inputs(1, 0, 2) == [True, False]
        finally:
            await bus.stop()
    assert [(w.address, w.value) for w in sim.writes] == [(2, COIL_ON), (0x0202, 7)]


async def test_dead_device_beside_live_one_on_rtu(pty_pair: PtyPair) -> None:
    sim = RelayBoardSim([1])  # unit 2 is wired but dead: nobody answers for it
    async with rtu_board(sim, str(pty_pair.a)):
        bus = ModbusBus("rtu0", rtu_cfg(str(pty_pair.b)))
        status = Status(bus)
        bus.register_device(2)
        await bus.start()
        try:
            for _ in range(2):
                with pytest.raises(DeviceUnavailable):
                    await bus.write_coil(2, 0, True)
            assert status.has(2, False)
            assert not bus.is_online(2)
            with pytest.raises(DeviceUnavailable, match="offline"):
                await bus.write_coil(2, 0, True)  # fails fast, never reaches the line

            # Unit 1 keeps working while unit 2 is probed in the background.
            ok = 0
            for i in range(30):
                try:
                    await bus.write_coil(1, i % 8, i % 2 == 0)
                    ok += 1
                except DeviceUnavailable:
                    pass
                await asyncio.sleep(0.02)
            assert ok == 30
            assert len(sim.writes_to(1)) == 30
            assert bus.is_online(1)
            assert not status.has(1, False)

            sim.add_device(2)  # the board comes back
            assert await eventually(lambda: bus.is_online(2), timeout=10)
            assert status.seen[-1] == (2, True, None)
            await bus.write_coil(2, 0, True)
            assert sim.coil(2, 0)
        finally:
            await bus.stop()


async def test_serial_port_vanishing_does_not_kill_the_bus(pty_pair: PtyPair) -> None:
    sim = RelayBoardSim([1])
    bus = ModbusBus("rtu0", rtu_cfg(str(pty_pair.b), keepalive_s=0.1))
    status = Status(bus)
    bus.register_device(1)
    async with rtu_board(sim, str(pty_pair.a)):
        await bus.start()
        await bus.write_coil(1, 0, True)
    try:
        pty_pair.stop()  # USB adapter unplugged
        assert await eventually(lambda: status.has(1, False), timeout=10)
        with pytest.raises(DeviceUnavailable):
            await bus.write_coil(1, 0, False)

        pty_pair.start()  # plugged back in (new pty, same path)
        async with rtu_board(sim, str(pty_pair.a)):
            assert await eventually(lambda: bus.is_online(1), timeout=10)
            await bus.write_coil(1, 0, False)
            assert not sim.coil(1, 0)
    finally:
        await bus.stop()


async def test_tcp_server_restart_reconnects() -> None:
    sim = RelayBoardSim([1])
    port = free_port()
    bus = ModbusBus("tcp0", tcp_cfg(port, keepalive_s=0.1))
    status = Status(bus)
    bus.register_device(1)
    try:
        async with tcp_board(sim, port):
            await bus.start()
            await bus.write_coil(1, 1, True)
        assert await eventually(lambda: status.has(1, False), timeout=10)
        async with tcp_board(sim, port):
            assert await eventually(lambda: bus.is_online(1), timeout=10)
            await bus.write_coil(1, 1, False)
        assert [w.value for w in sim.writes_to(1, 1)] == [COIL_ON, COIL_OFF]
    finally:
        await bus.stop()


async def test_requests_fail_cleanly_when_stopped() -> None:
    bus = ModbusBus("tcp0", tcp_cfg(free_port()))
    with pytest.raises(DeviceUnavailable):
        await bus.write_coil(1, 0, True)
