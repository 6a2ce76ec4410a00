"""Property tests of the barrier's safety rules: random grants, loop changes, limit switches, fire and
elapsed time. The pure state machine the device runs (drivers/barrier_logic.py) is driven fast with many
sequences; a few sequences go through the real device against a simulated pymodbus board."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from drivers.barrier import Barrier
from drivers.barrier_logic import BarrierLogic, Command, Params
from drivers.device import Grant
from drivers.modbus import ModbusTcpBusConfig
from drivers.modbus_bus import ModbusBus
from edge.model import Decision
from edge.sim.relay_board import RelayBoardSim
from tests.support.devices import env_for
from tests.support.modbus import eventually, free_port, tcp_board
from tests.test_barrier import CLOSE, FAST, LOOP, OPEN, UNIT, cfg

KEYS = st.sampled_from([None, "card:04A1B2C3", "plate:京A12345", "card:0BADCAFE"])
_LOOP = st.tuples(st.just("loop"), st.booleans())
_SHORT = st.tuples(st.just("wait"), st.floats(0.0, 2.0))  # events land mid-travel
EVENTS = st.one_of(  # repeated branches weigh the draw toward vehicles and time, away from fire and faults
    st.tuples(st.just("grant"), KEYS),
    _LOOP, _LOOP, _SHORT, _SHORT,
    st.tuples(st.just("wait"), st.floats(0.0, 40.0)),  # every timer runs out
    st.tuples(st.just("limit"), st.sampled_from(["up", "down"]), st.booleans()),
    st.tuples(st.just("fire"), st.booleans()),
    st.tuples(st.just("lost")),
)
PARAMS = st.builds(
    Params,
    close_delay_s=st.floats(0.0, 5.0),
    close_timeout_s=st.floats(0.5, 30.0),
    travel_s=st.floats(0.5, 8.0),
    up_limit=st.booleans(),
    down_limit=st.booleans(),
)
PURE = settings(max_examples=400, deadline=None, derandomize=True, database=None)


class Checked:
    """Drives a BarrierLogic and checks each step's commands against the rules and a test-side oracle."""

    def __init__(self, p: Params, fire: bool) -> None:
        self.p, self.logic, self.now = p, BarrierLogic(p), 0.0
        self.loop: bool | None = None  # what the loop detector says (the truth fed in)
        self.fire = fire
        self.closed_at: float | None = None  # oracle: the arm was sent down then, and nothing stopped it
        self.check(self.logic.start(0.0, fire), arrival=False)
        self.step(("loop", False))  # the device's first reading of its board, right after start

    def falling(self) -> bool:
        """The oracle's view: sent down, not raised since, no limit reached, travel (if timed) not over."""
        if self.closed_at is None:
            return False
        return self.p.down_limit or self.now < self.closed_at + self.p.travel_s

    def check(self, cmds: list[Command], *, arrival: bool, was_falling: bool = False) -> None:
        kinds = [c.kind for c in cmds]
        if "close" in kinds:
            assert self.loop is False, "close commanded while the loop is not known clear"
            assert not self.fire, "close commanded under fire"
            self.closed_at = self.now
        if arrival and (was_falling or self.falling()):
            assert "open" in kinds, "a vehicle under a falling arm was not re-raised at once"
        if "open" in kinds or "hold_on" in kinds:
            self.closed_at = None
        if self.fire:
            assert self.logic.arm != "falling" or "hold_on" in kinds
        assert not (self.logic.loop and self.logic.arm == "falling"), "left a vehicle under a falling arm"

    def step(self, ev: tuple[Any, ...]) -> None:
        lg = self.logic
        if ev[0] == "wait":
            self.wait(ev[1])
        elif ev[0] == "grant":
            self.check(lg.grant(self.now, ev[1]), arrival=False)
        elif ev[0] == "loop":
            first, arrival = self.loop is None, self.loop is not True and ev[1]
            was_falling = lg.arm == "falling" or self.falling()
            self.loop = ev[1]
            self.check(lg.set_loop(self.now, ev[1], first), arrival=arrival, was_falling=was_falling)
        elif ev[0] == "limit":
            if not (self.p.up_limit if ev[1] == "up" else self.p.down_limit):
                return  # not wired: no readings
            if ev[2]:
                self.closed_at = None  # the arm reached an end
            self.check(lg.set_limit(self.now, ev[1], ev[2]), arrival=False)
        elif ev[0] == "fire":
            self.fire = ev[1]
            self.check(lg.set_fire(self.now, ev[1]), arrival=False)
        else:
            self.loop = None
            self.check(lg.inputs_lost(self.now), arrival=False)

    def wait(self, dt: float) -> None:
        target = self.now + dt
        was = (self.logic.arm, self.logic.loop, self.logic.fire)
        closes = 0
        for _ in range(100):
            due = self.logic.deadline()
            if due is None or due > target:
                break
            self.now = max(self.now, due)
            cmds = self.logic.tick(self.now)
            closes += any(c.kind == "close" for c in cmds)
            self.check(cmds, arrival=False)
        else:
            raise AssertionError("deadline() does not move on: tick() would spin")
        self.now = target
        cmds = self.logic.tick(self.now)
        closes += any(c.kind == "close" for c in cmds)
        self.check(cmds, arrival=False)
        # liveness: an arm left up with the loop clear and no fire goes down within the longest wait
        if was[0] in ("up", "rising") and was[1] is False and not was[2] and dt > self.p.close_timeout_s + 1e-6:
            assert closes, "an arm up with nobody on the loop never closed"


