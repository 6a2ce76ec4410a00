"""App wiring: builds stores, drivers and the cloud link from config and runs the decision flow.

reader -> Presentation -> engine (pure) -> outbox (durable) -> actuator -> cloud link.
The event is committed before the actuator is driven, so a crash at any moment keeps it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from zoneinfo import ZoneInfo

import structlog

from drivers.door import Door
from drivers.modbus_bus import DeviceUnavailable, ModbusBus
from drivers.serial_reader import SerialReader
from edge import __version__
from edge.clock import ClockState
from edge.config import Config
from edge.datafiles import open_stores
from edge.engine import Clock, DeviceContext, decide_entry, decide_token
from edge.model import Decision, Event, Method, Presentation
from edge.normalize import mask_credential
from edge.outbox import Outbox
from edge.ports import DoorMode
from edge.reject_summary import TICK_S, RejectSummariser
from edge.runtime import tune_for_latency
from edge.store import WhitelistStore
from edge.supervise import spawn as spawn_supervised
from edge.tokens import TokenClaims, TrustPolicy, verify_token

log = structlog.get_logger(__name__)


def build_policy(cfg: Config, store: WhitelistStore) -> TrustPolicy:
    """Config keys, overlaid by the cloud's `key` ops (a None value drops a key)."""
    keys = dict(cfg.trust.keys)
    for kid, key in store.key_overlay().items():
        if key is None:
            keys.pop(kid, None)
        else:
            keys[kid] = key
    return TrustPolicy.build(
        cfg.gateway.site, keys, cfg.trust.leeway_s, cfg.trust.max_lifetime_s.model_dump()
    )


