"""Registry of device kinds, reader types and extra config sections.

Each driver module registers its own config model and builder at import time, as ESPHome's
components export their own schema: the core (edge/config.py, edge/app.py) lists no kind by name.
Adding a kind means adding a module to ``drivers/``; :func:`load_drivers` imports every module of the
package, so nothing else has to learn its name.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel


@dataclass(frozen=True)
class DeviceKind:
    """A device kind: the config section it lives in (``doors``), its model and its builder
    ``build(device_id, cfg, env) -> Device``."""

    section: str
    model: type[BaseModel]
    build: Callable[..., Any]


@dataclass(frozen=True)
class ReaderType:
    """A reader type: the ``type`` tag under ``readers``, its model and ``build(reader_id, cfg, env)``."""

    type: str
    model: type[BaseModel]
    build: Callable[..., Any]


@dataclass(frozen=True)
class Section:
    """A top-level section that is not a collection of devices (``fire``, ``lpr``): a model and
    ``build(cfg, env) -> Service`` (None when the section is absent)."""

    name: str
    model: type[BaseModel]
    build: Callable[..., Any]


DEVICE_KINDS: dict[str, DeviceKind] = {}
READER_TYPES: dict[str, ReaderType] = {}
SECTIONS: dict[str, Section] = {}


def register_device(section: str, model: type[BaseModel], build: Callable[..., Any]) -> None:
    _unique(section)
    DEVICE_KINDS[section] = DeviceKind(section, model, build)


def register_reader(type_: str, model: type[BaseModel], build: Callable[..., Any]) -> None:
    if type_ in READER_TYPES and READER_TYPES[type_].model is not model:
        raise ValueError(f"reader type {type_!r} registered twice")
    READER_TYPES[type_] = ReaderType(type_, model, build)


def register_section(name: str, model: type[BaseModel], build: Callable[..., Any]) -> None:
    _unique(name)
    SECTIONS[name] = Section(name, model, build)


def _unique(name: str) -> None:
    existing = DEVICE_KINDS.get(name) or SECTIONS.get(name)
    if existing is not None:
        raise ValueError(f"config section {name!r} registered twice")


_loaded = False


def load_drivers() -> None:
    """Import every module of the ``drivers`` package once, so each registers itself."""
    global _loaded
    if _loaded:
        return
    import drivers

    for info in sorted(pkgutil.iter_modules(drivers.__path__), key=lambda m: m.name):
        importlib.import_module(f"drivers.{info.name}")
    _loaded = True
