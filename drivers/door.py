"""Door controller on a Modbus relay board: lock relay, door sensor, exit button.

Config model here; the driver is below it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field

from drivers.modbus_bus import DeviceUnavailable, ModbusBus
from edge.supervise import spawn as spawn_supervised

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

    def outputs(self) -> list[tuple[str, int, int, str]]:
        """(bus, unit, coil, key) of every relay output this door drives: two devices must never share
        one (a config check refuses it), or one door's relock would cut another's release."""
        return [(self.bus, self.device_id, self.lock_coil, "lock_coil")]


DoorMode = Literal["normal", "hold_open", "lock"]
InputCallback = Callable[[str, str, bool], None]
FLASH_ON_BASE = 0x0200


class Coalescer:
    """Runs one async action for many callers: at most one run in flight and one queued.

    A caller waits for a run that *started after* its call, so it sees its own effect (the release it
    asked for reached the board) and its failure; a flood of a thousand callers costs two runs, not a
    thousand queued writes that would go on opening the door long after the flood stopped.
    """

    def __init__(self, action: Callable[[], Awaitable[None]], name: str) -> None:
        self._action = action
        self._name = name
        self._pending: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    async def __call__(self) -> None:
        loop = asyncio.get_running_loop()
        if self._pending is None:
            self._pending = loop.create_future()
            self._pending.add_done_callback(_retrieve)
            if self._task is None or self._task.done():
                self._task = loop.create_task(self._drain(), name=self._name)
        # shield: one caller giving up (its own timeout) must not cancel the write the others wait for
        await asyncio.shield(self._pending)

    async def _drain(self) -> None:
        while self._pending is not None:
            fut, self._pending = self._pending, None
            try:
                await self._action()
            except asyncio.CancelledError:
                if not fut.done():
                    fut.set_exception(DeviceUnavailable("stopped"))
                raise
            except Exception as exc:
                if not fut.done():
                    fut.set_exception(exc)
            else:
                if not fut.done():
                    fut.set_result(None)

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._pending is not None and not self._pending.done():
            self._pending.set_exception(DeviceUnavailable("stopped"))
        self._pending = None


def _retrieve(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()  # retrieved: no "exception was never retrieved" when every waiter gave up


class DoorLocked(DeviceUnavailable):
    """pulse() refused because the door is in 'lock' mode (a lockdown opens nothing).

    Subclasses DeviceUnavailable so a caller that only knows that error still fails safe."""


class Door:
    """One door on a relay board: releases the lock, follows the mode, reports its inputs.

    Safety rules: the lock coil is switched off at start-up and at shutdown whatever the mode, a pulse
    never ends early (a second one extends it), and when the board comes back online after an outage
    the coil is set to what the mode wants (it may have rebooted mid-pulse or missed an off write).

    Bounded work: a pulse while the lock is already released only moves the relock time (no write); the
    on write (or the flash command) is coalesced, so a door has at most one write in flight and one
    queued however many grants arrive.
    """

    def __init__(self, door_id: str, cfg: DoorConfig, bus: ModbusBus) -> None:
        self.door_id = door_id
        self.cfg = cfg
        self.bus = bus
        self._mode: DoorMode = "normal"
        self._callbacks: list[InputCallback] = []
        self._pulse_until = 0.0
        self._closer: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._reassert: asyncio.Task[None] | None = None
        self._running = False
        self._door_open: bool | None = None
        self._button: bool | None = None
        self._coil_on = False  # an on write was acknowledged and no off write has been sent since
        self._flash_until = 0.0  # loop time the board's running flash (if any) relocks by itself
        self._write_on = Coalescer(self._send_on, f"door-{door_id}-on")
        self._log = log.bind(door=door_id, bus=cfg.bus, device_id=cfg.device_id)

    @property
    def mode(self) -> DoorMode:
        return self._mode

    @property
    def online(self) -> bool:
        return self.bus.is_online(self.cfg.device_id)

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

    async def start(self) -> None:
        self.bus.register_device(self.cfg.device_id)
        self.bus.on_status(self._on_status)
        self._running = True
        try:
            await self.bus.write_coil(self.cfg.device_id, self.cfg.lock_coil, False)
        except DeviceUnavailable as exc:
            # Retried by _on_status when the board answers again.
            self._log.warning("door_initial_lock_failed", error=str(exc))
        if self.cfg.door_sensor_input is not None or self.cfg.exit_button_input is not None:
            self._poller = spawn_supervised(f"door-{self.door_id}-poll", self._poll)
        self._log.info("door_started", mode=self._mode)

    async def stop(self) -> None:
        """Stop polling and switch the lock coil off (also in hold_open). Call before the bus stops."""
        self._running = False
        for task in (self._poller, self._closer, self._reassert):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._poller = self._closer = self._reassert = None
        self._write_on.cancel()
        self._pulse_until = self._flash_until = 0.0
        self._coil_on = False
        try:
            await self.bus.write_coil(self.cfg.device_id, self.cfg.lock_coil, False)
        except DeviceUnavailable as exc:
            self._log.error("door_final_lock_failed", error=str(exc))
        self._log.info("door_stopped")

    async def pulse(self) -> None:
        """Release the lock for ``pulse_ms``. Raises DeviceUnavailable (DoorLocked in 'lock' mode)."""
        if self._mode == "lock":
            raise DoorLocked("door_locked")
        if self._mode == "hold_open":
            return  # already released
        if not self.online:  # fail fast, and schedule no off write that could only fail too
            raise DeviceUnavailable(f"offline: {self.bus.device_error(self.cfg.device_id)}")
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
        return self._mode == "hold_open" or (self._mode == "normal" and self._pulse_active())

    async def _close_later(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            delay = self._pulse_until - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            if self._mode == "hold_open":
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
        if self.cfg.pulse_mode == "flash" and self._mode == "normal":
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

    async def _poll(self) -> None:
        addrs = [a for a in (self.cfg.door_sensor_input, self.cfg.exit_button_input) if a is not None]
        lo, count = min(addrs), max(addrs) - min(addrs) + 1
        while True:
            try:
                bits = await self.bus.read_discrete_inputs(self.cfg.device_id, lo, count)
            except DeviceUnavailable:
                pass  # the bus tracks health and logs; keep polling at the normal pace
            else:
                self._inputs(bits, lo)
            await asyncio.sleep(self.bus.poll_interval_s)

    def _inputs(self, bits: list[bool], lo: int) -> None:
        if self.cfg.door_sensor_input is not None:
            is_open = bits[self.cfg.door_sensor_input - lo] != self.cfg.door_sensor_closed_when
            if self._door_open is not None and is_open != self._door_open:
                self._emit("door_sensor", is_open)
            self._door_open = is_open
        if self.cfg.exit_button_input is not None:
            pressed = bits[self.cfg.exit_button_input - lo]
            if self._button is not None and pressed != self._button:
                self._emit("exit_button", pressed)
            self._button = pressed

    def _emit(self, kind: str, value: bool) -> None:
        self._log.info("door_input", kind=kind, value=value)
        for cb in list(self._callbacks):
            try:
                cb(self.door_id, kind, value)
            except Exception:
                self._log.exception("door_input_callback_failed", kind=kind)
