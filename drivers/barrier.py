"""Vehicle barrier arm (道闸) on a Modbus relay board: open/close dry contacts, loop detector, limits.

Config model here; the decisions live in drivers/barrier_logic.py (pure, property-tested), this module
feeds it the board's inputs and the clock and writes what it returns. Registers the `barriers` section.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, model_validator

from drivers.barrier_logic import BarrierLogic, Command, Params
from drivers.device import Device, DeviceEnv, EventSpec, Grant
from drivers.modbus_bus import DeviceUnavailable, ModbusBus
from drivers.passback import PassbackStore
from drivers.registry import register_device
from edge.engine import DeviceContext
from edge.model import Decision
from edge.supervise import spawn as spawn_supervised

log = structlog.get_logger(__name__)


class BarrierConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bus: str = Field(description="id of a bus in `buses`")
    device_id: int = Field(ge=0, le=247, description="Modbus unit / slave address")
    zone: str = Field(min_length=1, description="zone a credential must carry")
    direction: Literal["in", "out"] = Field(description="which way a vehicle passing it goes")
    open_coil: int = Field(0, ge=0, le=255, description="pulsed to raise the arm (controller's OPEN)")
    close_coil: int | None = Field(
        None, ge=0, le=255, description="pulsed to lower it; absent: the controller closes by itself"
    )
    stop_coil: int | None = Field(
        None, ge=0, le=255, description="kept off (safe state); a vehicle under a falling arm gets OPEN"
    )
    pulse_ms: int = Field(500, ge=100, le=25_500, description="length of an open/close pulse")
    loop_input: int = Field(ge=0, description="discrete input of the loop detector (vehicle present)")
    loop_present_when: bool = Field(True, description="input value meaning 'vehicle present'")
    up_limit_input: int | None = Field(None, ge=0, description="input active when the arm is up")
    down_limit_input: int | None = Field(None, ge=0, description="input active when the arm is down")
    close_delay_s: float = Field(1.0, ge=0, le=300, description="wait after the vehicle left the loop")
    close_timeout_s: float = Field(30.0, gt=0, le=3600, description="no vehicle came: close anyway")
    travel_s: float = Field(4.0, gt=0, le=60, description="time the arm needs to go up or down")
    passback: Literal["none", "soft", "hard"] = Field(
        "none", description="same direction twice in the group: hard denies, soft grants with an alarm"
    )
    passback_group: str = Field("main", min_length=1, description="barriers sharing passback state")
    readers: list[str] = Field(default_factory=list, description="reader ids that open this barrier")

    @model_validator(mode="after")
    def _distinct(self) -> BarrierConfig:
        coils = [c for c in (self.open_coil, self.close_coil, self.stop_coil) if c is not None]
        if len(set(coils)) != len(coils):
            raise ValueError("open_coil, close_coil and stop_coil must be different relays")
        ins = [i for i in (self.loop_input, self.up_limit_input, self.down_limit_input) if i is not None]
        if len(set(ins)) != len(ins):
            raise ValueError("loop_input, up_limit_input and down_limit_input must be different inputs")
        return self

    def outputs(self) -> list[tuple[str, int, int, str]]:
        """(bus, unit, coil, key) of every relay this barrier drives, for the config's overlap check."""
        named = (("open_coil", self.open_coil), ("close_coil", self.close_coil), ("stop_coil", self.stop_coil))
        return [(self.bus, self.device_id, coil, key) for key, coil in named if coil is not None]


class _Coils:
    """One barrier's coil writes, in order through one worker: the cut of a close pulse always reaches
    the board before the open that follows it. A pulse's off is scheduled when the pulse is asked for,
    so it follows even if the on write timed out (the board may have switched anyway)."""

    def __init__(self, bus: ModbusBus, unit: int, pulse_s: float, name: str) -> None:
        self.bus, self.unit, self.pulse_s, self.name = bus, unit, pulse_s, name
        self._queue: asyncio.Queue[tuple[int, bool, asyncio.Future[None]]] = asyncio.Queue()
        self._offs: dict[int, asyncio.TimerHandle] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:  # supervised: a dead worker would leave the arm deaf to every grant
            self._task = spawn_supervised(self.name, self._worker)

    async def stop(self) -> None:
        for h in self._offs.values():
            h.cancel()
        self._offs.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while not self._queue.empty():
            _, _, fut = self._queue.get_nowait()
            if not fut.done():
                fut.set_exception(DeviceUnavailable("stopped"))

    def pulse(self, coil: int) -> asyncio.Future[None]:
        fut = self.set(coil, True)
        self._offs[coil] = asyncio.get_running_loop().call_later(self.pulse_s, self.set, coil, False)
        return fut

    def set(self, coil: int, on: bool) -> asyncio.Future[None]:
        """Queue a write (an off also cancels the pending end of a pulse on that coil)."""
        handle = self._offs.pop(coil, None)
        if handle is not None:
            handle.cancel()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(_retrieve)
        self._queue.put_nowait((coil, on, fut))
        return fut

    async def _worker(self) -> None:
        while True:
            coil, on, fut = await self._queue.get()
            try:
                await self.bus.write_coil(self.unit, coil, on)
            except Exception as exc:  # any failure fails this write, never the worker
                log.warning("barrier_write_failed", name=self.name, coil=coil, on=on, error=str(exc))
                if not fut.done():
                    fut.set_exception(exc if isinstance(exc, DeviceUnavailable) else DeviceUnavailable(str(exc)))
            else:
                if not fut.done():
                    fut.set_result(None)


