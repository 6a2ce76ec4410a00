"""Door controller on a Modbus relay board: lock relay, door sensor, exit button.

Config model here; the driver is below it. Registers itself as the `doors` section.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field

from drivers.coalesce import Coalescer
from drivers.device import Device, DeviceEnv, EventSpec, Grant
from drivers.door_watch import DoorWatch, NoteResult, Supervisor
from drivers.inputs import DEFAULT_DEBOUNCE_MS
from drivers.modbus_bus import DeviceUnavailable
from drivers.registry import register_device
from edge.engine import DeviceContext

log = structlog.get_logger(__name__)


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
    held_open_s: float = Field(
        30, ge=0, le=86_400, description="open longer than this: door_held_open alarm (0 = off)"
    )
    forced_alarm: bool = Field(
        True, description="opened with no grant, remote open or exit button: door_forced alarm"
    )

    def outputs(self) -> list[tuple[str, int, int, str]]:
        """(bus, unit, coil, key) of every relay output this door drives: two devices must never share
        one (a config check refuses it), or one door's relock would cut another's release."""
        return [(self.bus, self.device_id, self.lock_coil, "lock_coil")]


DoorMode = Literal["normal", "hold_open", "lock"]
InputCallback = Callable[[str, str, bool], None]
FLASH_ON_BASE = 0x0200


class DoorLocked(DeviceUnavailable):
    """pulse() refused because the door is in 'lock' mode (a lockdown opens nothing).

    Subclasses DeviceUnavailable so a caller that only knows that error still fails safe."""


class Door(Device):
    """One door on a relay board: releases the lock, follows the mode, reports its inputs.

    Safety rules: the lock coil is switched off at start-up and at shutdown whatever the mode, a pulse
    never ends early (a second one extends it), and when the board comes back online after an outage
    the coil is set to what the mode wants (it may have rebooted mid-pulse or missed an off write).

    Bounded work: a pulse while the lock is already released only moves the relock time (no write); the
    on write (or the flash command) is coalesced, so a door has at most one write in flight and one
    queued however many grants arrive.

    Supervision (a door with a sensor): drivers/door_watch.py decides `door_forced` / `door_held_open`
    from what this class feeds it; every release it grants authorises an opening, hold_open and fire
    are deliberate releases.
    """

    kind = "door"
    actions = frozenset({"open", "hold_open", "lock", "normal"})

    def __init__(self, door_id: str, cfg: DoorConfig, env: DeviceEnv) -> None:
        super().__init__(door_id, cfg, env)
        self.door_id = door_id
        self.cfg: DoorConfig = cfg
        self.bus = env.buses[cfg.bus]
        self._unlisten: Callable[[], None] | None = None  # removes its bus status listener (stop)
        self._mode: DoorMode = "normal"
        self._fire = False  # fire linkage: the lock is held released whatever the mode
        self._callbacks: list[InputCallback] = []
        self._pulse_until = 0.0
        self._closer: asyncio.Task[None] | None = None
        self._reassert: asyncio.Task[None] | None = None
        self._running = False
        self._door_open: bool | None = None
        self._button: bool | None = None
        self._coil_on = False  # an on write was acknowledged and no off write has been sent since
        self._flash_until = 0.0  # loop time the board's running flash (if any) relocks by itself
        self._write_on = Coalescer(self._send_on, f"door-{door_id}-on")
        self._log = log.bind(door=door_id, bus=cfg.bus, device_id=cfg.device_id)
        self.supervisor: Supervisor | None = None  # no sensor, no alarms
        if cfg.door_sensor_input is not None:
            debounce_s = getattr(self.bus.cfg, "debounce_ms", DEFAULT_DEBOUNCE_MS) / 1000
            grace_s = Supervisor.report_lag_s(self.bus.poll_interval_s, debounce_s, self.bus.cfg.timeout)
            watch = DoorWatch(held_open_s=cfg.held_open_s, forced_alarm=cfg.forced_alarm, grace_s=grace_s)
            self.supervisor = Supervisor(watch, self._alarm)

    @property
    def mode(self) -> DoorMode:
        return self._mode

    @property
    def online(self) -> bool:
        return self.bus.is_online(self.cfg.device_id)

    @property
    def error(self) -> str | None:
        return None if self.online else self.bus.device_error(self.cfg.device_id) or "offline"

    def context(self, key: str | None = None) -> DeviceContext:
        return DeviceContext(self.door_id, self.cfg.zone, self._mode, self.online)

    def units(self) -> set[tuple[str, int]]:
        return {(self.cfg.bus, self.cfg.device_id)}

    def status(self) -> dict[str, Any]:
        alarms = list(self.supervisor.watch.active) if self.supervisor is not None else []
        return {"kind": self.kind, "mode": self._mode, "fire": self._fire, "open": self._door_open,
                "alarms": alarms}  # fmt: skip

    def inputs(self) -> dict[str, tuple[str, int, int]]:
        # The button first: a press and an opening seen in the same read reach the watches in this
        # order, so leaving by the button is not taken for a forced door.
        roles = (("exit_button", self.cfg.exit_button_input), ("door_sensor", self.cfg.door_sensor_input))
        return {role: (self.cfg.bus, self.cfg.device_id, a) for role, a in roles if a is not None}

    def actuation_timeout_s(self) -> float:
        """The longest a grant may wait for its release to reach the board before it counts as failed:
        a queued turn plus one request with its retries, twice over."""
        bus = self.bus.cfg
        return 2 * bus.timeout * (bus.retries + 1) + 1.0

    @property
    def door_open(self) -> bool | None:
        """Last door contact reading (True = open), None if no sensor or not read yet."""
        return self._door_open

    def on_input(self, cb: InputCallback) -> None:
        """Add ``cb(door_id, kind, value)``; kind "exit_button" (value True = pressed, False = released)
        or "door_sensor" (value True = door open). Called on changes only, not for the first reading,
        so a button held or a door open at boot is not taken as an event."""
        self._callbacks.append(cb)

    async def start(self, *, fire: bool = False) -> None:
        """Lock coil off (locked), or held released when a fire is already on at start-up."""
        self.bus.register_device(self.cfg.device_id)
        if self._unlisten is None:
            self._unlisten = self.bus.on_status(self._on_status)
        self._running = True
        self._fire = fire
        if self.supervisor is not None:
            self.supervisor.start()
        self._supervise_release()
        try:
            await self.bus.write_coil(self.cfg.device_id, self.cfg.lock_coil, fire)
        except DeviceUnavailable as exc:
            # Retried by _on_status when the board answers again.
            self._log.warning("door_initial_lock_failed", error=str(exc))
        handlers = {"exit_button": self._exit_button, "door_sensor": self._sensor}
        for role, (bus, unit, address) in self.inputs().items():
            self.env.inputs.watch(bus, unit, address, handlers[role])
        self._log.info("door_started", mode=self._mode, fire=fire)

    async def stop(self) -> None:
        """Switch the lock coil off (also in hold_open and under fire: shutdown releases nothing; a
        fire state is kept by the fire linkage and applied again at the next start). Call before the
        bus stops."""
        self._running = False
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        if self.supervisor is not None:
            self.supervisor.stop()  # its timer too
        for task in (self._closer, self._reassert):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._closer = self._reassert = None
        self._write_on.cancel()
        self._pulse_until = self._flash_until = 0.0
        self._coil_on = False
        try:
            await self.bus.write_coil(self.cfg.device_id, self.cfg.lock_coil, False)
        except DeviceUnavailable as exc:
            self._log.error("door_final_lock_failed", error=str(exc))
        self._log.info("door_stopped")

    # --- the Device interface -------------------------------------------------------------
    async def grant(self, grant: Grant) -> None:
        await self.pulse()

    async def act(self, action: str, args: Mapping[str, Any]) -> str | None:
        if action == "open":
            if not self.online:
                return "device_unavailable"
            await self.pulse()
            return None
        if action in ("hold_open", "lock", "normal"):
            await self.set_mode(action)  # type: ignore[arg-type]
            return None
        return "unsupported"

    async def fire(self, active: bool) -> None:
        """Fire: the lock is held released (overriding lock and hold_open); cleared: the mode again."""
        self._fire = active
        self._log.warning("door_fire_release" if active else "door_fire_restore", mode=self._mode)
        if not active and self.supervisor is not None:
            self.supervisor.secure()  # the fire cut any pulse that was running
        self._supervise_release()
        if active:
            await self.bus.write_coil(self.cfg.device_id, self.cfg.lock_coil, True)
            self._coil_on = True
            return
        self._pulse_until = 0.0
        await self._apply_mode()

    async def pulse(self) -> None:
        """Release the lock for ``pulse_ms``. Raises DeviceUnavailable (DoorLocked in 'lock' mode)."""
        if self._fire:
            return  # held released by the fire linkage
        if self._mode == "lock":
            raise DoorLocked("door_locked")
        if self._mode == "hold_open":
            return  # already released
        if not self.online:  # fail fast, and schedule no off write that could only fail too
            raise DeviceUnavailable(f"offline: {self.bus.device_error(self.cfg.device_id)}")
        self._authorise()
        if self.cfg.pulse_mode == "flash":
            # A flash restarts the board's timer. One sent within the last tenth of a pulse already
            # releases this grant for 90% of pulse_ms or more: write nothing (a held card, a flood).
            if self._flash_until - asyncio.get_running_loop().time() >= 0.9 * self.cfg.pulse_ms / 1000:
                return
            await self._write_on()
            return
        loop = asyncio.get_running_loop()
        self._pulse_until = max(self._pulse_until, loop.time() + self.cfg.pulse_ms / 1000)
        # The off is scheduled before the on is sent: if the on times out the board may still have
        # switched, so an off must follow either way.
        if self._closer is None or self._closer.done():
            self._closer = asyncio.create_task(self._close_later(), name=f"door-{self.door_id}-close")
        if self._coil_on:
            return  # already released: the relock moved, nothing to write
        await self._write_on()

    async def _send_on(self) -> None:
        if self.cfg.pulse_mode == "flash":
            units = max(1, self.cfg.pulse_ms // 100)
            t_sent = asyncio.get_running_loop().time()
            await self.bus.write_coil_raw(self.cfg.device_id, FLASH_ON_BASE + self.cfg.lock_coil, units)
            self._flash_until = t_sent + units / 10
            self._log.info("door_pulsed", mode="flash", units=units)
            return
        if self._coil_on or not self._wanted_on():
            return  # a run queued behind one that already switched it on, or the pulse is over
        await self.bus.write_coil(self.cfg.device_id, self.cfg.lock_coil, True)
        self._coil_on = self._wanted_on()  # an off sent meanwhile (mode change) wins
        self._log.info("door_pulsed", mode="coil", ms=self.cfg.pulse_ms)

    async def set_mode(self, mode: DoorMode) -> None:
        """hold_open: coil on until the mode changes; lock/normal: coil off (normal lets a running pulse
        finish). The mode is kept even if the write fails: it is re-applied when the board is back."""
        if mode not in ("normal", "hold_open", "lock"):
            raise ValueError(f"unknown door mode {mode!r}")
        self._mode = mode
        self._log.info("door_mode", mode=mode)
        if mode == "lock" and self.supervisor is not None:
            self.supervisor.secure()  # a lockdown cuts a running pulse
        self._supervise_release()
        if self._fire:
            return  # kept for when the fire clears; the lock stays released meanwhile
        if mode == "hold_open":
            await self.bus.write_coil(self.cfg.device_id, self.cfg.lock_coil, True)
            self._coil_on = self._mode == "hold_open"
            return
        if mode == "normal" and self._pulse_active():
            return
        self._pulse_until = self._flash_until = 0.0
        self._coil_on = False
        await self.bus.write_coil(self.cfg.device_id, self.cfg.lock_coil, False)

    # ---------------------------------------------------------------- internals

    def _pulse_active(self) -> bool:
        return self._pulse_until > asyncio.get_running_loop().time()

    def _wanted_on(self) -> bool:
        if self._fire:
            return True
        return self._mode == "hold_open" or (self._mode == "normal" and self._pulse_active())

    async def _close_later(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            delay = self._pulse_until - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            if self._mode == "hold_open" or self._fire:
                return
            self._coil_on = False  # before the write: a pulse meanwhile must send its own on
            try:
                await self.bus.write_coil(self.cfg.device_id, self.cfg.lock_coil, False)
            except DeviceUnavailable as exc:
                self._log.error("door_relock_failed", error=str(exc))
            # A pulse() during the off write queued its on behind it: go round again for its off.
            if self._pulse_until <= loop.time():
                return

    def _on_status(self, device_id: int, online: bool, error: str | None) -> None:
        if device_id != self.cfg.device_id or not self._running:
            return
        self._log.info("door_online" if online else "door_offline", error=error)
        if online and (self._reassert is None or self._reassert.done()):
            self._reassert = asyncio.get_running_loop().create_task(self._apply_mode())

    async def _apply_mode(self) -> None:
        if self.cfg.pulse_mode == "flash" and self._mode == "normal" and not self._fire:
            want = False
        else:
            want = self._wanted_on()
        self._coil_on = False
        self._flash_until = 0.0  # the board may have rebooted: no flash of ours is known to run
        try:
            await self.bus.write_coil(self.cfg.device_id, self.cfg.lock_coil, want)
            self._coil_on = want and self._wanted_on() and self.cfg.pulse_mode == "coil"
        except DeviceUnavailable as exc:
            self._log.warning("door_reassert_failed", error=str(exc))

    def _sensor(self, value: bool, first: bool) -> None:
        is_open = value != self.cfg.door_sensor_closed_when
        changed = self._door_open is not None and is_open != self._door_open and not first
        self._door_open = is_open
        if self.supervisor is not None:
            self.supervisor.sensor(is_open, first)
        if changed:
            self._emit("door_sensor", is_open)

    def _exit_button(self, pressed: bool, first: bool) -> None:
        changed = self._button is not None and pressed != self._button and not first
        self._button = pressed
        if not changed:
            return  # a button held at boot is not a press
        self._emit("exit_button", pressed)
        if pressed and self._running:
            self._authorise()  # also in 'lock' mode, where it opens nothing: free egress is no break-in
            self.env.emit(EventSpec(self.door_id, "button", "granted", "ok", credential="exit"))
            asyncio.get_running_loop().create_task(self._exit_open())

    async def _exit_open(self) -> None:
        try:
            async with asyncio.timeout(self.actuation_timeout_s()):
                await self.pulse()
        except Exception as exc:
            self._log.error("exit_open_failed", error=str(exc) or type(exc).__name__)
            denied = EventSpec(self.door_id, "button", "denied", "device_unavailable", credential="exit")
            self.env.emit(denied)

    # ---------------------------------------------------------------- supervision (door_watch.py)

    def _authorise(self) -> None:
        if self.supervisor is not None:
            self.supervisor.authorise(self.cfg.pulse_ms / 1000)

    def _supervise_release(self) -> None:
        if self.supervisor is not None:
            self.supervisor.released(self._fire or self._mode == "hold_open")

    def _alarm(self, result: NoteResult, reason: str) -> None:
        self._log.warning("door_alarm" if result == "alarm" else "door_alarm_closed", reason=reason)
        self.env.emit(EventSpec(self.door_id, "sensor", result, reason))

    def _emit(self, kind: str, value: bool) -> None:
        self._log.info("door_input", kind=kind, value=value)
        for cb in list(self._callbacks):
            try:
                cb(self.door_id, kind, value)
            except Exception:
                self._log.exception("door_input_callback_failed", kind=kind)


register_device("doors", DoorConfig, Door)
