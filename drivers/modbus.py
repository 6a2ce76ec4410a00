"""Modbus buses (RTU over serial / RS-485, and TCP): config models.

A bus owns one pymodbus client; every device on it shares that client, so requests to one
RTU line are serialised. The bus scheduler lives in ``drivers/modbus_bus.py``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


PROBE_TIMEOUT_DEFAULT_S = 0.1
"""A live relay board answers a one-coil read in ~15 ms at 9600 baud plus its turnaround (typically
< 30 ms), so 0.1 s still leaves a 2-3x margin; every probe of a dead unit holds the line this long."""

_PROBE_TIMEOUT_DOC = (
    "seconds to wait for a probe of an offline device or a poll of one whose last attempt failed "
    f"(default {PROBE_TIMEOUT_DEFAULT_S}, never more than timeout): it bounds how long a dead unit holds "
    "the line. It should exceed the slowest healthy reply; a device seen answering later is waited for "
    "with timeout from then on (and a modbus_late_reply warning is logged)"
)


def _probe_timeout(timeout: float, chosen: float | None) -> float:
    return min(timeout, PROBE_TIMEOUT_DEFAULT_S if chosen is None else chosen)


class ModbusRtuBusConfig(_Strict):
    type: Literal["modbus_rtu"]
    port: str = Field(description="serial device, e.g. /dev/ttyUSB0")
    baud: int = Field(9600, gt=0)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    timeout: float = Field(0.3, gt=0, le=10, description="seconds to wait for one reply")
    probe_timeout: float | None = Field(None, gt=0, le=10, description=_PROBE_TIMEOUT_DOC)
    retries: int = Field(
        1,
        ge=0,
        le=5,
        description="extra attempts of an actuation after a timeout, only while the device had not "
        "failed before it; queued behind other devices' work. Polls and probes are not retried",
    )
    offline_after: int = Field(
        3, ge=1, description="consecutive failed attempts (timeouts) that mark a device offline"
    )
    probe_max_s: float = Field(30.0, gt=0, description="longest backoff between probes of an offline device")
    poll_interval_s: float = Field(
        0.2, gt=0, description="input polling period: one FC02 read per board per cycle, shared by its devices"
    )
    debounce_ms: int = Field(
        50, ge=0, le=5000, description="an input change counts once it has held this long (a second read)"
    )
    probe_min_s: float = Field(0.5, gt=0, description="first backoff after a device goes offline")
    keepalive_s: float = Field(
        10.0, ge=0, description="probe an online device after this long without traffic (0: never)"
    )

    @property
    def probe_timeout_s(self) -> float:
        """The probe timeout in force: configured or the default, capped by ``timeout``."""
        return _probe_timeout(self.timeout, self.probe_timeout)


class ModbusTcpBusConfig(_Strict):
    type: Literal["modbus_tcp"]
    host: str
    port: int = Field(502, gt=0, lt=65536)
    timeout: float = Field(0.5, gt=0, le=10)
    probe_timeout: float | None = Field(None, gt=0, le=10, description=_PROBE_TIMEOUT_DOC)
    retries: int = Field(1, ge=0, le=5)
    offline_after: int = Field(3, ge=1)
    probe_max_s: float = Field(30.0, gt=0)
    poll_interval_s: float = Field(0.2, gt=0)
    debounce_ms: int = Field(50, ge=0, le=5000)
    probe_min_s: float = Field(0.5, gt=0)
    keepalive_s: float = Field(10.0, ge=0)

    @property
    def probe_timeout_s(self) -> float:
        """The probe timeout in force: configured or the default, capped by ``timeout``."""
        return _probe_timeout(self.timeout, self.probe_timeout)


BusConfig = Annotated[ModbusRtuBusConfig | ModbusTcpBusConfig, Field(discriminator="type")]
