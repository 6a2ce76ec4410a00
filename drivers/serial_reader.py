"""Line-oriented serial readers (QR scanners, RS-232/RS-485 card readers): config model and driver."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Terminator = Literal["CR", "LF", "CRLF", "TAB"]


class SerialReaderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["serial"]
    port: str
    baud: int = Field(9600, gt=0)
    terminators: list[Terminator] = Field(default_factory=lambda: ["CR", "LF", "CRLF"], min_length=1)
    max_line: int = Field(1024, ge=8, le=65536, description="longest accepted line, bytes")
    content: Literal["qr", "card"] = Field(description="qr: lines are tokens; card: card numbers")
    card_format: Literal["hex", "decimal"] = Field(
        "hex", description="card lines: hex UID or decimal number (no guessing: '12345678' is both)"
    )
    reopen_interval_s: float = Field(1.0, gt=0, description="how often to look for a vanished port")
