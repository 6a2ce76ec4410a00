"""Simulated N-channel Modbus relay board(s) for tests, benchmarks and the demo.

Behaves like the common 8-channel RTU/TCP relay boards: coils 0..n-1 (FC01/FC05/FC15), discrete
inputs 0..n-1 (FC02), and the vendor FC05 commands 0x0200+n "flash on" (coil on, off again after
value x 100 ms) and 0x0400+n "flash off" (coil off, on again after the time). Units not in the set
stay silent, like a dead board on a real RS-485 line. Every coil write is recorded with a monotonic
timestamp so tests assert on what the board saw, not on what the client believes it sent; every
request, answered or not (a silent unit's too), is logged in ``requests`` so tests can assert on the
order in which the line carried them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.modbus_bus import COIL_OFF, COIL_ON, RawWriteCoil

log = structlog.get_logger(__name__)

FLASH_ON_BASE = 0x0200
FLASH_OFF_BASE = 0x0400


@dataclass(frozen=True)
class CoilWrite:
    """One coil write as the board saw it. ``value`` is the raw FC05 word (FC15 bits map to 0xFF00/0)."""

    t: float
    device_id: int
    address: int
    value: int
    function_code: int = 5

    @property
    def on(self) -> bool:
        return self.value == COIL_ON


@dataclass(frozen=True)
class RequestSeen:
    """One request as the server decoded it, in arrival order, whether or not its unit answers."""

    t: float
    device_id: int
    function_code: int
    address: int


@dataclass
class _Unit:
    coils: list[bool]
    inputs: list[bool]
    timers: dict[int, asyncio.TimerHandle] = field(default_factory=dict)


class RelayBoardSim:
    """One or more relay boards (unit ids) answering on TCP and/or RTU servers."""

    def __init__(self, device_ids: Iterable[int] = (1,), channels: int = 8) -> None:
        self.channels = channels
        self._units: dict[int, _Unit] = {}
        for d in device_ids:
            self.add_device(d)
        self.writes: list[CoilWrite] = []
        self.requests: list[RequestSeen] = []
        self._delays: dict[int, float] = {}
        self._callbacks: list[Callable[[CoilWrite], None]] = []

    # ------------------------------------------------------------ simulator API
    def add_device(self, device_id: int) -> None:
        """Plug a board in (or bring a dead one back). Coils and inputs start off."""
        if device_id not in self._units:
            self._units[device_id] = _Unit([False] * self.channels, [False] * self.channels)

    def remove_device(self, device_id: int) -> None:
        """Unplug a board: it stops answering."""
        unit = self._units.pop(device_id, None)
        if unit is not None:
            for h in unit.timers.values():
                h.cancel()

    def set_delay(self, device_id: int, seconds: float) -> None:
        """Make a unit a slow board: it acts at once but replies ``seconds`` later (0: at once).

        pymodbus' server keeps one current request per link, so a late reply takes the unit id and
        transaction id of a request that came in meanwhile: faithful on RTU when the same unit is asked
        again (RTU has no transaction id), not for TCP or for another unit.
        """
        self._delays[device_id] = seconds

    async def reply_delay(self, device_id: int) -> None:
        if seconds := self._delays.get(device_id):
            await asyncio.sleep(seconds)

    def coil(self, device_id: int, n: int) -> bool:
        return self._units[device_id].coils[n]

    def set_coil(self, device_id: int, n: int, value: bool) -> None:
        """Force a relay state from the simulator side (not recorded as a write)."""
        self._units[device_id].coils[n] = value

    def set_input(self, device_id: int, n: int, value: bool) -> None:
        self._units[device_id].inputs[n] = value

    def input(self, device_id: int, n: int) -> bool:
        return self._units[device_id].inputs[n]

    def device_ids(self) -> list[int]:
        """The units plugged in (answering)."""
        return sorted(self._units)

    def on_write(self, cb: Callable[[CoilWrite], None]) -> None:
        self._callbacks.append(cb)

    def requests_to(self, device_id: int) -> list[RequestSeen]:
        return [r for r in self.requests if r.device_id == device_id]

    def writes_to(self, device_id: int, address: int | None = None) -> list[CoilWrite]:
        return [
            w for w in self.writes if w.device_id == device_id and (address is None or w.address == address)
        ]

    # ------------------------------------------------------------ servers
    async def serve_tcp(self, host: str, port: int, *, started: asyncio.Event | None = None) -> None:
        """Serve Modbus TCP until cancelled; ``started`` is set once listening."""
        server = ModbusTcpServer(
            _placeholder(), address=(host, port), ignore_missing_devices=True, custom_pdu=[_SimWriteCoil]
        )
        await self._run(server, started)

    async def serve_rtu(
        self, port: str, baudrate: int = 9600, *, started: asyncio.Event | None = None
    ) -> None:
        """Serve Modbus RTU on a serial port until cancelled."""
        server = ModbusSerialServer(
            _placeholder(),
            port=port,
            baudrate=baudrate,
            ignore_missing_devices=True,
            custom_pdu=[_SimWriteCoil],
        )
        await self._run(server, started)

    async def _run(self, server: ModbusTcpServer | ModbusSerialServer, started: asyncio.Event | None) -> None:
        # pymodbus 3.16 servers only accept its SimDevice datastore; requests reach the context through
        # async_getValues/async_setValues, so the board's own state stands in for it.
        server.context = _BoardContext(self)  # type: ignore[assignment]
        await server.serve_forever(background=True)
        if started is not None:
            started.set()
        try:
            await asyncio.Future()
        finally:
            await server.shutdown()

    # ------------------------------------------------------------ board logic
    def _unit(self, device_id: int) -> _Unit:
        unit = self._units.get(device_id)
        if unit is None:
            raise NoSuchIdException(f"no unit {device_id}")
        return unit

    def _seen(self, device_id: int, function_code: int, address: int) -> None:
        self.requests.append(RequestSeen(time.monotonic(), device_id, function_code, address))

    def _record(self, device_id: int, address: int, value: int, fc: int) -> None:
        w = CoilWrite(time.monotonic(), device_id, address, value, fc)
        self.writes.append(w)
        log.debug("sim_coil_write", device_id=device_id, address=address, value=value, fc=fc)
        for cb in list(self._callbacks):
            try:
                cb(w)
            except Exception:
                log.exception("sim_write_callback_failed")

    def _set(self, unit: _Unit, n: int, value: bool) -> None:
        timer = unit.timers.pop(n, None)
        if timer is not None:
            timer.cancel()
        unit.coils[n] = value

    def write_single(self, device_id: int, address: int, value: int) -> ExcCodes | None:
        """FC05 as the board interprets it; returns an exception code or None."""
        self._seen(device_id, 5, address)
        unit = self._unit(device_id)
        base, n = address & 0xFF00, address & 0x00FF
        if n >= self.channels or base not in (0, FLASH_ON_BASE, FLASH_OFF_BASE):
            return ExcCodes.ILLEGAL_ADDRESS
        if base == 0 and value not in (COIL_ON, COIL_OFF):
            return ExcCodes.ILLEGAL_VALUE
        self._record(device_id, address, value, 5)
        if base == 0:
            self._set(unit, n, value == COIL_ON)
            return None
        first = base == FLASH_ON_BASE
        self._set(unit, n, first)
        unit.timers[n] = asyncio.get_running_loop().call_later(
            value * 0.1, self._flash_end, unit, n, not first
        )
        return None

    def _flash_end(self, unit: _Unit, n: int, value: bool) -> None:
        unit.timers.pop(n, None)
        unit.coils[n] = value

    def write_multiple(self, device_id: int, address: int, values: Sequence[bool]) -> ExcCodes | None:
        self._seen(device_id, 15, address)
        unit = self._unit(device_id)
        if address + len(values) > self.channels:
            return ExcCodes.ILLEGAL_ADDRESS
        for i, v in enumerate(values):
            self._record(device_id, address + i, COIL_ON if v else COIL_OFF, 15)
            self._set(unit, address + i, bool(v))
        return None

    def read_bits(self, device_id: int, func_code: int, address: int, count: int) -> list[bool] | ExcCodes:
        self._seen(device_id, func_code, address)
        unit = self._unit(device_id)
        bits = unit.coils if func_code == 1 else unit.inputs
        if func_code not in (1, 2) or address + count > len(bits):
            return ExcCodes.ILLEGAL_ADDRESS
        return list(bits[address : address + count])


class _BoardContext:
    """The slice of pymodbus' server context the request handler uses, backed by a RelayBoardSim."""

    def __init__(self, sim: RelayBoardSim) -> None:
        self.sim = sim

    def device_ids(self) -> list[int]:
        return list(self.sim._units)

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[bool] | ExcCodes:
        bits = self.sim.read_bits(device_id, func_code, address, count)
        await self.sim.reply_delay(device_id)
        return bits

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: Sequence[Any]
    ) -> ExcCodes | None:
        if func_code != 15:
            return ExcCodes.ILLEGAL_FUNCTION
        rc = self.sim.write_multiple(device_id, address, values)
        await self.sim.reply_delay(device_id)
        return rc


class _SimWriteCoil(RawWriteCoil):
    """Server side of FC05 keeping the raw value (pymodbus' own class reduces it to a bool)."""

    async def datastore_update(self, context: Any, device_id: int) -> ModbusPDU:
        rc = context.sim.write_single(device_id, self.address, self.value)
        await context.sim.reply_delay(device_id)
        if rc is not None:
            return ExceptionResponse(self.function_code, rc)
        return _SimWriteCoil(address=self.address, value=self.value, dev_id=self.dev_id)


def _placeholder() -> list[SimDevice]:
    """A datastore that satisfies the server constructor; replaced by _BoardContext before serving."""
    return [SimDevice(id=0, simdata=[SimData(0, values=0, datatype=DataType.REGISTERS)])]
