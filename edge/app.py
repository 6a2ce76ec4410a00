"""App wiring: builds stores, buses, devices, readers and services from config and runs them.

reader -> Presentation -> engine (pure, edge/flow.py) -> outbox (durable) -> device -> cloud link.
Devices, readers and sections come from the driver registry and are driven through their interfaces
(drivers/device.py, drivers/reader.py): this module names no device kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import structlog

from drivers.device import Device, DeviceEnv, EventSpec, Service, ServiceEnv
from drivers.inputs import InputHub, ScopedInputs
from drivers.modbus_bus import ModbusBus
from drivers.reader import Reader, ReaderEnv
from drivers.registry import DEVICE_KINDS, READER_TYPES, SECTIONS
from edge import __version__
from edge.clock import ClockState
from edge.config import Config
from edge.datafiles import mark_clean, open_stores, verify_deferred
from edge.db import is_damage
from edge.flow import Flow
from edge.model import Decision, Event, Method, Presentation
from edge.outbox import Outbox
from edge.reject_summary import TICK_S, RejectSummariser
from edge.runtime import tune_for_latency
from edge.supervise import declare_fatal, fatal_event
from edge.supervise import spawn as spawn_supervised
from edge.trust import build_policy

if TYPE_CHECKING:
    from edge.metrics import Metrics

log = structlog.get_logger(__name__)


class Gateway:
    """The running gateway; implements edge.ports.GateControl for the cloud link and the CLI."""

    def __init__(self, cfg: Config, *, clock: ClockState | None = None) -> None:
        self.cfg = cfg
        self.tz = ZoneInfo(cfg.gateway.timezone)
        self.clock = clock or ClockState(None if cfg.trust.require_clock_sync else True)
        self._unchecked: list[Path] = []  # databases whose full check waits until after start
        self.store, self.outbox = open_stores(cfg, self._unchecked)
        self.policy = build_policy(cfg, self.store)
        self.buses = {bid: ModbusBus(bid, bcfg) for bid, bcfg in cfg.buses.items()}
        self.inputs = InputHub(self.buses)
        self.config_path: str | None = None  # the file `edge reload` / SIGHUP re-reads (edge/reload.py)
        self._scopes: dict[str, ScopedInputs] = {}  # each device's input watches, released on rebuild
        self.devices: dict[str, Device] = {
            dev_id: self.build_device(section, dev_id, dcfg) for section, dev_id, dcfg in cfg.devices()
        }
        self.reader_device = cfg.reader_device()
        self.flow = Flow(self, self.devices, self.reader_device)
        self._renv = ReaderEnv(
            self.present, self.reader_reject, self.flow.note, extra={"lookup": self.store.lookup}
        )
        self.readers: dict[str, Reader] = {
            rid: READER_TYPES[rcfg.type].build(rid, rcfg, self._renv) for rid, rcfg in cfg.reader_models().items()
        }
        self.flow.exempt = frozenset(r for r, reader in self.readers.items() if reader.rate_limit_exempt)
        senv = ServiceEnv(self.buses, self.inputs, self.emit, state_dir=cfg.gateway.data_dir,
                          devices=self.devices, readers=self.readers)  # fmt: skip
        self.services: dict[str, Service] = {}
        for name, sec in SECTIONS.items():
            scfg = cfg.section(name)
            service = sec.build(scfg, senv) if scfg is not None else None
            if service is not None:
                self.services[service.name] = service
        self.rejects = RejectSummariser(  # scanner noise: bounded events and log lines per reader
            {rid: (self.reader_device.get(rid, "gateway"), r.method) for rid, r in self.readers.items()}
        )
        self.started_at = int(time.time() * 1000)
        self._device_cbs: list[Callable[[str, bool, str | None], None]] = []
        self._bg: list[asyncio.Task[Any]] = []
        self._device_state: dict[str, tuple[bool, str | None]] = {d: (True, None) for d in self.devices}
        self._offline: set[str] = set()  # devices whose device_offline alarm was recorded
        self.cloud: object | None = None
        self.metrics: Metrics | None = None  # Prometheus (edge/metrics.py), when metrics.listen is set
        if cfg.metrics is not None and cfg.metrics.address() is not None:
            from edge.metrics import Metrics

            self.metrics = Metrics(self)
        self._stopped = False
        self.event_listeners: list[Callable[[Event], None]] = []  # local observers (demo, tests)
        self._unit_devices: dict[tuple[str, int], list[str]] = {}
        self.index_units()
        for bid, bus in self.buses.items():
            bus.on_status(lambda unit, online, err, bid=bid: self._bus_status(bid, unit, online, err))
        for rid, reader in self.readers.items():
            self.watch_reader(rid, reader)

    def build_device(self, section: str, dev_id: str, dcfg: Any) -> Device:
        """One device with its own view of the inputs, so that a rebuild can drop its watches."""
        scope = self._scopes[dev_id] = ScopedInputs(self.inputs)
        env = DeviceEnv(self.buses, scope, self.emit, state_dir=self.cfg.gateway.data_dir,
                        extra={"tz": self.tz})  # fmt: skip
        return DEVICE_KINDS[section].build(dev_id, dcfg, env)

    def build_reader(self, rid: str, rcfg: Any) -> Reader:
        return READER_TYPES[rcfg.type].build(rid, rcfg, self._renv)

    def watch_reader(self, rid: str, reader: Reader) -> None:
        self._device_state[rid] = (False, "not started")
        reader.on_status(self._device_changed)

    def release(self, thing_id: str) -> None:
        """Forget a device's or reader's input watches and status (stopped for a rebuild or removed)."""
        scope = self._scopes.pop(thing_id, None)
        if scope is not None:
            scope.release()
        self._device_state.pop(thing_id, None)
        self._offline.discard(thing_id)

    def index_units(self) -> None:
        """(bus, unit) -> devices on it, for the bus's online/offline reports."""
        self._unit_devices.clear()
        for dev_id, device in self.devices.items():
            for unit in device.units():
                self._unit_devices.setdefault(unit, []).append(dev_id)

    # --- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Inputs read first (a fire already on applies before anything is driven), then every device
        to its safe state, then readers, then the cloud."""
        tune_for_latency()
        for bus in self.buses.values():
            await bus.start()
        for device in self.devices.values():
            for bus_id, unit in device.units():
                self.buses[bus_id].register_device(unit)
        await self.inputs.read_all_once()
        for service in self.services.values():
            await service.start()
        for dev_id, device in self.devices.items():
            hold = any(s.holds(dev_id) for s in self.services.values())
            await device.start(fire=hold)
        await self.inputs.start()
        for service in self.services.values():
            await service.started()
        for reader in self.readers.values():
            await reader.start()
        self._bg.append(spawn_supervised("reject-summaries", self._summarise_rejects))
        self._bg.append(spawn_supervised("outbox-flusher", self.outbox.run_flusher))
        self._bg.append(spawn_supervised("housekeeping", self._housekeeping))
        if self._unchecked:
            self._bg.append(asyncio.ensure_future(self._verify_deferred()))
        if self.cfg.mqtt is not None:
            from edge.cloud.link import CloudLink

            on_snapshot = self.metrics.snapshot_applied if self.metrics is not None else None
            link = CloudLink(
                self.cfg, self.store, self.outbox, self, version=__version__, on_snapshot=on_snapshot
            )
            self.cloud = link
            self._bg.append(spawn_supervised("cloud-link", link.run))
        address = self.cfg.metrics.address() if self.cfg.metrics is not None else None
        if self.metrics is not None and address is not None:
            self.metrics.start(*address)
        log.info(
            "gateway_started",
            site=self.cfg.gateway.site,
            id=self.cfg.gateway.id,
            devices={d: dev.kind for d, dev in self.devices.items()},
            readers=list(self.readers),
            services=list(self.services),
            whitelist_version=self.store.version,
            cloud=self.cfg.mqtt is not None,
        )

    async def stop(self) -> None:
        """Readers off, every device to its safe state (nothing released, no barrier moved down),
        stores closed. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        metrics_stop = asyncio.ensure_future(self.metrics.stop()) if self.metrics is not None else None
        for reader in self.readers.values():
            with contextlib.suppress(Exception):
                await reader.stop()
        if self.cloud is not None:
            with contextlib.suppress(Exception):
                await self.cloud.stop()  # type: ignore[attr-defined]
        for t in self._bg:
            t.cancel()
        await asyncio.gather(*self._bg, self.flow.cancel(), return_exceptions=True)
        await self.inputs.stop()
        for service in self.services.values():
            with contextlib.suppress(Exception):
                await service.stop()
        for dev_id, device in self.devices.items():
            await self.stop_device(dev_id, device)
        for bus in self.buses.values():
            with contextlib.suppress(Exception):
                await bus.stop()
        for event in self.rejects.flush():  # the counts of the windows still open (readers are off)
            self.record(event)
        if metrics_stop is not None:  # its read connection goes before the outbox's own
            await asyncio.gather(metrics_stop, return_exceptions=True)
        self.outbox.close()
        self.store.close()
        # No stamp when a deferred check is still running (it proved nothing yet) or the run ends fatally
        # (a damaged file among them, maybe): the next start then checks every database in full.
        if not self._unchecked and not fatal_event().is_set():
            mark_clean(self.cfg.gateway.data_dir)
        log.info("gateway_stopped")

    async def _verify_deferred(self) -> None:
        why = await asyncio.to_thread(verify_deferred, list(self._unchecked))
        if why is not None:
            declare_fatal("data-check", f"damaged database: {why}")
            return
        self._unchecked.clear()
        log.info("databases_checked", when="after start")

    @staticmethod
    async def stop_device(dev_id: str, device: Device) -> None:
        """One device to its safe state, bounded (a wedged bus must not hang exit or a reload)."""
        try:
            async with asyncio.timeout(device.actuation_timeout_s()):
                await device.stop()
        except Exception as exc:  # an output may stay as the board left it: say so loudly
            log.error("device_stop_failed", device=dev_id, error=str(exc) or type(exc).__name__)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(60)
            try:
                self.store.purge(time.time())
            except Exception as exc:
                log.error("purge_failed", error=str(exc))

    # --- the hot path (edge/flow.py) -------------------------------------------------------
    def present(self, pres: Presentation) -> Decision:
        return self.flow.present(pres)

    def reader_reject(self, reader_id: str, reason: str, detail: str) -> None:
        """A reader's first rejects per window are events (and log lines); the rest only counted."""
        if self.metrics is not None:
            self.metrics.rejected(reader_id, reason)
        event = self.rejects.reject(reader_id, reason, detail, time.monotonic())
        if event is not None:
            self.record(event)

    async def _summarise_rejects(self) -> None:
        """Records the reject summaries of the windows that ended."""
        while True:
            await asyncio.sleep(TICK_S)
            try:
                for event in self.rejects.due(time.monotonic()):
                    self.record(event)
            except Exception as exc:  # never let the task die: the counts stay for the next tick or stop
                log.error("reject_summary_failed", error=str(exc))

    # --- status ----------------------------------------------------------------------------
    def _bus_status(self, bus_id: str, unit: int, online: bool, error: str | None) -> None:
        for dev_id in self._unit_devices.get((bus_id, unit), ()):
            device = self.devices[dev_id]
            self._device_changed(dev_id, device.online, None if device.online else error)

    def _device_changed(self, device: str, online: bool, error: str | None) -> None:
        if self._device_state.get(device) == (online, error):
            return
        self._device_state[device] = (online, error)
        (log.info if online else log.warning)("device_status", device=device, online=online, error=error)
        # One alarm when a device stops answering (also a reader missing at start-up), one info when
        # it is back; a reader coming up at start is no news.
        if not online and device not in self._offline and not self._stopped:
            self._offline.add(device)
            self.emit(EventSpec(device, "sensor", "alarm", "device_offline"))
        elif online and device in self._offline:
            self._offline.discard(device)
            self.emit(EventSpec(device, "sensor", "info", "device_online"))
        for cb in self._device_cbs:
            try:
                cb(device, online, error)
            except Exception as exc:
                log.error("device_callback_failed", error=str(exc))

    # --- events --------------------------------------------------------------------------
    def make_event(
        self,
        device: str,
        reader: str | None,
        method: Method,
        credential: str,
        subject: str | None,
        result: str,
        reason: str,
        latency_ms: float | None,
        **facts: Any,
    ) -> Event:
        """Positional form for the gateway's call sites; Outbox.make_event builds it (id, timestamp).
        ``facts`` are the optional wire fields (``direction``, ``floors``) from action_facts."""
        return Outbox.make_event(
            device,
            method,
            credential,
            result,  # type: ignore[arg-type]
            reason,
            reader=reader,
            subject=subject,
            latency_ms=None if latency_ms is None else round(latency_ms, 3),
            **facts,
        )

    def action_facts(self, target: str, action: str, args: Mapping[str, Any], error: str | None) -> dict[str, Any]:
        """The device's optional event fields for an action on it; a driver bug costs the fields only."""
        device = self.devices.get(target)
        if device is None:
            return {}
        try:
            facts = device.action_facts(action, args, error)
            out: dict[str, Any] = {}
            if facts.get("direction") in ("in", "out"):
                out["direction"] = facts["direction"]
            floors = facts.get("floors")
            if isinstance(floors, tuple) and floors and all(type(f) is int for f in floors):
                out["floors"] = floors
            return out
        except Exception:
            log.exception("action_facts_failed", target=target, action=action)
            return {}

    def emit(self, spec: EventSpec) -> None:
        """An event a device or service raised on its own (alarm, input, fire): committed like any."""
        event = Outbox.make_event(
            spec.device, spec.method, spec.credential, spec.result, spec.reason, reader=spec.reader,
            subject=spec.subject, direction=spec.direction, floors=spec.floors,
        )  # fmt: skip
        self.record(event)

    def record(self, event: Event) -> None:
        try:
            self.outbox.append(event)
        except Exception as exc:  # disk full or failing: the gate keeps deciding; journald keeps the event
            log.error("event_not_stored", error=str(exc), lost_event=event.to_wire())
            if is_damage(exc):  # the outbox file went bad: restart, so the check salvages its events
                declare_fatal("outbox", f"damaged database: {exc}")
        for cb in self.event_listeners:
            try:
                cb(event)
            except Exception as exc:
                log.error("event_listener_failed", error=str(exc))

    # --- GateControl ---------------------------------------------------------------------
    def targets(self) -> set[str]:
        return set(self.devices) | set(self.services)

    def supports(self, target: str, action: str) -> bool:
        thing = self.devices.get(target) or self.services.get(target)
        return thing is not None and action in thing.actions

    async def act(self, target: str, action: str, args: Mapping[str, Any]) -> str | None:
        """A remote or local action on a device or service: None when done, else an error code."""
        device = self.devices.get(target)
        service = self.services.get(target)
        if device is None and service is None:
            return "unknown_target"
        thing = device or service
        assert thing is not None
        if action not in thing.actions:
            return "unsupported"
        timeout = device.actuation_timeout_s() if device is not None else 10.0
        try:
            async with asyncio.timeout(timeout):
                return await thing.act(action, args)
        except Exception as exc:
            log.error("action_failed", target=target, action=action, error=str(exc) or type(exc).__name__)
            return "device_unavailable"

    def device_health(self) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        for dev_id, device in self.devices.items():
            out[dev_id] = {"online": device.online, "error": None if device.online else device.error or "offline"}
        for rid, reader in self.readers.items():
            state = self._device_state.get(rid, (False, None))
            out[rid] = {"online": reader.online, "error": None if reader.online else state[1] or "offline"}
        return out

    def clock_synced(self) -> bool:
        return self.clock.synced()

    def on_device_change(self, callback: Callable[[str, bool, str | None], None]) -> None:
        self._device_cbs.append(callback)

    def reload_trust(self) -> None:
        self.policy = build_policy(self.cfg, self.store)
        log.info("trust_reloaded", kids=sorted(self.policy.keys))

    def status(self) -> dict[str, object]:
        return {
            "version": __version__,
            "whitelist_version": self.store.version,
            "outbox": self.outbox.count(),
            "devices": self.device_health(),
            "clock_synced": self.clock_synced(),
            "state": {d: dev.status() for d, dev in self.devices.items()},
            "inputs": {d: dev.input_states() for d, dev in self.devices.items() if dev.inputs()},
            "services": {n: s.status() for n, s in self.services.items()},
        }


def dumps(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
