"""The simulated relay board seen through a plain pymodbus client (what any Modbus master would see)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from drivers.modbus_bus import COIL_OFF, COIL_ON, RawWriteCoil
from edge.sim.relay_board import CoilWrite, RelayBoardSim
from tests.support.modbus import eventually, free_port, rtu_board, tcp_board
from tests.support.ptys import PtyPair


@pytest.fixture
async def board() -> AsyncIterator[tuple[RelayBoardSim, AsyncModbusTcpClient]]:
    sim = RelayBoardSim([1, 3])
    port = free_port()
    async with tcp_board(sim, port):
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=0.3, retries=0, reconnect_delay=0)
        client.register(RawWriteCoil)
        assert await client.connect()
        try:
            yield sim, client
        finally:
            client.close()


async def test_coils_and_inputs(board: tuple[RelayBoardSim, AsyncModbusTcpClient]) -> None:
    sim, client = board
    seen: list[CoilWrite] = []
    sim.on_write(seen.append)

    rr = await client.write_coil(4, True, device_id=3)
    assert not rr.isError()
    assert sim.coil(3, 4) and not sim.coil(1, 4)  # units are independent
    rr = await client.write_coils(0, [True, False, True], device_id=1)
    assert not rr.isError()
    rr = await client.read_coils(0, count=8, device_id=1)
    assert rr.bits[:8] == [True, False, True, False, False, False, False, False]

    sim.set_input(1, 6, True)
    rr = await client.read_discrete_inputs(0, count=8, device_id=1)
    assert rr.bits[:8] == [False] * 6 + [True, False]

    assert [(w.device_id, w.address, w.value, w.function_code) for w in sim.writes] == [
        (3, 4, COIL_ON, 5),
        (1, 0, COIL_ON, 15),
        (1, 1, COIL_OFF, 15),
        (1, 2, COIL_ON, 15),
    ]
    assert seen == sim.writes
    assert all(a.t <= b.t for a, b in zip(sim.writes, sim.writes[1:], strict=False))


async def test_illegal_address_and_value(board: tuple[RelayBoardSim, AsyncModbusTcpClient]) -> None:
    sim, client = board
    rr = await client.write_coil(8, True, device_id=1)  # channels are 0..7
    assert rr.isError()
    rr = await client.execute(False, RawWriteCoil(address=1, value=0x1234, dev_id=1))
    assert rr.isError()
    assert sim.writes == []


async def test_flash_on_and_flash_off(board: tuple[RelayBoardSim, AsyncModbusTcpClient]) -> None:
    sim, client = board
    rr = await client.execute(False, RawWriteCoil(address=0x0201, value=2, dev_id=1))
    assert not rr.isError() and (rr.address, rr.value) == (0x0201, 2)  # the board echoes the request
    assert sim.coil(1, 1)
    assert await eventually(lambda: not sim.coil(1, 1))

    sim.set_coil(1, 7, True)
    await client.execute(False, RawWriteCoil(address=0x0407, value=2, dev_id=1))
    assert not sim.coil(1, 7)
    assert await eventually(lambda: sim.coil(1, 7))


async def test_plain_write_cancels_a_running_flash(board: tuple[RelayBoardSim, AsyncModbusTcpClient]) -> None:
    sim, client = board
    await client.execute(False, RawWriteCoil(address=0x0200, value=1, dev_id=1))
    await client.write_coil(0, True, device_id=1)  # e.g. hold_open during a flash pulse
    rr = await client.read_coils(0, count=1, device_id=1)
    assert rr.bits[0]
    await client.execute(False, RawWriteCoil(address=0x0201, value=1, dev_id=1))
    assert await eventually(lambda: not sim.coil(1, 1))  # a control: the flash timer does fire
    assert sim.coil(1, 0)


async def test_unknown_unit_stays_silent(board: tuple[RelayBoardSim, AsyncModbusTcpClient]) -> None:
    sim, client = board
    with pytest.raises(ModbusIOException):
        await client.write_coil(0, True, device_id=2)
    assert sim.writes == []
    sim.add_device(2)
    rr = await client.write_coil(0, True, device_id=2)
    assert not rr.isError() and sim.coil(2, 0)
    sim.remove_device(2)
    with pytest.raises(ModbusIOException):
        await client.read_coils(0, count=1, device_id=2)


async def test_rtu_server_on_pty(pty_pair: PtyPair) -> None:
    sim = RelayBoardSim([5])
    async with rtu_board(sim, str(pty_pair.a), baudrate=19200):
        client = AsyncModbusSerialClient(
            str(pty_pair.b), baudrate=19200, timeout=0.3, retries=0, reconnect_delay=0
        )
        client.register(RawWriteCoil)
        assert await client.connect()
        try:
            rr = await client.execute(False, RawWriteCoil(address=0x0203, value=1, dev_id=5))
            assert not rr.isError()
            assert sim.coil(5, 3)
            sim.set_input(5, 1, True)
            rr = await client.read_discrete_inputs(0, count=2, device_id=5)
            assert rr.bits[:2] == [False, True]
            with pytest.raises(ModbusIOException):
                await client.read_coils(0, count=1, device_id=6)
        finally:
            client.close()
    assert [(w.device_id, w.address, w.value) for w in sim.writes] == [(5, 0x0203, 1)]
    assert await eventually(lambda: not sim.coil(5, 3))  # the flash timer switches it off