class Barrier(Device):
    """One barrier arm. Safety: every output is off at start-up and shutdown (nothing is pulsed, the arm
    is never sent down by either); down is only commanded while the loop is read clear; a vehicle under a
    falling arm raises it at once; a fire holds the open contact on."""

    kind = "barrier"
    actions = frozenset({"open"})

    def __init__(self, barrier_id: str, cfg: BarrierConfig, env: DeviceEnv) -> None:
        super().__init__(barrier_id, cfg, env)
        self.cfg: BarrierConfig = cfg
        self.bus = env.buses[cfg.bus]
        self._unlisten: Callable[[], None] | None = None  # removes its bus status listener (stop)
        params = Params(cfg.close_delay_s, cfg.close_timeout_s, cfg.travel_s,
                        up_limit=cfg.up_limit_input is not None, down_limit=cfg.down_limit_input is not None)  # fmt: skip
        self.logic = BarrierLogic(params)
        self.passback = PassbackStore.for_env(env)
        self._coils = _Coils(self.bus, cfg.device_id, cfg.pulse_ms / 1000, f"barrier-{barrier_id}-coils")
        self._timer: asyncio.TimerHandle | None = None
        self._running = False
        self._log = log.bind(barrier=barrier_id, bus=cfg.bus, device_id=cfg.device_id)

    # --- identity and health ----------------------------------------------------------------
    @property
    def online(self) -> bool:
        return self.bus.is_online(self.cfg.device_id)

    @property
    def error(self) -> str | None:
        return None if self.online else self.bus.device_error(self.cfg.device_id) or "offline"

    def context(self, key: str | None = None) -> DeviceContext:
        last = None
        if key is not None and self.cfg.passback != "none":
            last = self.passback.last(key, self.cfg.passback_group)
        return DeviceContext(self.device_id, self.cfg.zone, "normal", self.online, direction=self.cfg.direction,
                             passback=self.cfg.passback, last_direction=last)  # fmt: skip

    def units(self) -> set[tuple[str, int]]:
        return {(self.cfg.bus, self.cfg.device_id)}

    def actuation_timeout_s(self) -> float:
        """A queued turn plus one request with its retries, twice over (as a door)."""
        bus = self.bus.cfg
        return 2 * bus.timeout * (bus.retries + 1) + 1.0

    def inputs(self) -> dict[str, tuple[str, int, int]]:
        cfg = self.cfg
        roles = (("loop", cfg.loop_input), ("up_limit", cfg.up_limit_input), ("down_limit", cfg.down_limit_input))
        return {role: (cfg.bus, cfg.device_id, a) for role, a in roles if a is not None}

    def status(self) -> dict[str, Any]:
        lg = self.logic
        return {"kind": self.kind, "arm": lg.arm, "vehicle": lg.loop, "fire": lg.fire,
                "direction": self.cfg.direction, "pending_grants": len(lg.credits)}  # fmt: skip

    # --- lifecycle ------------------------------------------------------------------------
    async def start(self, *, fire: bool = False) -> None:
        """Every output off (nothing pulsed), or the open contact held on when a fire is on already."""
        self.bus.register_device(self.cfg.device_id)
        if self._unlisten is None:
            self._unlisten = self.bus.on_status(self._on_status)
        self._running = True
        self._coils.start()
        self.logic.start(self._now(), fire)  # its one command (hold_on under fire) is written just below
        await self._safe_outputs("barrier_initial_outputs_failed")
        handlers = {"loop": self._loop, "up_limit": lambda v, first: self._limit("up", v),
                    "down_limit": lambda v, first: self._limit("down", v)}  # fmt: skip
        for role, (bus, unit, address) in self.inputs().items():
            self.env.inputs.watch(bus, unit, address, handlers[role])
        self.env.inputs.on_lost(self.cfg.bus, self.cfg.device_id, self._inputs_lost)
        if self.passback.problem is not None:  # a damaged passback.db was replaced: say so, once
            self.env.emit(EventSpec(self.device_id, "sensor", "alarm", "device_unavailable",
                                    credential="passback.db", subject=self.passback.problem))  # fmt: skip
            self.passback.problem = None
        self._log.info("barrier_started", fire=fire, direction=self.cfg.direction)

    async def stop(self) -> None:
        """Every output off, timers cancelled: nothing is released and the arm is never sent down."""
        self._running = False
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self._coils.stop()
        for coil in self._all_coils():
            try:
                await self.bus.write_coil(self.cfg.device_id, coil, False)
            except DeviceUnavailable as exc:
                self._log.error("barrier_final_outputs_failed", coil=coil, error=str(exc))
        self.passback.release()
        self._log.info("barrier_stopped", arm=self.logic.arm)

    # --- the Device interface -------------------------------------------------------------
    async def grant(self, grant: Grant) -> None:
        """Raise the arm for one vehicle (no write when it is up or rising already)."""
        if not self.online:  # fail fast: the grant is followed by device_unavailable
            raise DeviceUnavailable(f"offline: {self.bus.device_error(self.cfg.device_id)}")
        try:
            await self._run(self.logic.grant(self._now(), grant.key))
        except DeviceUnavailable:
            self.logic.open_failed()  # the next grant writes open again
            raise

    async def act(self, action: str, args: Mapping[str, Any]) -> str | None:
        if action != "open":
            return "unsupported"
        if not self.online:
            return "device_unavailable"
        await self.grant(Grant(Decision("granted", "ok"), "remote"))
        return None

    async def fire(self, active: bool) -> None:
        """Fire: the arm raised and held up whatever the timers; cleared: it closes once the loop is clear."""
        self._log.warning("barrier_fire_raise" if active else "barrier_fire_restore", arm=self.logic.arm)
        await self._run(self.logic.set_fire(self._now(), active))

    # --- internals --------------------------------------------------------------------------
    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _all_coils(self) -> list[int]:
        return [c for c in (self.cfg.open_coil, self.cfg.close_coil, self.cfg.stop_coil) if c is not None]

    def _run(self, cmds: list[Command], *, wait: bool = True) -> asyncio.Future[Any]:
        """Carry out the logic's commands; the returned future is done when their writes have been sent."""
        cfg, futs = self.cfg, []
        for cmd in cmds:
            if cmd.kind in ("open", "hold_on"):
                if cfg.close_coil is not None:
                    self._coils.set(cfg.close_coil, False)  # cut a close pulse first: open wins
                hold = cmd.kind == "hold_on"
                futs.append(self._coils.set(cfg.open_coil, True) if hold else self._coils.pulse(cfg.open_coil))
                self._log.info("barrier_open", hold=hold)
            elif cmd.kind == "hold_off":
                futs.append(self._coils.set(cfg.open_coil, False))
            elif cmd.kind == "close":
                self._log.info("barrier_close", commanded=cfg.close_coil is not None)
                if cfg.close_coil is not None:
                    self._coils.set(cfg.open_coil, False)
                    futs.append(self._coils.pulse(cfg.close_coil))
            elif cmd.kind == "tailgating":
                self._log.warning("barrier_tailgating")
                self.env.emit(EventSpec(self.device_id, "sensor", "alarm", "tailgating", direction=cfg.direction))
            elif cmd.kind == "passage" and cmd.key is not None:
                self.passback.record(cmd.key, cfg.passback_group, cfg.direction)
        self._schedule()
        if not wait:
            return asyncio.gather(*futs, return_exceptions=True)
        return asyncio.gather(*futs)

    def _schedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        when = self.logic.deadline()
        if when is not None and self._running:
            self._timer = asyncio.get_running_loop().call_at(when + 0.001, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self._running:
            self._run(self.logic.tick(self._now()), wait=False)

    def _loop(self, value: bool, first: bool) -> None:
        if self._running:
            present = value == self.cfg.loop_present_when
            self._run(self.logic.set_loop(self._now(), present, first), wait=False)

    def _limit(self, which: Literal["up", "down"], value: bool) -> None:
        if self._running:
            self._run(self.logic.set_limit(self._now(), which, value), wait=False)

    def _inputs_lost(self, lost: bool, error: str | None) -> None:
        if lost and self._running:
            self._log.warning("barrier_inputs_lost", error=error)
            self._run(self.logic.inputs_lost(self._now()), wait=False)

    async def _safe_outputs(self, event: str) -> None:
        """Every coil to what the state wants: the open contact on only under fire, the rest off."""
        for coil in self._all_coils():
            on = coil == self.cfg.open_coil and self.logic.fire
            try:
                await self._coils.set(coil, on)
            except DeviceUnavailable as exc:
                self._log.warning(event, coil=coil, error=str(exc))

    def _on_status(self, device_id: int, online: bool, error: str | None) -> None:
        """A board back online may have rebooted mid-pulse: set every coil to what the state wants."""
        if device_id == self.cfg.device_id and self._running and online:
            self._log.info("barrier_online")
            asyncio.get_running_loop().create_task(self._safe_outputs("barrier_reassert_failed"))


def _retrieve(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()  # a write nobody waits for (an input-driven pulse) fails only in the log


register_device("barriers", BarrierConfig, Barrier)
