"""What the simulated boards must offer a config, read from its models without a list of kinds.

Every model naming a board has ``bus`` and ``device_id`` (a door, a barrier, an elevator's relay
outputs, a fire input) and every device lists its relays in ``outputs()``, so walking the models
finds the units each bus needs and the device behind each relay. The world's inputs (a door contact,
a barrier loop, a fire contact) are recognised by the fields that name their polarity, so the boards
boot in the state of a quiet site: doors closed, loops clear, no fire.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from drivers.registry import SECTIONS
from edge.config import Config

Coil = tuple[str, int, int]  # (bus id, unit, coil)

# input field -> (field of the value meaning "active", whether a quiet site reads that value)
WORLD_INPUTS: dict[str, tuple[str, bool]] = {
    "door_sensor_input": ("door_sensor_closed_when", True),  # closed: the value meaning closed
    "loop_input": ("loop_present_when", False),  # no vehicle
    "input": ("active_when", False),  # no fire
}


@dataclass(frozen=True)
class WorldInput:
    """One input the world drives: ``owner`` is the device id or section, ``field`` its config key."""

    owner: str
    field: str
    bus: str
    unit: int
    input: int
    active_value: bool  # the board value meaning closed / vehicle present / fire
    label: str

    @property
    def resting(self) -> bool:
        return self.active_value if WORLD_INPUTS[self.field][1] else not self.active_value


@dataclass(frozen=True)
class Output:
    """The device behind a relay, and its key in the device's config (``lock_coil``, ("floor_outputs", 3))."""

    device: str
    key: Any
    model: Any


def models(cfg: Config) -> Iterator[tuple[str, Any]]:
    """(device id or section name, model) of every device and every extra section present."""
    for _section, dev_id, model in cfg.devices():
        yield dev_id, model
    for name in SECTIONS:
        sec = cfg.section(name)
        if sec is not None:
            yield name, sec


def _board_models(obj: Any) -> Iterator[Any]:
    """Every (sub)model of ``obj`` wired to a board: it has a str ``bus`` and an int ``device_id``."""
    if isinstance(obj, BaseModel):
        if isinstance(getattr(obj, "bus", None), str) and isinstance(getattr(obj, "device_id", None), int):
            yield obj
        for name in type(obj).model_fields:
            yield from _board_models(getattr(obj, name))
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _board_models(v)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _board_models(v)


def board_units(cfg: Config) -> dict[str, set[int]]:
    """bus id -> the units some device or section drives or reads there."""
    units: dict[str, set[int]] = {}
    for _owner, model in models(cfg):
        for sub in _board_models(model):
            units.setdefault(sub.bus, set()).add(sub.device_id)
        outputs = getattr(model, "outputs", None)
        for bus, unit, _coil, _key in outputs() if callable(outputs) else []:
            units.setdefault(bus, set()).add(unit)
    return units


def outputs(cfg: Config) -> dict[Coil, Output]:
    """(bus, unit, coil) -> the device driving it (the config refuses two drivers of one relay)."""
    out: dict[Coil, Output] = {}
    for _section, dev_id, model in cfg.devices():
        listed = getattr(model, "outputs", None)
        for bus, unit, coil, key in listed() if callable(listed) else []:
            out[(bus, unit, coil)] = Output(dev_id, key, model)
    return out


def world_inputs(cfg: Config) -> list[WorldInput]:
    """Every door contact, loop and fire contact of the config, with its polarity."""
    found: list[WorldInput] = []
    for owner, model in models(cfg):
        for sub in _board_models(model):
            for fld, (polarity, _quiet) in WORLD_INPUTS.items():
                n = getattr(sub, fld, None)
                if isinstance(n, int) and not isinstance(n, bool) and hasattr(sub, polarity):
                    label = getattr(sub, "label", None) or owner
                    found.append(WorldInput(owner, fld, sub.bus, sub.device_id, n,
                                            bool(getattr(sub, polarity)), str(label)))  # fmt: skip
    return found


def readers_of(cfg: Config, device: str) -> dict[str, str]:
    """reader id -> content (``qr``, ``card``, ``plate``) of the serial readers serving ``device``."""
    models_ = cfg.reader_models()
    return {
        rid: str(getattr(models_[rid], "content", ""))
        for rid, dev in cfg.reader_device().items()
        if dev == device and rid in models_
    }
