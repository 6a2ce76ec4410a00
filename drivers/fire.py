"""Fire linkage (消防联动): a fire signal releases every escape door, raises the barriers, frees the lifts.

GB 50116 §4.10.3 has the fire linkage open escape doors and parking barriers, GB 55024 §5.3.6 has
access control release on a fire signal. The signal is one or more dry contacts from the fire alarm
panel on relay-IO board inputs, read by the shared input hub (drivers/inputs.py). Any of them active
means fire: every device in ``release`` gets ``fire(True)`` at once, concurrently (a dead or slow
board must not hold back the doors on the others), whatever their modes and schedules. The state is
kept in ``fire.json`` in the data dir, so a restart (a power cut during a fire) neither relocks a
released gate nor forgets that a manual reset is still owed; shutdown itself releases nothing.

Config model here, the service below it. Registers the `fire` section.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator

from drivers.device import Device, EventSpec, Service, ServiceEnv
from drivers.registry import register_section
from edge.supervise import spawn as spawn_supervised

log = structlog.get_logger(__name__)

STATE_FILE = "fire.json"
EVENT_DEVICE = "gateway"  # the linkage is the gateway's own function: its events name no device
REFUSE_ACTIVE = "fire_alarm"  # reset refused: an input still says fire (a reason code of mqtt.md)
REFUSE_UNKNOWN = "device_unavailable"  # reset refused: a fire input board does not answer


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FireInput(_Strict):
    bus: str = Field(description="id of a bus in `buses`")
    device_id: int = Field(ge=0, le=247, description="Modbus unit of the relay-IO board")
    input: int = Field(ge=0, le=255, description="discrete input (0-based) wired to the fire panel")
    active_when: bool = Field(
        True, description="input value meaning fire: true for a normally-open contact, false for NC"
    )
    name: str | None = Field(None, min_length=1, description="label in events (default bus:unit:input)")

    @property
    def label(self) -> str:
        return self.name or f"{self.bus}:{self.device_id}:{self.input}"


class FireConfig(_Strict):
    inputs: list[FireInput] = Field(min_length=1, description="any of these active means fire")
    release: Literal["all"] | list[str] = Field(
        "all", description="`all` or the ids of the devices released under fire"
    )
    reset: Literal["auto", "manual"] = Field(
        "auto",
        description="auto: normal again when every input is clear; manual: stays released until "
        "`edge fire reset` or the cloud's `normal` command to target `fire`",
    )
    on_input_lost: Literal["keep", "release"] = Field(
        "keep", description="a fire input board not answering: keep the state, or release as for a fire"
    )

    @field_validator("inputs")
    @classmethod
    def _distinct_inputs(cls, v: list[FireInput]) -> list[FireInput]:
        seen: set[tuple[str, int, int]] = set()
        for i, inp in enumerate(v):
            key = (inp.bus, inp.device_id, inp.input)
            if key in seen:
                raise ValueError(
                    f"[{i}]: bus {inp.bus!r} unit {inp.device_id} input {inp.input} listed twice"
                )
            seen.add(key)
        return v

    @field_validator("release")
    @classmethod
    def _release_ids(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list):
            if not v:
                raise ValueError("list at least one device id, or `all`")
            if len(set(v)) != len(v):
                raise ValueError("a device id is listed twice")
        return v

    def bus_refs(self) -> list[tuple[tuple[Any, ...], str]]:
        """(key path, bus id) of every bus named, checked against `buses` by edge/config.py."""
        return [(("inputs", i, "bus"), inp.bus) for i, inp in enumerate(self.inputs)]

    def device_refs(self) -> list[tuple[tuple[Any, ...], str]]:
        """(key path, device id) of every device named in ``release`` (checked again at build)."""
        return [] if self.release == "all" else [(("release", i), d) for i, d in enumerate(self.release)]

    def describe(self) -> str:
        ins = ", ".join(f"{i.label} (fire when {str(i.active_when).lower()})" for i in self.inputs)
        what = "every device" if self.release == "all" else ", ".join(self.release)
        return f"releases {what} on {ins}; reset {self.reset}; input board lost: {self.on_input_lost}"


class FireLinkage(Service):
    """The `fire` section: watches the inputs, keeps the fire state, releases and restores devices.

    ``active`` is the linkage state: True from the first input seen active until the inputs are clear
    (``reset: auto``) or a reset was accepted (``manual``). A lost input board counts as fire with
    ``on_input_lost: release``; with ``keep`` its inputs keep their last value (unknown: they can
    neither start nor end a fire). Device writes happen in one worker that drives every device to the
    latest state, so a quick on/off never leaves two releases racing each other.
    """

    name = "fire"
    actions = frozenset({"normal"})

    def __init__(self, cfg: FireConfig, env: ServiceEnv) -> None:
        super().__init__(cfg, env)
        self.cfg: FireConfig = cfg
        ids = list(env.devices) if cfg.release == "all" else list(cfg.release)
        self._release = ids
        self._values: list[bool | None] = [None] * len(cfg.inputs)  # raw debounced values
        self._lost: set[tuple[str, int]] = set()
        self._state_path = Path(env.state_dir) / STATE_FILE if env.state_dir is not None else None
        self.active = self._load()
        self._applied = self.active  # devices start in this state (holds)
        self._ready = False  # inputs only recorded until start(): the first read sets the initial state
        self._running = False
        self._wake = asyncio.Event()
        self._settled = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        for i, inp in enumerate(cfg.inputs):
            env.inputs.watch(inp.bus, inp.device_id, inp.input, lambda v, first, i=i: self._input(i, v),
                             urgent=inp.active_when)  # fire at first sight; its end is debounced  # fmt: skip
        for bus, unit in dict.fromkeys((inp.bus, inp.device_id) for inp in cfg.inputs):
            env.inputs.on_lost(bus, unit, lambda lost, err, b=bus, u=unit: self._board_lost(b, u, lost, err))

    # --- the Service interface -------------------------------------------------------------
    def holds(self, device_id: str) -> bool:
        return self.active and device_id in self._release

    async def start(self) -> None:
        """After the first read of every board: the state devices start in (none is driven here)."""
        restored = self.active
        self._ready = True
        self._evaluate(drive=False)
        self._applied = self.active
        if self.active != restored:
            self._save(self.active)
        (log.warning if self.active else log.info)(
            "fire_linkage_started", active=self.active, restored=restored, reset=self.cfg.reset,
            release=self._release,
        )  # fmt: skip

    async def started(self) -> None:
        self._running = True
        self._worker = spawn_supervised("fire-linkage", self._run)
        self._evaluate()  # anything read while the devices were starting
        self._wake.set()

    async def stop(self) -> None:
        """Releases nothing and changes no state: fire.json already holds it for the next start."""
        self._running = False
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    async def act(self, action: str, args: Mapping[str, Any]) -> str | None:
        """``normal``: the manual reset. Refused while an input says fire (``fire_alarm``) or a fire input
        board does not answer (``device_unavailable``)."""
        if action != "normal":
            return "unsupported"
        by = str(args.get("by") or "") or None
        tripped = self._tripped()
        if any(t is True for t in tripped):
            log.warning("fire_reset_refused", by=by, error=REFUSE_ACTIVE, inputs=self._labels(tripped))
            return REFUSE_ACTIVE
        if not self.active:
            return None  # nothing to reset
        if self._lost or any(t is None for t in tripped):  # a reset needs every input read clear
            log.warning("fire_reset_refused", by=by, error=REFUSE_UNKNOWN, lost=sorted(self._lost))
            return REFUSE_UNKNOWN
        self._set(False, subject=by)
        await self._settle()
        return None

    def status(self) -> dict[str, Any]:
        tripped = self._tripped()
        inputs = [
            {"name": inp.label, "value": v, "fire": t, "lost": (inp.bus, inp.device_id) in self._lost}
            for inp, v, t in zip(self.cfg.inputs, self._values, tripped, strict=True)
        ]
        return {"active": self.active, "inputs": inputs, "reset": self.cfg.reset,
                "on_input_lost": self.cfg.on_input_lost, "release": list(self._release)}  # fmt: skip

    # --- inputs -> state ---------------------------------------------------------------------
    def _input(self, index: int, value: bool) -> None:
        self._values[index] = value
        self._evaluate()

    def _board_lost(self, bus: str, unit: int, lost: bool, error: str | None) -> None:
        names = ",".join(i.label for i in self.cfg.inputs if (i.bus, i.device_id) == (bus, unit))
        if lost:
            self._lost.add((bus, unit))
            log.error("fire_input_lost", bus=bus, device_id=unit, error=error, policy=self.cfg.on_input_lost)
            self.env.emit(EventSpec(EVENT_DEVICE, "fire", "alarm", "device_offline", credential=names))
        else:
            self._lost.discard((bus, unit))
            log.info("fire_input_back", bus=bus, device_id=unit)
            self.env.emit(EventSpec(EVENT_DEVICE, "fire", "info", "device_online", credential=names))
        self._evaluate()

    def _tripped(self) -> list[bool | None]:
        """Per input: fire (True), clear (False) or unknown (None: never read, or lost under ``keep``
        with no value yet). A lost board's inputs are fire under ``release``, else their last value."""
        out: list[bool | None] = []
        for inp, value in zip(self.cfg.inputs, self._values, strict=True):
            if (inp.bus, inp.device_id) in self._lost and self.cfg.on_input_lost == "release":
                out.append(True)
            else:
                out.append(None if value is None else value == inp.active_when)
        return out

    def _labels(self, tripped: list[bool | None]) -> str:
        return ",".join(inp.label for inp, t in zip(self.cfg.inputs, tripped, strict=True) if t)

    def _evaluate(self, *, drive: bool = True) -> None:
        if not self._ready:
            return
        tripped = self._tripped()
        if any(t is True for t in tripped):
            if not self.active:
                self._set(True, credential=self._labels(tripped), drive=drive)
        elif self.active and self.cfg.reset == "auto" and all(t is False for t in tripped):
            self._set(False, drive=drive)

    def _set(
        self, active: bool, *, credential: str = "", subject: str | None = None, drive: bool = True
    ) -> None:
        """New linkage state: the event first (durable before any device moves), then the worker."""
        self.active = active
        reason = "fire_alarm" if active else "fire_cleared"
        (log.critical if active else log.warning)(reason, inputs=credential or None, by=subject)
        self.env.emit(EventSpec(EVENT_DEVICE, "fire", "alarm" if active else "info", reason,
                                credential=credential, subject=subject))  # fmt: skip
        if drive:
            self._wake.set()

    # --- state -> devices --------------------------------------------------------------------
    async def _run(self) -> None:
        """Drive every device to the latest state, then persist it; again if it changed meanwhile."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._applied != self.active:
                target = self.active
                await asyncio.gather(self._drive(target), asyncio.to_thread(self._save, target))
                self._applied = target
            self._settled.set()

    async def _settle(self) -> None:
        """Until the devices are in the current state (the worker sets ``_settled`` once they are)."""
        while self._running and self._applied != self.active:
            self._settled.clear()
            self._wake.set()
            await self._settled.wait()

    async def _drive(self, active: bool) -> None:
        """``fire(active)`` on every released device at once, each bounded; errors logged, never raised
        (a door that missed it applies it itself when its board answers again)."""
        devices = [(d, self.env.devices[d]) for d in self._release if d in self.env.devices]
        t0 = time.monotonic()
        await asyncio.gather(*(self._one(d, dev, active) for d, dev in devices))
        log.info("fire_devices_driven", active=active, devices=len(devices),
                 ms=round((time.monotonic() - t0) * 1000, 1))  # fmt: skip

    async def _one(self, device_id: str, device: Device, active: bool) -> None:
        try:
            async with asyncio.timeout(device.actuation_timeout_s()):
                await device.fire(active)
        except Exception as exc:
            log.error(
                "fire_device_failed", device=device_id, active=active, error=str(exc) or type(exc).__name__
            )

    # --- persistence -------------------------------------------------------------------------
    def _load(self) -> bool:
        """The state kept by the last run. A damaged file counts as a fire (what a reboot during one
        must not lose): with ``reset: auto`` clear inputs end it at once, ``manual`` waits for a reset."""
        if self._state_path is None:
            return False
        try:
            data = json.loads(self._state_path.read_text(encoding="utf-8"))
            active = data["active"]
            if not isinstance(active, bool):
                raise ValueError("active is not a boolean")
            return active
        except FileNotFoundError:
            return False
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("fire_state_unreadable", path=str(self._state_path), error=str(exc), assumed="active")
            return True

    def _save(self, active: bool) -> None:
        """Atomically: a temporary file fsynced, renamed over fire.json, the directory fsynced."""
        if self._state_path is None:
            return
        path = self._state_path
        tmp = path.with_name(f".{path.name}.tmp")
        body = json.dumps({"active": active, "ts": int(time.time() * 1000)}).encode()
        try:
            with open(tmp, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:  # the linkage still works; a restart may then not remember it
            log.error("fire_state_not_saved", path=str(path), active=active, error=str(exc))


def build(cfg: FireConfig, env: ServiceEnv) -> FireLinkage:
    """The service, after checking ``release`` against the configured devices (a sub-model cannot
    see the other sections)."""
    for key, dev_id in cfg.device_refs():
        if dev_id not in env.devices:
            known = ", ".join(sorted(env.devices)) or "none"
            raise ValueError(f"fire.release[{key[1]}]: no device {dev_id!r} (devices: {known})")
    return FireLinkage(cfg, env)


register_section("fire", FireConfig, build)
