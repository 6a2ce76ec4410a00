"""The barrier arm's decisions as a pure state machine: events and times in, commands out.

drivers/barrier.py feeds it what happens (grants, loop and limit-switch readings, fire, the passing of
time) and carries out what it returns; nothing here does I/O or reads a clock, so the safety rules are
tested with plain values (tests/test_barrier_property.py) and the device runs the very same code.

Rules (GB 50396: wait for the vehicle to leave; GB/T 24973: an open signal while lowering re-raises):
- ``close`` is returned only while the loop is known clear (never on an unknown loop, never under fire);
- a vehicle arriving on the loop while the arm is falling returns ``open`` in the same step;
- one grant admits one vehicle: a vehicle arriving with no grant left while the arm is not down is
  ``tailgating`` (the arm stays up); the same credential presented twice is one grant (LPR re-reads);
- the arm closes ``close_delay_s`` after the last admitted vehicle left the loop, or ``close_timeout_s``
  after a grant no vehicle came for;
- the position follows commands and ``travel_s``; a configured limit switch wins over the timer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Arm = Literal["down", "rising", "up", "falling"]
CommandKind = Literal["open", "close", "hold_on", "hold_off", "tailgating", "passage"]


@dataclass(frozen=True, slots=True)
class Command:
    """``open``/``close``: pulse that coil; ``hold_on``/``hold_off``: the open contact held (fire);
    ``tailgating``: raise the alarm; ``passage``: vehicle of credential ``key`` went through."""

    kind: CommandKind
    key: str | None = None


@dataclass(frozen=True, slots=True)
class Params:
    close_delay_s: float
    close_timeout_s: float
    travel_s: float
    up_limit: bool = False  # an up limit switch is wired: it, not the timer, says the arm is up
    down_limit: bool = False


_NO_KEY = object()  # "no vehicle has claimed a grant": a token's grant claims key None


@dataclass
class BarrierLogic:
    """One arm. Each event method takes ``now`` (monotonic seconds) and returns the commands to carry out;
    call :meth:`tick` at :meth:`deadline` (or any time: ticks are idempotent)."""

    p: Params
    arm: Arm = "down"
    moved_at: float = 0.0
    loop: bool | None = None  # vehicle present; None = unknown (not read yet, board lost)
    up: bool | None = None  # limit switch readings, None = unknown or not wired
    down: bool | None = None
    fire: bool = False
    credits: list[str | None] = field(default_factory=list)  # grants whose vehicle has not arrived yet
    claimed: object = _NO_KEY  # key of the grant the vehicle now on the loop uses
    close_at: float | None = None
    open_unsent: bool = False  # the last open write failed: the next grant must write it again

    # --- events ---------------------------------------------------------------------------
    def start(self, now: float, fire: bool) -> list[Command]:
        return self.set_fire(now, True) if fire else []

    def grant(self, now: float, key: str | None) -> list[Command]:
        self._advance(now)
        if self.fire:
            return []  # held up already
        if key is None or (key not in self.credits and self.claimed != key):
            self.credits.append(key)
        out: list[Command] = []
        if self.loop and self.claimed is _NO_KEY:
            self.claimed = self.credits.pop(0)  # the vehicle is already waiting on the loop
        if self.arm in ("down", "falling") or self.open_unsent or (
            self.arm == "rising" and now >= self.moved_at + self.p.travel_s
        ):
            out.append(self._raise(now))  # (rising past its travel: the up limit never came, try again)
        self.close_at = None if self.loop is not False else now + self.p.close_timeout_s
        return out

    def set_loop(self, now: float, present: bool, first: bool = False) -> list[Command]:
        """A loop reading; ``first`` marks a state (start-up, board back), not a change."""
        self._advance(now)
        prev, self.loop = self.loop, present
        out: list[Command] = []
        if present:
            self.close_at = None
            if prev is True:
                return out
            if self.credits and self.claimed is _NO_KEY:
                self.claimed = self.credits.pop(0)
            elif prev is False and not first and self.arm != "down" and not self.fire:
                out.append(Command("tailgating"))
            if self.arm == "falling":
                out.append(self._raise(now))
            return out
        left = prev is True and not first
        if left and self.claimed is not _NO_KEY:
            key, self.claimed = self.claimed, _NO_KEY
            out.append(Command("passage", key))  # type: ignore[arg-type]
        if self.arm != "down" and not self.fire and (left or self.close_at is None):
            wait = self.p.close_delay_s if left and not self.credits else self.p.close_timeout_s
            self.close_at = now + wait
        return out

    def inputs_lost(self, now: float) -> list[Command]:
        """The board's inputs cannot be read: the loop is unknown, so nothing closes until it is read."""
        self._advance(now)
        self.loop = None
        if self.p.up_limit:
            self.up = None
        if self.p.down_limit:
            self.down = None
        return []

    def set_limit(self, now: float, which: Literal["up", "down"], active: bool) -> list[Command]:
        """A limit switch reading (True = the arm is at that end). It wins over the modelled position."""
        self._advance(now)
        prev = self.up if which == "up" else self.down
        if which == "up":
            self.up = active
            if active:
                self.arm = "up"
                if self.loop is False and not self.fire and self.close_at is None:
                    self.close_at = now + self.p.close_timeout_s  # up with nobody coming: close in time
            elif prev and self.arm == "up":  # left the top without our command (the controller's own)
                self.arm, self.moved_at = "falling", now
        else:
            self.down = active
            if active:
                self._arrived_down()
            elif prev and self.arm == "down":  # lifted without our command: close it in time
                self.arm, self.moved_at = "rising", now
                if self.loop is False and not self.fire and self.close_at is None:
                    self.close_at = now + self.p.close_timeout_s
        out: list[Command] = []
        if self.fire and self.arm in ("down", "falling"):
            out.append(Command("hold_on"))  # fire: something lowered it; raise it again
            self.arm, self.moved_at = "rising", now
        elif self.arm == "falling" and self.loop:
            out.append(self._raise(now))  # lowered by the controller itself onto a vehicle: up at once
        return out

    def set_fire(self, now: float, active: bool) -> list[Command]:
        self._advance(now)
        self.fire = active
        if active:
            self.close_at = None
            if self.arm in ("down", "falling"):
                self.arm, self.moved_at = "rising", now
            return [Command("hold_on")]
        if self.loop is False and self.arm != "down":
            self.close_at = now + self.p.close_delay_s
        return [Command("hold_off")]

    def tick(self, now: float) -> list[Command]:
        self._advance(now)
        if self.close_at is None or now < self.close_at:
            return []
        if self.fire or self.loop is not False or self.arm not in ("up", "rising"):
            self.close_at = None  # a later clear reading (or the fire's end) schedules it again
            return []
        self.close_at = None
        self.credits.clear()  # a grant whose vehicle never came ends with the arm going down
        self.arm, self.moved_at = "falling", now
        return [Command("close")]

    def deadline(self) -> float | None:
        """When :meth:`tick` next has something to do (a close due, a travel ending), None if nothing."""
        times = [] if self.close_at is None else [self.close_at]
        if (self.arm == "rising" and not self.p.up_limit) or (self.arm == "falling" and not self.p.down_limit):
            times.append(self.moved_at + self.p.travel_s)
        return min(times, default=None)

    # --- internals ------------------------------------------------------------------------
    def _raise(self, now: float) -> Command:
        self.arm, self.moved_at, self.open_unsent = "rising", now, False
        return Command("open")

    def open_failed(self) -> None:
        """The open write did not reach the board (or its answer was lost): whatever the model says of
        the arm, the next grant writes open again instead of taking the arm for up already."""
        self.open_unsent = True

    def _arrived_down(self) -> None:
        self.arm = "down"
        self.credits.clear()
        self.close_at = None

    def _advance(self, now: float) -> None:
        """Travel by the timer, where no limit switch says otherwise."""
        if now < self.moved_at + self.p.travel_s:
            return
        if self.arm == "rising" and not self.p.up_limit:
            self.arm = "up"
        elif self.arm == "falling" and not self.p.down_limit:
            self._arrived_down()
