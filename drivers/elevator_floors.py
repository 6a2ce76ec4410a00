"""The relay state of an elevator's outputs, written per board in as few requests as the wiring allows.

Why a model of our own: one FC15 request switches a whole span of coils, so every coil in it must get
a value, and reading the board back first would cost a turn on the line per change and still race
with the next grant. The elevator says what each of its coils should be (``desired``); this writes
the coils whose last acknowledged value differs, from the lowest to the highest on the board in one
FC15, split only where a coil we do not drive falls inside (FC15 would overwrite another device's
relay). A failed or unanswered write makes its coils unknown, so the next sync writes them again.
Each board has its own coalesced writer: a dead board delays no other board, and a flood of grants
costs one write in flight and one queued per board.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Iterable, Mapping

from drivers.coalesce import Coalescer
from drivers.modbus_bus import DeviceUnavailable, ModbusBus

Board = tuple[str, int]  # (bus id, unit)
Coil = tuple[str, int, int]  # (bus id, unit, coil address)


def runs(owned: Collection[int], changed: Iterable[int]) -> list[tuple[int, int]]:
    """(first, last) coil ranges to write on one board: every changed coil is covered, every covered
    coil is ``owned``, and consecutive owned coils go in one range (trimmed to its changed ends)."""
    todo = sorted(set(changed))
    if not todo:
        return []
    out: list[tuple[int, int]] = []
    seg: list[int] = []  # changed coils of the current run of consecutive owned coils
    for c in range(todo[0], todo[-1] + 1):
        if c not in owned:
            if seg:
                out.append((seg[0], seg[-1]))
            seg = []
        elif c in todo:
            seg.append(c)
    if seg:
        out.append((seg[0], seg[-1]))
    return out


class RelayModel:
    """Acknowledged coil values of a set of boards, and one coalesced writer per board."""

    def __init__(
        self,
        name: str,
        buses: Mapping[str, ModbusBus],
        coils: Iterable[Coil],
        desired: Callable[[Coil], bool],
    ) -> None:
        self._buses = buses
        self._desired = desired
        self._coils: dict[Board, list[int]] = {}
        for bus, unit, coil in coils:
            self._coils.setdefault((bus, unit), []).append(coil)
        self._sent: dict[Coil, bool] = {}
        self._writers = {
            b: Coalescer(lambda b=b: self._sync_board(b), f"{name}-{b[0]}-{b[1]}") for b in self._coils
        }

    @property
    def boards(self) -> list[Board]:
        return list(self._coils)

    def board_of(self, coil: Coil) -> Board:
        return coil[0], coil[1]

    def forget(self, boards: Iterable[Board] | None = None) -> None:
        """Treat the coils of ``boards`` (all by default) as unknown: the next sync writes them all (at
        start, at stop, and when a board answers again: it may have rebooted or missed a write)."""
        chosen = set(self._coils if boards is None else boards)
        for key in [k for k in self._sent if (k[0], k[1]) in chosen]:
            del self._sent[key]

    async def sync(self, boards: Iterable[Board] | None = None) -> dict[Board, str]:
        """Write what differs on ``boards`` (all by default), concurrently per board; the errors by board."""
        chosen = list(self._coils if boards is None else dict.fromkeys(boards))
        results = await asyncio.gather(*(self._writers[b]() for b in chosen), return_exceptions=True)
        errors: dict[Board, str] = {}
        for board, res in zip(chosen, results, strict=True):
            if isinstance(res, asyncio.CancelledError):
                raise res
            if isinstance(res, BaseException):
                errors[board] = str(res) or type(res).__name__
        return errors

    def close(self) -> None:
        for writer in self._writers.values():
            writer.cancel()

    async def _sync_board(self, board: Board) -> None:
        bus_id, unit = board
        bus = self._buses[bus_id]
        want = {c: self._desired((bus_id, unit, c)) for c in self._coils[board]}
        changed = [c for c, v in want.items() if self._sent.get((bus_id, unit, c)) != v]
        error: str | None = None
        for lo, hi in runs(want, changed):
            values = [want[c] for c in range(lo, hi + 1)]
            try:
                if lo == hi:
                    await bus.write_coil(unit, lo, values[0])
                else:
                    await bus.write_coils(unit, lo, values)
            except DeviceUnavailable as exc:
                for c in range(lo, hi + 1):
                    self._sent.pop((bus_id, unit, c), None)  # may or may not have switched: unknown
                error = error or str(exc)
                continue
            for c, v in zip(range(lo, hi + 1), values, strict=True):
                self._sent[(bus_id, unit, c)] = v
        if error is not None:
            raise DeviceUnavailable(error)