class Gateway:
    """The running gateway; implements edge.ports.GateControl for the cloud link and the CLI."""

    def __init__(self, cfg: Config, *, clock: ClockState | None = None) -> None:
        self.cfg = cfg
        self.tz = ZoneInfo(cfg.gateway.timezone)
        self.clock = clock or ClockState(None if cfg.trust.require_clock_sync else True)
        self.store, self.outbox = open_stores(cfg)
        self.policy = build_policy(cfg, self.store)
        self.buses = {bid: ModbusBus(bid, bcfg) for bid, bcfg in cfg.buses.items()}
        self.doors = {did: Door(did, dcfg, self.buses[dcfg.bus]) for did, dcfg in cfg.doors.items()}
        self.reader_door = cfg.reader_door()
        self.readers = {
            rid: SerialReader(rid, rcfg, self.present, self._reader_reject)
            for rid, rcfg in cfg.readers.items()
        }
        self.rejects = RejectSummariser(  # scanner noise: bounded events and log lines per reader
            {
                rid: (self.reader_door.get(rid, "gateway"), "qr" if r.content == "qr" else "nfc")
                for rid, r in cfg.readers.items()
            }
        )
        self.started_at = int(time.time() * 1000)
        self._device_cbs: list[Callable[[str, bool, str | None], None]] = []
        self._tasks: set[asyncio.Task[object]] = set()
        self._bg: list[asyncio.Task[object]] = []
        self._device_state: dict[str, tuple[bool, str | None]] = {}
        self.cloud: object | None = None
        self._stopped = False
        self.event_listeners: list[Callable[[Event], None]] = []  # local observers (demo, tests)
        for did, door in self.doors.items():
            door.on_input(self._door_input)
            self._device_state[did] = (True, None)
        for bid, bus in self.buses.items():
            bus.on_status(lambda dev, online, err, bid=bid: self._bus_status(bid, dev, online, err))
        for rid, reader in self.readers.items():
            self._device_state[rid] = (False, "not started")
            reader.on_status(self._device_changed)

    # --- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Outputs off first (doors force their lock coils off), then readers, then the cloud."""
        tune_for_latency()
        for bus in self.buses.values():
            await bus.start()
        for door in self.doors.values():
            await door.start()
        for reader in self.readers.values():
            await reader.start()
        self._bg.append(asyncio.create_task(self._summarise_rejects(), name="reject-summaries"))
        self._bg.append(spawn_supervised("outbox-flusher", self.outbox.run_flusher))
        self._bg.append(spawn_supervised("housekeeping", self._housekeeping))
        if self.cfg.mqtt is not None:
            from edge.cloud.link import CloudLink

            link = CloudLink(self.cfg, self.store, self.outbox, self, version=__version__)
            self.cloud = link
            self._bg.append(spawn_supervised("cloud-link", link.run))
        log.info(
            "gateway_started",
            site=self.cfg.gateway.site,
            id=self.cfg.gateway.id,
            doors=list(self.doors),
            readers=list(self.readers),
            whitelist_version=self.store.version,
            cloud=self.cfg.mqtt is not None,
        )

    async def stop(self) -> None:
        """Readers off, pending pulses cut short, every lock coil switched off, stores closed. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        for reader in self.readers.values():
            with contextlib.suppress(Exception):
                await reader.stop()
        if self.cloud is not None:
            with contextlib.suppress(Exception):
                await self.cloud.stop()  # type: ignore[attr-defined]
        for t in [*self._bg, *self._tasks]:
            t.cancel()
        await asyncio.gather(*self._bg, *self._tasks, return_exceptions=True)
        for door in self.doors.values():
            try:
                async with asyncio.timeout(door.actuation_timeout_s()):  # a wedged bus must not hang exit
                    await door.stop()
            except Exception as exc:  # the coil may stay as the board left it: say so loudly
                log.error("door_stop_failed", door=door_id_of(door), error=str(exc))
        for bus in self.buses.values():
            with contextlib.suppress(Exception):
                await bus.stop()
        for event in self.rejects.flush():  # the counts of the windows still open (readers are off)
            self.record(event)
        self.outbox.close()
        self.store.close()
        log.info("gateway_stopped")

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(60)
            try:
                self.store.purge(time.time())
            except Exception as exc:
                log.error("purge_failed", error=str(exc))

    # --- the hot path --------------------------------------------------------------------
    def present(self, pres: Presentation) -> Decision:
        """Decide one presentation, commit its event, then drive the lock. Never raises."""
        try:
            return self._present(pres)
        except Exception as exc:  # a bug must not kill the reader or the loop: deny and say why
            log.exception("presentation_failed", reader=pres.reader, error=str(exc))
            decision = Decision("denied", "internal_error")
            self._record_decision(pres, self.reader_door.get(pres.reader or "", "gateway"), decision)
            return decision

    def _present(self, pres: Presentation) -> Decision:
        door_id = self.reader_door.get(pres.reader or "")
        if door_id is None:
            decision = Decision("denied", "device_unavailable", credential=self._mask(pres))
            self._record_decision(pres, "gateway", decision)
            return decision
        door = self.doors[door_id]
        device = DeviceContext(door_id, self.cfg.doors[door_id].zone, door.mode, door.online)
        now = time.time()
        synced = self.clock.synced()
        if pres.kind == "token":
            verified = verify_token(pres.value, self.policy, now, clock_trusted=synced)
            revoked, used = False, 0
            if isinstance(verified, TokenClaims):
                revoked = self.store.is_revoked(verified.jti, now)
                used = self.store.uses(verified.jti) if verified.uses is not None else 0
            decision = decide_token(pres, verified, device, revoked=revoked, used=used)
            if decision.reason == "malformed" and pres.reader is not None:
                # Text that is no token at all is scanner noise like garbage bytes: summarised per
                # reader, so a babbling scanner cannot flood the outbox or the journal.
                self._reader_reject(pres.reader, "malformed", getattr(verified, "detail", ""))
                return decision
            if decision.granted and isinstance(verified, TokenClaims) and verified.uses is not None:
                self.store.record_use(verified.jti, verified.exp)
        else:
            entry = self.store.lookup(pres.kind, pres.value)
            clock = Clock(now, self.tz, synced, self.cfg.trust.require_clock_sync)
            decision = decide_entry(pres, entry, device, clock, self._mask(pres))
        self._record_decision(pres, door_id, decision)
        if decision.granted:
            self._spawn(self._actuate(door, pres, decision))
        # Logged after the actuation task's first step (FIFO), so rendering the line costs the door nothing.
        asyncio.get_running_loop().call_soon(self._log_decision, door_id, pres, decision)
        return decision

    @staticmethod
    def _log_decision(door_id: str, pres: Presentation, decision: Decision) -> None:
        log.info(
            "decision",
            door=door_id,
            reader=pres.reader,
            result=decision.result,
            reason=decision.reason,
            subject=decision.subject,
            credential=decision.credential,
        )

    @staticmethod
    def _mask(pres: Presentation) -> str:
        return mask_credential(pres.kind, pres.value) if pres.kind != "token" else ""

    def _record_decision(self, pres: Presentation, device: str, decision: Decision) -> None:
        latency = (time.perf_counter() - pres.t_mono) * 1000 if pres.t_mono else None
        self.record(
            self.make_event(
                device,
                pres.reader,
                pres.method,
                decision.credential,
                decision.subject,
                decision.result,
                decision.reason,
                latency,
            )
        )

    async def _actuate(self, door: Door, pres: Presentation, decision: Decision) -> None:
        """Drive the lock for a grant. Whatever goes wrong (device offline, a timeout, a bug, a request
        stuck past the bound), the grant is followed by a `device_unavailable` event: a person was let
        in on paper only, and the cloud must know. The bound keeps a wedged bus from holding grants
        (and their memory) forever; the write itself stays bounded by the bus's own timeouts."""
        t_act = time.perf_counter()
        try:
            async with asyncio.timeout(door.actuation_timeout_s()):
                await door.pulse()
            log.debug(
                "actuated",
                door=door_id_of(door),
                credential=decision.credential,
                t_in=pres.t_mono,
                t_act=t_act,
                t_done=time.perf_counter(),
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = "timeout" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
            if not isinstance(exc, (TimeoutError, DeviceUnavailable, OSError)):
                log.exception("actuation_bug", door=door_id_of(door), error=error)
            log.error("actuation_failed", door=door_id_of(door), error=error)
            self.record(
                self.make_event(
                    door_id_of(door),
                    pres.reader,
                    pres.method,
                    decision.credential,
                    decision.subject,
                    "denied",
                    "device_unavailable",
                    None,
                )
            )

    # --- inputs and status ---------------------------------------------------------------
    def _reader_reject(self, reader_id: str, reason: str, detail: str) -> None:
        """A reader's first rejects per window are events (and log lines); the rest only counted."""
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

    def _door_input(self, door_id: str, name: str, value: bool) -> None:
        log.info("door_input", door=door_id, input=name, value=value)
        if name == "exit_button" and value:
            door = self.doors[door_id]
            self.record(self.make_event(door_id, None, "button", "exit", None, "granted", "ok", None))
            self._spawn(
                self._actuate(door, Presentation("card", "", "button", None), Decision("granted", "ok"))
            )

    def _bus_status(self, bus_id: str, device_id: int, online: bool, error: str | None) -> None:
        for did, dcfg in self.cfg.doors.items():
            if dcfg.bus == bus_id and dcfg.device_id == device_id:
                self._device_changed(did, online, error)

    def _device_changed(self, device: str, online: bool, error: str | None) -> None:
        if self._device_state.get(device) == (online, error):
            return
        self._device_state[device] = (online, error)
        (log.info if online else log.warning)("device_status", device=device, online=online, error=error)
        for cb in self._device_cbs:
            try:
                cb(device, online, error)
            except Exception as exc:
                log.error("device_callback_failed", error=str(exc))

    def _spawn(self, coro: object) -> None:
        task = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
    ) -> Event:
        """Positional form for the gateway's call sites; Outbox.make_event builds it (id, timestamp)."""
        return Outbox.make_event(
            device,
            method,
            credential,
            result,  # type: ignore[arg-type]
            reason,
            reader=reader,
            subject=subject,
            latency_ms=None if latency_ms is None else round(latency_ms, 3),
        )

    def record(self, event: Event) -> None:
        try:
            self.outbox.append(event)
        except Exception as exc:  # disk full or failing: the gate keeps deciding; journald keeps the event
            log.error("event_not_stored", error=str(exc), lost_event=event.to_wire())
        for cb in self.event_listeners:
            try:
                cb(event)
            except Exception as exc:
                log.error("event_listener_failed", error=str(exc))

    # --- GateControl ---------------------------------------------------------------------
    def targets(self) -> set[str]:
        return set(self.doors)

    def supports(self, target: str, action: str) -> bool:
        return target in self.doors and action in {"open", "hold_open", "lock", "normal"}

    async def remote_open(self, target: str, by: str | None) -> str | None:
        door = self.doors.get(target)
        if door is None:
            return "unknown_target"
        if not door.online:
            return "device_unavailable"
        try:
            async with asyncio.timeout(door.actuation_timeout_s()):
                await door.pulse()
        except Exception as exc:
            log.error("remote_open_failed", door=target, error=str(exc) or type(exc).__name__)
            return "device_unavailable"
        return None

    async def set_mode(self, target: str, mode: DoorMode) -> str | None:
        door = self.doors.get(target)
        if door is None:
            return "unknown_target"
        try:
            async with asyncio.timeout(door.actuation_timeout_s()):
                await door.set_mode(mode)
        except Exception as exc:
            log.error("set_mode_failed", door=target, mode=mode, error=str(exc))
            return "device_unavailable"
        return None

    def device_health(self) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        for did, door in self.doors.items():
            state = self._device_state.get(did, (True, None))
            out[did] = {"online": door.online, "error": None if door.online else state[1] or "offline"}
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
            "doors": {d: door.mode for d, door in self.doors.items()},
        }


def door_id_of(door: Door) -> str:
    return getattr(door, "door_id", "?")


def dumps(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
