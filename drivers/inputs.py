"""Board inputs read once per board per cycle, shared by every device wired to that board.

A relay-IO board carries the door contacts, exit buttons, barrier loops and limit switches and the
fire input side by side. One FC02 read of the board's inputs per ``poll_interval_s`` serves all of
them (instead of one poller per device), so the bus carries one request per board per cycle however
many devices are wired to it. A change is reported only once it has held for ``debounce_ms``: a
second read that long after the first sight confirms it, so a bouncing contact is one event and a
change costs at most one poll period plus the debounce. A watcher may name an ``urgent`` value (the
fire input's "fire"): a change *to* it is reported at first sight, since acting on a glitch there errs
toward safety (doors released), while the change back is debounced like any other.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import structlog

from drivers.modbus_bus import DeviceUnavailable, ModbusBus
from edge.supervise import spawn as spawn_supervised

log = structlog.get_logger(__name__)

InputCallback = Callable[[bool, bool], None]
"""``cb(value, first)``: a debounced input value; ``first`` is True for the first reading after
start-up or after the board answered again (a state, not a change)."""

LostCallback = Callable[[bool, "str | None"], None]
"""``cb(lost, error)``: the board's inputs could not be read (True) or can be again (False)."""

DEFAULT_DEBOUNCE_MS = 50


@dataclass
class _Board:
    bus: ModbusBus
    unit: int
    watchers: dict[int, list[InputCallback]] = field(default_factory=dict)
    lost_cbs: list[LostCallback] = field(default_factory=list)
    stable: dict[int, bool] = field(default_factory=dict)
    urgent: dict[int, bool] = field(default_factory=dict)  # address -> value reported without debounce
    lost: bool | None = None
    task: asyncio.Task[None] | None = None
    reads: int = 0

    @property
    def span(self) -> tuple[int, int]:
        lo, hi = min(self.watchers), max(self.watchers)
        return lo, hi - lo + 1


