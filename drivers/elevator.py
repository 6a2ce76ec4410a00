"""Elevator floor control (梯控): per-floor button-enable relays on Modbus relay boards.

A car's floor buttons are wired through relays: a floor's button works only while its relay enables
it. Free floors (the lobby) are always enabled, optionally only within weekly windows; a grant enables
the credential's floors within the car's for ``grant_s``; a fire enables every floor. With
``auto_select`` (层控) a grant of exactly one floor also presses that floor's button (a relay across
it). ``hall_call_outputs`` call the car to a landing (remote ``elevator_call``).

Config model in drivers/elevator_config.py; the relay state model and its per-board writes are in
drivers/elevator_floors.py.
Registers itself as the ``elevators`` section.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

import structlog

from drivers.device import Device, DeviceEnv, Grant
from drivers.elevator_config import ElevatorConfig, RelayOutput
from drivers.elevator_floors import Board, Coil, RelayModel
from drivers.modbus_bus import DeviceUnavailable
from drivers.registry import register_device
from edge.engine import DeviceContext, in_windows
from edge.limits import SECONDS_MAX
from edge.supervise import spawn as spawn_supervised

log = structlog.get_logger(__name__)

RECHECK_S = 10.0
"""How often free-floor windows are re-evaluated and coils a failed write left unknown are rewritten."""


def _coil(out: RelayOutput) -> Coil:
    return out.bus, out.device_id, out.coil


class Elevator(Device):
    """One car's floor relays. Safety: at start-up and at shutdown every floor relay is put in the
    state that enables only the free floors (per ``enable_when``) and every select/hall-call relay is
    switched off; stop does so even under fire (like doors: shutdown releases nothing, and a fire still
    on is applied again at the next start). A fire enables every floor whatever the timers.

    The desired state of every coil follows from plain values (fire, grant expiry per floor, pulse
    expiry per relay, free floors now); one timer task wakes at the next expiry and re-syncs the boards
    concerned without waiting for them, so a dead board never holds another's relays."""

    kind = "elevator"
    actions = frozenset({"elevator_call", "elevator_grant"})

    def __init__(self, device_id: str, cfg: ElevatorConfig, env: DeviceEnv) -> None:
        super().__init__(device_id, cfg, env)
        self.cfg: ElevatorConfig = cfg
        self._floors = tuple(sorted(cfg.floor_outputs))
        self._role: dict[Coil, tuple[str, int]] = {_coil(o): (n, f) for n, f, o in cfg._all()}
        self._relays = RelayModel(f"elevator-{device_id}", env.buses, self._role, self._desired)
        self._fire = False
        self._until: dict[int, float] = {}  # floor -> loop time its grant ends
        self._pulse_until: dict[Coil, float] = {}  # select / hall-call relay -> loop time it is released
        self._free: frozenset[int] = frozenset()
        self._running = False
        self._listening: dict[str, Callable[[], None]] = {}  # bus -> remover of this lift's status listener
        self._wake = asyncio.Event()
        self._timer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._tz = env.extra.get("tz")  # the site's ZoneInfo when the app passes it, else the box's zone
        self._log = log.bind(elevator=device_id)

    # --- identity and health -------------------------------------------------------------
    @property
    def online(self) -> bool:
        return all(self.env.buses[b].is_online(u) for b, u in self._relays.boards)

    @property
    def error(self) -> str | None:
        for b, u in self._relays.boards:
            if not self.env.buses[b].is_online(u):
                return f"{b} unit {u}: {self.env.buses[b].device_error(u) or 'offline'}"
        return None

    def context(self, key: str | None = None) -> DeviceContext:
        return DeviceContext(self.device_id, self.cfg.zone, "normal", self.online, floors=self._floors)

    def units(self) -> set[tuple[str, int]]:
        return set(self._relays.boards)

    def actuation_timeout_s(self) -> float:
        """An enable and then a select press, each a queued turn plus one request with its retries."""
        worst = max(
            self.env.buses[b].cfg.timeout * (self.env.buses[b].cfg.retries + 1) for b, _ in self.units()
        )
        return 4 * worst + 1.0

    def status(self) -> dict[str, Any]:
        now = asyncio.get_running_loop().time()
        return {
            "kind": self.kind,
            "fire": self._fire,
            "enabled": [f for f in self._floors if self._enabled(f, now)],
            "granted": {f: round(t - now, 1) for f, t in sorted(self._until.items()) if t > now},
        }

    # --- lifecycle --------------------------------------------------------------------------
    async def start(self, *, fire: bool = False) -> None:
        """Every relay to the safe state (only free floors enabled), or every floor enabled under fire."""
        for bus_id in {b for b, _ in self._relays.boards} - set(self._listening):
            bus = self.env.buses[bus_id]
            cb = lambda unit, online, err, bus_id=bus_id: self._on_status(bus_id, unit, online)  # noqa: E731
            self._listening[bus_id] = bus.on_status(cb)
        for b, u in self._relays.boards:
            self.env.buses[b].register_device(u)
        self._fire = fire
        self._running = True
        self._refresh_free()
        self._relays.forget()
        errors = await self._relays.sync()
        for board, err in errors.items():  # rewritten when the board answers again
            self._log.warning("elevator_initial_state_failed", bus=board[0], unit=board[1], error=err)
        self._timer = spawn_supervised(f"elevator-{self.device_id}", self._timers)
        self._log.info(
            "elevator_started", fire=fire, free=sorted(self._free), enable_when=self.cfg.enable_when
        )

    async def stop(self) -> None:
        """Grants end, presses release, fire is not applied: the start-up safe state is written."""
        self._running = False
        for remove in self._listening.values():
            remove()
        self._listening.clear()
        tasks = [t for t in (self._timer, *self._tasks) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._timer = None
        self._fire = False
        self._until.clear()
        self._pulse_until.clear()
        self._relays.forget()
        try:
            errors = await self._relays.sync()
        finally:
            self._relays.close()
        for board, err in errors.items():
            self._log.error("elevator_final_state_failed", bus=board[0], unit=board[1], error=err)
        self._log.info("elevator_stopped")

    # --- acting -----------------------------------------------------------------------------
    async def grant(self, grant: Grant) -> None:
        seconds = self.cfg.grant_s if grant.seconds is None else grant.seconds
        await self._enable(self._in_car(grant.decision.floors), seconds)

    async def act(self, action: str, args: Mapping[str, Any]) -> str | None:
        """``elevator_grant``: the floors within the car for ``seconds`` (one floor with auto_select is
        also pressed); none -> ``no_floors``. ``elevator_call``: pulse the landing's call relay; a car
        without hall-call relays -> ``unsupported``, a floor without one -> ``no_floors``."""
        try:
            if action == "elevator_grant":
                floors = self._in_car(args.get("floors"))
                if not floors:
                    return "no_floors"
                seconds = args.get("seconds")
                if seconds is None:
                    seconds = self.cfg.grant_s
                elif type(seconds) not in (int, float) or not 0 < seconds <= SECONDS_MAX:
                    return "malformed"  # the command layer checks it; a local caller may not have
                await self._enable(floors, float(seconds))
                return None
            if action == "elevator_call":
                if not self.cfg.hall_call_outputs:
                    return "unsupported"
                floor = args.get("floor")
                out = self.cfg.hall_call_outputs.get(floor) if type(floor) is int else None
                if out is None:
                    return "no_floors"
                await self._press(_coil(out))
                return None
        except DeviceUnavailable as exc:
            self._log.warning("elevator_action_failed", action=action, error=str(exc))
            return "device_unavailable"
        return "unsupported"

    def action_facts(self, action: str, args: Mapping[str, Any], error: str | None) -> dict[str, Any]:
        """A granted ``elevator_grant`` event names the floors it enabled (those within the car)."""
        if action != "elevator_grant" or error is not None:
            return {}
        return {"floors": tuple(self._in_car(args.get("floors")))}

    async def fire(self, active: bool) -> None:
        """Fire: every floor enabled, kept so whatever the timers; cleared: free floors and running grants.
        Every board is written (a dead one does not hold the others); raises if one failed."""
        self._fire = active
        self._log.warning("elevator_fire_release" if active else "elevator_fire_restore")
        self._wake.set()
        self._check(await self._relays.sync())

    # ---------------------------------------------------------------- internals

    def _in_car(self, floors: Iterable[int] | None) -> list[int]:
        car = self.cfg.floor_outputs
        return sorted({f for f in floors or () if type(f) is int and f in car})

    async def _enable(self, floors: list[int], seconds: float) -> None:
        if not floors:
            return  # the engine denies `no_floors` before a grant gets here
        boards = self._boards_of(_coil(self.cfg.floor_outputs[f]) for f in floors)
        self._fail_fast(boards)
        until = asyncio.get_running_loop().time() + seconds
        for f in floors:
            self._until[f] = max(self._until.get(f, 0.0), until)  # overlapping grants extend per floor
        self._wake.set()
        self._check(await self._relays.sync(boards))
        self._log.info("elevator_floors_enabled", floors=floors, seconds=seconds)
        select = self.cfg.select_outputs.get(floors[0]) if len(floors) == 1 else None
        if self.cfg.auto_select and select is not None and not self._fire:
            await self._press(_coil(select))  # after the enable is acknowledged: a press before is lost

    async def _press(self, coil: Coil) -> None:
        """A select or hall-call relay on for ``pulse_ms`` (released by the timer task)."""
        board = self._relays.board_of(coil)
        self._fail_fast([board])
        until = asyncio.get_running_loop().time() + self.cfg.pulse_ms / 1000
        self._pulse_until[coil] = max(self._pulse_until.get(coil, 0.0), until)
        self._wake.set()
        self._check(await self._relays.sync([board]))

    def _boards_of(self, coils: Iterable[Coil]) -> list[Board]:
        return list(dict.fromkeys(self._relays.board_of(c) for c in coils))

    def _fail_fast(self, boards: list[Board]) -> None:
        """An offline board gets no new state: the grant fails now and nothing switches later."""
        for b, u in boards:
            if not self.env.buses[b].is_online(u):
                raise DeviceUnavailable(f"offline: {b} unit {u}: {self.env.buses[b].device_error(u)}")

    @staticmethod
    def _check(errors: dict[Board, str]) -> None:
        if errors:
            raise DeviceUnavailable("; ".join(f"{b} unit {u}: {e}" for (b, u), e in errors.items()))

    def _enabled(self, floor: int, now: float) -> bool:
        return self._fire or floor in self._free or self._until.get(floor, 0.0) > now

    def _desired(self, coil: Coil) -> bool:
        now = asyncio.get_running_loop().time()
        role, floor = self._role[coil]
        if role == "floor_outputs":
            enabled = self._enabled(floor, now)
            return enabled if self.cfg.enable_when == "energised" else not enabled
        return self._pulse_until.get(coil, 0.0) > now  # a press: relay on, whatever the wiring

    def _refresh_free(self) -> None:
        local = datetime.now(self._tz) if self._tz is not None else datetime.now().astimezone()
        free: set[int] = set()
        for f in self.cfg.free_floors:
            if not f.parsed_windows or in_windows(f.parsed_windows, local):
                free.add(f.floor)
        self._free = frozenset(free)

    async def _timers(self) -> None:
        """Ends grants and presses at their time; every RECHECK_S follows free-floor windows and
        rewrites coils a failed write left unknown. Syncs are spawned, never awaited here."""
        loop = asyncio.get_running_loop()
        full_at = loop.time() + RECHECK_S
        while self._running:
            self._wake.clear()
            now = loop.time()
            ended = [f for f, t in self._until.items() if t <= now]
            released = [c for c, t in self._pulse_until.items() if t <= now]
            for f in ended:
                del self._until[f]
            for c in released:
                del self._pulse_until[c]
            if now >= full_at:
                full_at = now + RECHECK_S
                self._refresh_free()
                self._spawn_sync(None)  # only what differs is written: usually nothing
            elif ended or released:
                self._spawn_sync(
                    self._boards_of([*released, *(_coil(self.cfg.floor_outputs[f]) for f in ended)])
                )
            nxt = min((full_at, *self._until.values(), *self._pulse_until.values()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, nxt - loop.time())):
                    await self._wake.wait()

    def _spawn_sync(self, boards: list[Board] | None) -> None:
        task = asyncio.get_running_loop().create_task(self._quiet_sync(boards))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _quiet_sync(self, boards: list[Board] | None) -> None:
        for (b, u), err in (await self._relays.sync(boards)).items():
            self._log.debug("elevator_sync_failed", bus=b, unit=u, error=err)

    def _on_status(self, bus_id: str, unit: int, online: bool) -> None:
        board = (bus_id, unit)
        if not self._running or board not in self._relays.boards:
            return
        self._log.info("elevator_board_online" if online else "elevator_board_offline", bus=bus_id, unit=unit)
        if online:  # it may have rebooted (all relays off) or missed writes: write its whole state
            self._relays.forget([board])
            self._spawn_sync([board])


register_device("elevators", ElevatorConfig, Elevator)
