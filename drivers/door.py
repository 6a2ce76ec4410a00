"""Door controller on a Modbus relay board: lock relay, door sensor, exit button.

Config model here; the driver is below it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class DoorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bus: str = Field(description="id of a bus in `buses`")
    device_id: int = Field(ge=0, le=247, description="Modbus unit / slave address")
    zone: str = Field(min_length=1, description="zone a credential must carry to open this door")
    lock_coil: int = Field(0, ge=0, le=255, description="relay channel (0-based) driving the lock")
    pulse_ms: int = Field(3000, ge=100, le=25_500, description="how long the lock is released")
    pulse_mode: Literal["coil", "flash"] = Field(
        "coil",
        description="coil: FC05 on, wait, FC05 off. flash: one FC05 to 0x0200+n, time in 100 ms units "
        "(common 8-channel RTU boards); the board switches itself off",
    )
    readers: list[str] = Field(default_factory=list, description="reader ids that open this door")
    door_sensor_input: int | None = Field(None, ge=0, description="discrete input of the door contact")
    door_sensor_closed_when: bool = Field(True, description="input value meaning 'door closed'")
    exit_button_input: int | None = Field(None, ge=0, description="discrete input of the exit button")
