"""The scripted `edge demo`'s acts beyond the door: a car at the barrier, a lift grant, a fire.

Each act moves the simulated world (a loop, the fire contact) or reads at a reader, waits for the
gateway's decision, then checks what the relay board itself recorded (RelayBoardSim.writes): the
arm's OPEN pulse, its CLOSE only after the loop cleared, a floor enabled and disabled again after
``grant_s``, everything released under fire and back once it clears. An act returns False when the
board did not do what a real site needs; the demo then exits 1.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from edge.sim.board_view import coils_off, coils_on
from edge.sim.hardware import SimHardware, first_device
from edge.sim.relay_board import CoilWrite

Say = Callable[[str], None]
Expect = Callable[[str, str, str | None], Awaitable[bool]]  # (what, "result/reason", device) -> as expected
LIFT_CARD = ("04A1B2C3", "Resident 1042", 3)  # demo whitelist: a resident's card, their floor


async def eventually(pred: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def arm_problem(writes: list[CoilWrite], unit: int, open_coil: int, close_coil: int,
                car_on: float, car_off: float) -> str | None:  # fmt: skip
    """What is wrong with one passage as the board saw it (None: an OPEN pulse after the car came, and
    every CLOSE after it only once the loop had cleared)."""
    opens = coils_on(writes, unit, open_coil, car_on)
    closes = coils_on(writes, unit, close_coil, car_on)
    if not opens:
        return "no OPEN pulse reached the board"
    if not closes:
        return "the arm was never closed after the car left"
    early = [t for t in closes if t < car_off]
    if early:
        return f"CLOSE pulsed {car_off - early[0]:.1f} s before the car had left the loop"
    return None


class Story:
    """The acts, for the devices the config has (a config without a barrier skips the car)."""

    def __init__(self, hw: SimHardware, say: Say, expect: Expect) -> None:
        self.hw, self.say, self.expect = hw, say, expect
        self.cfg = hw.cfg
        self.door = first_device(self.cfg, "lock_coil")
        self.barrier = first_device(self.cfg, "loop_input")
        self.lift = first_device(self.cfg, "floor_outputs")
        self._lift_on: float | None = None

    def model(self, dev: str) -> Any:
        return next(m for _s, d, m in self.cfg.devices() if d == dev)

    def writes(self, bus: str) -> list[CoilWrite]:
        return list(self.hw.boards[bus].writes)

    def check(self, problem: str | None, fine: str) -> bool:
        self.say(f"  [check] {fine}" if problem is None else f"  [check] FAILED: {problem}")
        return problem is None

    # --- a car at the barrier -------------------------------------------------------------------
    async def car_passes(self) -> bool:
        if self.barrier is None or not self.hw.world("loop_input", self.barrier):
            return True
        b, loop = self.model(self.barrier), self.hw.world("loop_input", self.barrier)[0]
        reader, plate = self.hw.car_credential(self.barrier)
        self.say(f"> A visitor's car drives up to {self.barrier}; the plate reader reads {plate}")
        car_on = self.hw.set_active(loop, True)
        ok = self.hw.send(reader, plate) and await self.expect("plate decision", "granted/ok", self.barrier)
        opened = await eventually(
            lambda: bool(coils_on(self.writes(b.bus), b.device_id, b.open_coil, car_on)), 3
        )
        await asyncio.sleep(b.travel_s / 2 + 0.5)  # the car drives under the rising arm, still on the loop
        self.say("> The car drives through and leaves the loop")
        car_off = self.hw.set_active(loop, False)
        if b.close_coil is None:
            return ok and self.check(None if opened else "no OPEN pulse", "the arm was raised")
        closed = await eventually(
            lambda: bool(coils_on(self.writes(b.bus), b.device_id, b.close_coil, car_off)),
            b.close_delay_s + 3,
        )
        problem = arm_problem(self.writes(b.bus), b.device_id, b.open_coil, b.close_coil, car_on, car_off)
        if problem is None and not closed:
            problem = "no CLOSE pulse after the loop cleared"
        if problem is None:
            after = coils_on(self.writes(b.bus), b.device_id, b.close_coil, car_off)[0] - car_off
            fine = f"OPEN pulse at the board, CLOSE only {after:.1f} s after the loop cleared"
        return self.check(problem, fine if problem is None else "") and ok

    # --- a lift grant -----------------------------------------------------------------------------
    def _floor_coil(self, floor: int) -> tuple[str, int, int, bool]:
        """(bus, unit, coil, the value enabling the floor) of a floor's button relay."""
        m = self.model(self.lift)  # type: ignore[arg-type]
        out = m.floor_outputs[floor]
        return out.bus, out.device_id, out.coil, m.enable_when == "energised"

    async def lift_begins(self) -> bool:
        if self.lift is None or self.hw.scanner_for("card", self.lift) is None:
            return True
        card, who, floor = LIFT_CARD
        self.say(f"> {who} taps card {card} in lift {self.lift}: floor {floor} is theirs")
        t0 = time.monotonic()
        ok = self.hw.send(self.hw.scanner_for("card", self.lift), card)
        ok = ok and await self.expect("lift decision", "granted/ok", self.lift)
        bus, unit, coil, on = self._floor_coil(floor)
        seen = coils_on if on else coils_off
        if await eventually(lambda: bool(seen(self.writes(bus), unit, coil, t0)), 3):
            self._lift_on = seen(self.writes(bus), unit, coil, t0)[0]
        problem = None if self._lift_on is not None else f"floor {floor} was not enabled at the board"
        return self.check(problem, f"floor {floor} enabled at the board") and ok

    async def lift_ends(self) -> bool:
        """After ``grant_s`` the floor's relay goes back (checked on the board, not earlier than due)."""
        if self._lift_on is None:
            return self.lift is None
        grant_s, floor = float(self.model(self.lift).grant_s), LIFT_CARD[2]  # type: ignore[arg-type]
        bus, unit, coil, on = self._floor_coil(floor)
        back = coils_off if on else coils_on
        t_on = self._lift_on
        self.say(
            f"> Nobody presses floor {floor}: its button is disabled again after grant_s = {grant_s:g} s"
        )
        wait = t_on + grant_s + 2 - time.monotonic()
        await eventually(lambda: bool(back(self.writes(bus), unit, coil, t_on + 0.01)), max(wait, 0.1))
        ends = back(self.writes(bus), unit, coil, t_on + 0.01)
        problem = None
        if not ends:
            problem = f"floor {floor} still enabled {grant_s + 2:g} s after its grant"
        elif ends[0] - t_on < grant_s - 0.3:
            problem = f"floor {floor} disabled after {ends[0] - t_on:.1f} s, before grant_s"
        took = f"{ends[0] - t_on:.1f}" if ends else "?"
        return self.check(problem, f"floor {floor} disabled at the board {took} s after it was enabled")

    # --- a fire -----------------------------------------------------------------------------------
    def _coil(self, bus: str, unit: int, coil: int) -> bool:
        return bool(self.hw.boards[bus].coil(unit, coil))

    def _released(self, t: float, fire: bool) -> list[str]:
        """What the board's relays do not yet show of the fire state (the arm's CLOSE: a pulse since ``t``)."""
        todo: list[str] = []
        if self.door is not None:
            d = self.model(self.door)
            if self._coil(d.bus, d.device_id, d.lock_coil) != fire:
                todo.append(f"{self.door} lock {'released' if fire else 'relocked'}")
        if self.barrier is not None:
            b = self.model(self.barrier)
            if self._coil(b.bus, b.device_id, b.open_coil) != fire:
                todo.append(f"{self.barrier} OPEN contact {'held' if fire else 'released'}")
            closes = (
                [] if b.close_coil is None else coils_on(self.writes(b.bus), b.device_id, b.close_coil, t)
            )
            if not fire and b.close_coil is not None and not closes:
                todo.append(f"{self.barrier} arm closed")
        if self.lift is not None:
            free = {f.floor for f in self.model(self.lift).free_floors}
            for floor in sorted(self.model(self.lift).floor_outputs):
                bus, unit, coil, on = self._floor_coil(floor)
                enabled = self._coil(bus, unit, coil) == on
                if enabled != (fire or floor in free):
                    todo.append(f"{self.lift} floor {floor} {'disabled' if enabled else 'enabled'}")
        return todo

    async def fire(self) -> bool:
        contacts = self.hw.world("input")
        if not contacts:
            return True
        ok = True
        for fire, what, want in ((True, "The fire panel signals a fire", "alarm/fire_alarm"),
                                 (False, "The fire is out: the panel's contact clears", "info/fire_cleared")):  # fmt: skip
            self.say(f"> {what}")
            t = self.hw.set_active(contacts[0], fire)
            ok = await self.expect("fire linkage event", want, "gateway") and ok
            await eventually(lambda t=t, fire=fire: not self._released(t, fire), 6)  # type: ignore[misc]
            todo = self._released(t, fire)
            fine = (
                "door released, arm raised and held, every floor enabled"
                if fire
                else ("door relocked, arm closed (loop clear), only the free floors enabled")
            )
            ok = self.check(f"not done at the board: {', '.join(todo)}" if todo else None, fine) and ok
            if fire and self.barrier is not None:
                await asyncio.sleep(1.0)  # a pulse would have ended by now: the contact must stay on
                b = self.model(self.barrier)
                cut = coils_off(self.writes(b.bus), b.device_id, b.open_coil, t)
                ok = self.check("the OPEN contact was not held" if cut else None, "the arm is held up") and ok
        return ok
