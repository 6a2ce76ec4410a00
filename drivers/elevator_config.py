"""The `elevators` section's config model: a car's floor, hall-call and select relays, free floors.

Beside drivers/elevator.py, which registers it with the Elevator device."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from edge.limits import FLOOR_MAX, FLOOR_MIN, SECONDS_MAX
from edge.model import Window
from edge.store_codec import _dec_windows, _windows

Floor = Annotated[int, Field(ge=FLOOR_MIN, le=FLOOR_MAX)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RelayOutput(_Strict):
    bus: str = Field(description="id of a bus in `buses`")
    device_id: int = Field(ge=0, le=247, description="Modbus unit / slave address")
    coil: int = Field(ge=0, le=255, description="relay channel (0-based)")


class FreeFloor(_Strict):
    floor: Floor
    windows: list[dict[str, Any]] | None = Field(
        None,
        description='weekly windows as whitelist entries\' ({days: [1..7], start: "07:00", end: "22:00"})',
    )
    _parsed: tuple[Window, ...] = PrivateAttr(default=())

    @field_validator("windows")
    @classmethod
    def _check_windows(cls, v: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        if v is not None:
            _windows(v)  # edge/store_codec.py's rules; raises InvalidEntry (a ValueError) naming the field
        return v

    @model_validator(mode="after")
    def _parse(self) -> FreeFloor:
        self._parsed = () if self.windows is None else _dec_windows(_windows(self.windows))
        return self

    @property
    def parsed_windows(self) -> tuple[Window, ...]:
        return self._parsed


class ElevatorConfig(_Strict):
    zone: str = Field(min_length=1, description="zone a credential must carry to use this car")
    floor_outputs: dict[Floor, RelayOutput] = Field(
        min_length=1, description="floor -> the relay enabling its button; the keys are the car's floors"
    )
    hall_call_outputs: dict[Floor, RelayOutput] = Field(
        default_factory=dict, description="floor -> relay wired to that landing's call button"
    )
    enable_when: Literal["energised", "de-energised"] = Field(
        "energised",
        description="energised: relay on enables the button; de-energised: NC wiring, relay on disables "
        "it (a dead box frees every button)",
    )
    grant_s: float = Field(10.0, gt=0, le=SECONDS_MAX, description="how long granted floors stay enabled")
    free_floors: list[FreeFloor] = Field(
        default_factory=list, description="always enabled (lobby): a floor, or {floor, windows}"
    )
    auto_select: bool = Field(
        False, description="a grant of exactly one floor also presses its button (层控)"
    )
    select_outputs: dict[Floor, RelayOutput] = Field(
        default_factory=dict, description="floor -> relay across that floor's button, for auto_select"
    )
    pulse_ms: int = Field(
        500, ge=100, le=25_500, description="how long a select or hall-call relay is pressed"
    )
    readers: list[str] = Field(default_factory=list, description="reader ids in this car")

    @field_validator("free_floors", mode="before")
    @classmethod
    def _plain_floors(cls, v: Any) -> Any:
        return [{"floor": f} if type(f) is int else f for f in v] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _floors_known(self) -> ElevatorConfig:
        car = set(self.floor_outputs)
        for name in ("hall_call_outputs", "select_outputs"):
            extra = sorted(set(getattr(self, name)) - car)
            if extra:
                raise ValueError(f"{name}: floors {extra} are not in floor_outputs")
        free = [f.floor for f in self.free_floors]
        if sorted(set(free) - car):
            raise ValueError(f"free_floors: floors {sorted(set(free) - car)} are not in floor_outputs")
        if len(set(free)) != len(free):
            raise ValueError("free_floors: a floor is listed twice")
        if self.auto_select and not self.select_outputs:
            raise ValueError("auto_select needs select_outputs (the relays that press the buttons)")
        return self

    def _all(self) -> Iterable[tuple[str, int, RelayOutput]]:
        for name in ("floor_outputs", "hall_call_outputs", "select_outputs"):
            for floor, out in getattr(self, name).items():
                yield name, floor, out

    def outputs(self) -> list[tuple[str, int, int, tuple[str, int]]]:
        """(bus, unit, coil, key path) of every relay it drives, for the config's one-driver check."""
        return [(o.bus, o.device_id, o.coil, (name, floor)) for name, floor, o in self._all()]

    def bus_refs(self) -> list[tuple[tuple[Any, ...], str]]:
        return [((name, floor, "bus"), o.bus) for name, floor, o in self._all()]
