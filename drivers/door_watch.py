"""Door supervision: `door_forced` and `door_held_open` alarms from the door contact.

A small state machine with no loop, no timers and no I/O: the door (drivers/door.py) feeds it what
happens (contact readings, the releases it grants, deliberate release states, the time) and emits the
events it returns. It only says when it next needs ``tick`` (the held-open deadline); ``Supervisor``
below runs it on the event loop with that one timer, cancelled at stop.

The rules (mqtt.md names the codes; these are the choices behind them):

* ``door_forced``: the contact shows the door opening (a change, not a first reading) while no release
  is authorised. A grant, a remote open or the exit button authorises one (``authorise(until)``) until
  the lock relocks, plus ``grace_s``: the contact is polled and debounced, so a door pushed in the last
  moment of a release is reported a little after the relock and is no break-in. The exit button
  authorises for the door's pulse (the release it asks for), even in 'lock' mode, where it opens
  nothing: free egress (a handle, a mechanical release) still lets a person out, and that is no
  break-in either.
* ``door_held_open``: open longer than ``held_open_s`` (0 = off), counted from the opening, or from the
  first reading when the door is found open at start-up or after its board came back (a door propped
  open across a reboot is still reported, but never as forced: that reading is a state, not a change),
  or from the end of a deliberate release. One alarm per opening.
* Closing: every alarm raised for the current opening is closed by an ``info`` event with the same
  reason when the door closes (seen as a change or as a first reading).
* Deliberate release (hold_open mode, a fire release): the door is meant to open, so nothing is
  forced and held-open is not counted. An alarm already raised stays until the door closes. When the
  release ends the lock counts as relocked then (a running pulse keeps its time), and a door still
  open gets a full ``held_open_s`` from then.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Literal

FORCED = "door_forced"
HELD_OPEN = "door_held_open"

NoteResult = Literal["alarm", "info"]
Note = tuple[NoteResult, str]
"""(event result, reason) for the door to emit as a `sensor` event."""


class DoorWatch:
    """Supervision of one door contact. Times are one monotonic clock (the event loop's)."""

    def __init__(self, *, held_open_s: float, forced_alarm: bool, grace_s: float) -> None:
        self.held_open_s = held_open_s
        self.forced_alarm = forced_alarm
        self.grace_s = grace_s
        self.is_open: bool | None = None  # None until the first reading
        self.free = False  # released on purpose (hold_open, fire)
        self.active: list[str] = []  # alarms raised for the current opening, in order
        self._authorised_until = -math.inf
        self._held_from: float | None = None  # held-open counting started then; None = not counting

    def authorise(self, until: float) -> None:
        """A grant, remote open or exit button: an opening before ``until`` (+ grace) is not forced."""
        self._authorised_until = max(self._authorised_until, until)

    def secure(self, now: float) -> None:
        """The lock relocked before its release ran out ('lock' mode, a fire cleared): the release ends."""
        self._authorised_until = min(self._authorised_until, now)

    def set_free(self, free: bool, now: float) -> None:
        """Enter or leave a deliberate release (hold_open mode or fire)."""
        if free == self.free:
            return
        self.free = free
        if free:
            self._held_from = None
            return
        self._authorised_until = max(self._authorised_until, now)  # relocked now, or when a pulse ends
        if self.is_open:
            self._held_from = now

    def sensor(self, is_open: bool, first: bool, now: float) -> list[Note]:
        """A debounced contact reading; ``first``: after start-up or an outage (a state, not a change)."""
        was, self.is_open = self.is_open, is_open
        if not is_open:
            self._held_from = None
            notes: list[Note] = [("info", reason) for reason in self.active]
            self.active.clear()
            return notes
        if was is True:
            return []  # still open after an outage: the opening's timer and alarms carry on
        self._held_from = None if self.free else now
        forced = (
            not first
            and was is False
            and self.forced_alarm
            and not self.free
            and now > self._authorised_until + self.grace_s
        )
        if not forced:
            return []
        self.active.append(FORCED)
        return [("alarm", FORCED)]

    def deadline(self) -> float | None:
        """When ``tick`` may raise the held-open alarm; None when nothing is being counted."""
        if self.held_open_s <= 0 or self._held_from is None or self.free or HELD_OPEN in self.active:
            return None
        return self._held_from + self.held_open_s

    def tick(self, now: float) -> list[Note]:
        due = self.deadline()
        if due is None or now < due:
            return []
        self.active.append(HELD_OPEN)
        return [("alarm", HELD_OPEN)]


class Supervisor:
    """DoorWatch on the event loop: reads the loop's clock, owns the one held-open timer (cancelled by
    ``stop``), and hands the notes to ``emit(result, reason)``."""

    def __init__(self, watch: DoorWatch, emit: Callable[[NoteResult, str], None]) -> None:
        self.watch = watch
        self._emit = emit
        self._timer: asyncio.TimerHandle | None = None
        self._running = False

    @staticmethod
    def report_lag_s(poll_interval_s: float, debounce_s: float, timeout_s: float) -> float:
        """How late an opening may be reported after it happened: a poll period, the debounce and two
        reads (the grace of an authorised release)."""
        return poll_interval_s + debounce_s + 2 * timeout_s

    def start(self) -> None:
        self._running = True
        self._rearm()

    def stop(self) -> None:
        self._running = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def sensor(self, is_open: bool, first: bool) -> None:
        if self._running:
            self._handle(self.watch.sensor(is_open, first, _now()))

    def authorise(self, seconds: float) -> None:
        self.watch.authorise(_now() + seconds)

    def secure(self) -> None:
        self.watch.secure(_now())

    def released(self, free: bool) -> None:
        """Whether the door is released on purpose (hold_open, fire)."""
        self.watch.set_free(free, _now())
        self._rearm()

    def _handle(self, notes: list[Note]) -> None:
        for result, reason in notes:
            self._emit(result, reason)
        self._rearm()

    def _rearm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        due = self.watch.deadline()
        if due is not None and self._running:
            self._timer = asyncio.get_running_loop().call_at(due, self._due)

    def _due(self) -> None:
        self._timer = None
        if self._running:
            self._handle(self.watch.tick(_now()))


def _now() -> float:
    return asyncio.get_running_loop().time()
