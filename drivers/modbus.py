"""Modbus buses (RTU over serial / RS-485, and TCP): config models.

A bus owns one pymodbus client; every device on it shares that client, so requests to one
RTU line are serialised. The bus scheduler lives in ``drivers/modbus_bus.py``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModbusRtuBusConfig(_Strict):
    type: Literal["modbus_rtu"]
    port: str = Field(description="serial device, e.g. /dev/ttyUSB0")
    baud: int = Field(9600, gt=0)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    timeout: float = Field(0.3, gt=0, le=10, description="seconds to wait for one reply")
    retries: int = Field(1, ge=0, le=5, description="extra attempts after a timeout")
    offline_after: int = Field(3, ge=1, description="consecutive failures that mark a device offline")
    probe_max_s: float = Field(30.0, gt=0, description="longest backoff between probes of an offline device")
    poll_interval_s: float = Field(0.2, gt=0, description="input polling period per device")
    probe_min_s: float = Field(0.5, gt=0, description="first backoff after a device goes offline")
    keepalive_s: float = Field(
        10.0, ge=0, description="probe an online device after this long without traffic (0: never)"
    )


class ModbusTcpBusConfig(_Strict):
    type: Literal["modbus_tcp"]
    host: str
    port: int = Field(502, gt=0, lt=65536)
    timeout: float = Field(0.5, gt=0, le=10)
    retries: int = Field(1, ge=0, le=5)
    offline_after: int = Field(3, ge=1)
    probe_max_s: float = Field(30.0, gt=0)
    poll_interval_s: float = Field(0.2, gt=0)
    probe_min_s: float = Field(0.5, gt=0)
    keepalive_s: float = Field(10.0, ge=0)


BusConfig = Annotated[ModbusRtuBusConfig | ModbusTcpBusConfig, Field(discriminator="type")]