class InputHub:
    """Subscriptions to board inputs; one polling task per (bus, unit) that has any."""

    def __init__(self, buses: Mapping[str, ModbusBus]) -> None:
        self._buses = buses
        self._boards: dict[tuple[str, int], _Board] = {}
        self._running = False

    def watch(
        self, bus: str, unit: int, address: int, cb: InputCallback, *, urgent: bool | None = None
    ) -> None:
        """Call ``cb`` with the debounced value of discrete input ``address`` of board ``unit``; a change
        to ``urgent`` (if given) is reported at first sight."""
        board = self._board(bus, unit)
        board.watchers.setdefault(address, []).append(cb)
        if urgent is not None:
            board.urgent[address] = urgent
        if self._running:
            self._start_board((bus, unit))
            if address in board.stable:  # a late watcher (a device rebuilt on reload) gets the state now
                asyncio.get_running_loop().call_soon(self._first, board, address, cb)

    def _first(self, board: _Board, address: int, cb: InputCallback) -> None:
        if address in board.stable and cb in board.watchers.get(address, ()):
            try:
                cb(board.stable[address], True)
            except Exception:
                log.exception("input_callback_failed", bus=board.bus.bus_id, unit=board.unit, input=address)

    def unwatch(self, bus: str, unit: int, address: int, cb: InputCallback) -> None:
        """Undo one ``watch`` (a device rebuilt on reload); a board nobody watches any more stops polling."""
        board = self._boards.get((bus, unit))
        if board is None:
            return
        cbs = board.watchers.get(address, [])
        if cb in cbs:
            cbs.remove(cb)
        if not cbs:
            board.watchers.pop(address, None)
            board.urgent.pop(address, None)
            board.stable.pop(address, None)
        if not board.watchers and board.task is not None:
            board.task.cancel()
            board.task = None

    def drop_lost(self, bus: str, unit: int, cb: LostCallback) -> None:
        board = self._boards.get((bus, unit))
        if board is not None and cb in board.lost_cbs:
            board.lost_cbs.remove(cb)

    def on_lost(self, bus: str, unit: int, cb: LostCallback) -> None:
        self._board(bus, unit).lost_cbs.append(cb)

    def value(self, bus: str, unit: int, address: int) -> bool | None:
        """The last debounced value, None before the first successful read."""
        board = self._boards.get((bus, unit))
        return None if board is None else board.stable.get(address)

    def boards(self) -> list[tuple[str, int]]:
        return list(self._boards)

    def _board(self, bus: str, unit: int) -> _Board:
        key = (bus, unit)
        if key not in self._boards:
            self._boards[key] = _Board(self._buses[bus], unit)
        return self._boards[key]

    async def read_all_once(self) -> None:
        """One read of every board now (start-up: an active fire input applies before anything else)."""
        await asyncio.gather(*(self._cycle(b) for b in self._boards.values() if b.watchers))

    async def start(self) -> None:
        self._running = True
        for key in self._boards:
            self._start_board(key)

    async def stop(self) -> None:
        self._running = False
        tasks = [b.task for b in self._boards.values() if b.task is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for b in self._boards.values():
            b.task = None

    def _start_board(self, key: tuple[str, int]) -> None:
        board = self._boards[key]
        if board.task is None and board.watchers:
            board.task = spawn_supervised(f"inputs-{key[0]}-{key[1]}", lambda: self._poll(board))

    async def _poll(self, board: _Board) -> None:
        period = board.bus.poll_interval_s
        while True:
            t0 = time.monotonic()
            await self._cycle(board)
            await asyncio.sleep(max(0.0, period - (time.monotonic() - t0)))

    async def _read(self, board: _Board) -> list[bool] | None:
        lo, count = board.span
        try:
            bits = await board.bus.read_discrete_inputs(board.unit, lo, count)
        except DeviceUnavailable as exc:
            self._set_lost(board, True, str(exc))
            return None
        board.reads += 1
        self._set_lost(board, False, None)
        return bits

    async def _cycle(self, board: _Board) -> None:
        bits = await self._read(board)
        if bits is None:
            return
        lo = board.span[0]
        first = [a for a in board.watchers if a not in board.stable]
        for a in first:
            board.stable[a] = bits[a - lo]
            self._notify(board, a, True)
        changed = {a: bits[a - lo] for a in board.watchers if a not in first and bits[a - lo] != board.stable[a]}
        for a in [a for a, v in changed.items() if board.urgent.get(a) == v]:
            board.stable[a] = changed.pop(a)
            self._notify(board, a, False)
        if not changed:
            return
        debounce_s = getattr(board.bus.cfg, "debounce_ms", DEFAULT_DEBOUNCE_MS) / 1000
        if debounce_s > 0:
            await asyncio.sleep(debounce_s)
            again = await self._read(board)
            if again is None:
                return
            changed = {a: v for a, v in changed.items() if again[a - lo] == v}
        for a, v in changed.items():
            board.stable[a] = v
            self._notify(board, a, False)

    def _notify(self, board: _Board, address: int, first: bool) -> None:
        value = board.stable[address]
        for cb in list(board.watchers.get(address, ())):
            try:
                cb(value, first)
            except Exception:
                log.exception("input_callback_failed", bus=board.bus.bus_id, unit=board.unit, input=address)

    def _set_lost(self, board: _Board, lost: bool, error: str | None) -> None:
        if board.lost == lost:
            return
        was = board.lost
        board.lost = lost
        if not lost:
            board.stable.clear()  # values after an outage are states, not changes: report them as first
            if was is None:
                return
        elif was is None:
            pass  # lost from the very first read: still report it
        for cb in list(board.lost_cbs):
            try:
                cb(lost, error)
            except Exception:
                log.exception("input_lost_callback_failed", bus=board.bus.bus_id, unit=board.unit)


class ScopedInputs:
    """The hub as one device sees it: every watch it makes is remembered, so that ``release()`` removes
    them all when the device is rebuilt on reload (a stopped device must hear no more inputs)."""

    def __init__(self, hub: InputHub) -> None:
        self.hub = hub
        self._watches: list[tuple[str, int, int, InputCallback]] = []
        self._lost: list[tuple[str, int, LostCallback]] = []

    def watch(
        self, bus: str, unit: int, address: int, cb: InputCallback, *, urgent: bool | None = None
    ) -> None:
        self._watches.append((bus, unit, address, cb))
        self.hub.watch(bus, unit, address, cb, urgent=urgent)

    def on_lost(self, bus: str, unit: int, cb: LostCallback) -> None:
        self._lost.append((bus, unit, cb))
        self.hub.on_lost(bus, unit, cb)

    def value(self, bus: str, unit: int, address: int) -> bool | None:
        return self.hub.value(bus, unit, address)

    def boards(self) -> list[tuple[str, int]]:
        return self.hub.boards()

    def release(self) -> None:
        for bus, unit, address, cb in self._watches:
            self.hub.unwatch(bus, unit, address, cb)
        for bus, unit, lcb in self._lost:
            self.hub.drop_lost(bus, unit, lcb)
        self._watches.clear()
        self._lost.clear()