@PURE
@example(Params(0.5, 1.0, 4.0), False, [("grant", None), ("wait", 1.5), ("loop", True), ("loop", False),
                                        ("wait", 0.6), ("loop", True)])  # the standards' case, always run
@example(Params(0.0, 1.0, 1.0, up_limit=True, down_limit=False), False,
         [("grant", None), ("grant", None), ("loop", True), ("limit", "up", True),
          ("limit", "up", False)])  # found by hypothesis: the controller lowers the arm onto a car  # fmt: skip
@given(PARAMS, st.sampled_from([False, False, True]), st.lists(EVENTS, min_size=5, max_size=60))
def test_logic_never_closes_on_a_vehicle_and_always_reopens(p: Params, fire: bool, events: list[Any]) -> None:
    run = Checked(p, fire)
    for ev in events:
        run.step(ev)


# --- the real device against a simulated board --------------------------------------------------------

REAL_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("grant"), KEYS),
        st.tuples(st.just("loop"), st.booleans()),
        st.tuples(st.just("wait"), st.floats(0.2, 0.8)),
    ),
    min_size=3,
    max_size=8,
)
BOUND_S = 1.0  # safety bound: a loop change seen (poll + debounce + a read) and acted on within this


@settings(max_examples=5, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
@example([("grant", None), ("wait", 0.7), ("loop", True), ("wait", 0.8), ("loop", False), ("wait", 0.2),
          ("loop", True), ("loop", False)])  # closes on the timeout, on a car; a car under the falling arm
@given(REAL_STEPS)
def test_real_board_never_closes_on_a_vehicle_and_reopens(steps: list[Any]) -> None:
    asyncio.run(_real_run(steps))


async def _real_run(steps: list[Any]) -> None:
    sim, port = RelayBoardSim([UNIT]), free_port()
    travel = 2.5
    async with tcp_board(sim, port):
        bus = ModbusBus("b0", ModbusTcpBusConfig.model_validate(
            {"type": "modbus_tcp", "host": "127.0.0.1", "port": port, **FAST}))  # fmt: skip
        await bus.start()
        env = env_for(bus)
        barrier = Barrier("car-in", cfg(close_delay_s=0.1, close_timeout_s=0.6, travel_s=travel), env)
        loop_log: list[tuple[float, bool]] = [(time.monotonic(), False)]
        try:
            await barrier.start()
            assert await eventually(lambda: barrier.logic.loop is not None)
            for step in steps:
                if step[0] == "grant":
                    await barrier.grant(Grant(Decision("granted", "ok"), "nfc", key=step[1]))
                elif step[0] == "loop":
                    sim.set_input(UNIT, LOOP, step[1])
                    loop_log.append((time.monotonic(), step[1]))
                    await asyncio.sleep(0.2)  # a change holds past the debounce (a real vehicle does)
                else:
                    await asyncio.sleep(step[1])
            await asyncio.sleep(BOUND_S)
        finally:
            await barrier.stop()
            await bus.stop()
            from tests.support.devices import stop_hubs

            await stop_hubs()
    _check_board(sim, loop_log, travel)


def _check_board(sim: RelayBoardSim, loop_log: list[tuple[float, bool]], travel: float) -> None:
    def present_since(t: float) -> float | None:
        """When the vehicle on the loop at ``t`` arrived, None if the loop was clear at ``t``."""
        state = [(ts, v) for ts, v in loop_log if ts <= t]
        if not state or not state[-1][1]:
            return None
        since = state[-1][0]
        for ts, v in reversed(state):
            if not v:
                break
            since = ts
        return since

    closes = [w.t for w in sim.writes_to(UNIT, CLOSE) if w.on]
    opens = [w.t for w in sim.writes_to(UNIT, OPEN) if w.on]
    for tc in closes:
        since = present_since(tc)
        assert since is None or tc - since < BOUND_S, "close written while the loop showed a vehicle"
        # a vehicle on the loop while the arm is on its way down gets an open within the bound
        arrivals = [ts for ts, v in loop_log if v and tc <= ts < tc + travel - BOUND_S]
        if since is not None:
            arrivals.insert(0, tc)
        for ta in arrivals[:1]:
            assert any(ta - 0.05 <= to <= ta + BOUND_S for to in opens if to > tc), "not re-raised"
