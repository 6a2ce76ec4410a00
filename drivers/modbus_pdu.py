"""Modbus wire pieces the bus scheduler uses: coil words, the raw FC05 PDU, FC15 requests with their echo
checks, the pymodbus client construction and short error reasons.

Kept apart from drivers/modbus_bus.py so the scheduler reads as scheduling; that module re-exports the
names other modules import from it (``COIL_ON``, ``COIL_OFF``, ``RawWriteCoil``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.bit_message import WriteMultipleCoilsRequest

from drivers.modbus import ModbusRtuBusConfig, ModbusTcpBusConfig

COIL_ON = 0xFF00
COIL_OFF = 0x0000
FC15_MAX_COILS = 0x07B0  # 1968: the most coils one FC15 request may carry (Modbus application spec)


class DeviceUnavailable(Exception):
    """The device is offline or did not answer; ``str()`` is a short reason."""


class ModbusRequestError(DeviceUnavailable):
    """The device answered, but with a Modbus exception or a wrong echo (it is online; config error?)."""


class RawWriteCoil(ModbusPDU):
    """FC05 carrying any 16-bit value.

    pymodbus' own WriteSingleCoilRequest reduces the value to a bool, but common relay boards use
    FC05 to 0x0200+n with a time in 100 ms units ("flash"). Used for plain on/off writes too, so the
    client decoder needs only this one FC05 class.
    """

    function_code = 5
    rtu_frame_size = 8

    def __init__(self, address: int = 0, value: int = 0, dev_id: int = 0, transaction_id: int = 0) -> None:
        super().__init__(dev_id=dev_id, transaction_id=transaction_id, address=address)
        self.value = value

    def encode(self) -> bytes:
        self.verifyAddress()
        return struct.pack(">HH", self.address, self.value & 0xFFFF)

    def decode(self, data: bytes) -> None:
        self.address, self.value = struct.unpack(">HH", data[:4])
        self.bits = [self.value == COIL_ON]


def fc05_request(device_id: int, address: int, raw_value: int) -> Callable[[], ModbusPDU]:
    """A factory of FC05 requests (the bus builds a fresh PDU per attempt)."""
    if not 0 <= raw_value <= 0xFFFF:
        raise ValueError(f"FC05 value out of range: {raw_value}")
    return lambda: RawWriteCoil(address=address, value=raw_value, dev_id=device_id)


def check_fc05_echo(resp: ModbusPDU, address: int, raw_value: int) -> None:
    if getattr(resp, "address", None) != address or getattr(resp, "value", None) != raw_value:
        raise ModbusRequestError(f"bad echo for coil {address}")


def fc15_request(device_id: int, address: int, values: Sequence[bool]) -> Callable[[], ModbusPDU]:
    """A factory of FC15 requests writing ``values`` to the coils from ``address`` on."""
    bits = [bool(v) for v in values]
    if not 1 <= len(bits) <= FC15_MAX_COILS:
        raise ValueError(f"FC15 writes 1..{FC15_MAX_COILS} coils, not {len(bits)}")
    if not 0 <= address <= 0xFFFF - len(bits) + 1:
        raise ValueError(f"FC15 coils {address}..{address + len(bits) - 1} out of range")
    return lambda: WriteMultipleCoilsRequest(address=address, bits=list(bits), dev_id=device_id)


def check_fc15_echo(resp: ModbusPDU, address: int, count: int) -> None:
    """An FC15 reply echoes the start address and the coil count (not the values)."""
    if getattr(resp, "address", None) != address or getattr(resp, "count", None) != count:
        raise ModbusRequestError(f"bad echo for coils {address}..{address + count - 1}")


def make_client(
    bus_id: str, cfg: ModbusRtuBusConfig | ModbusTcpBusConfig, trace_packet: Callable[[bool, bytes], bytes]
) -> AsyncModbusSerialClient | AsyncModbusTcpClient:
    # retries=0: the worker retries, so a retry queues behind other devices' work; pymodbus' timeout
    # is only a guard (the worker keeps its own). reconnect_delay=0: the worker reconnects on demand.
    common = {"timeout": cfg.timeout, "retries": 0, "reconnect_delay": 0, "name": bus_id}
    client: AsyncModbusSerialClient | AsyncModbusTcpClient
    if isinstance(cfg, ModbusRtuBusConfig):
        client = AsyncModbusSerialClient(
            cfg.port,
            baudrate=cfg.baud,
            parity=cfg.parity,
            stopbits=cfg.stopbits,
            bytesize=cfg.bytesize,
            trace_packet=trace_packet,
            **common,  # type: ignore[arg-type]
        )
    else:
        client = AsyncModbusTcpClient(
            cfg.host,
            port=cfg.port,
            trace_packet=trace_packet,
            **common,  # type: ignore[arg-type]
        )
    client.register(RawWriteCoil)
    # pymodbus drops a TCP link after retries+3 unanswered requests; one dead unit behind a gateway
    # must not cut off its neighbours, so that is disabled and device health is tracked here instead.
    client.set_max_no_responses(1 << 30)
    return client


def reason(exc: BaseException) -> str:
    """A short reason for a failed request (the device's ``error`` in health reports)."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ModbusException):
        text = str(exc)
        if "No response" in text:
            return "no response"
        return text.split("]", 1)[-1].strip()[:80] or type(exc).__name__
    return (str(exc) or type(exc).__name__)[:80]
