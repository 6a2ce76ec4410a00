"""Per-reader summaries of rejected lines, so scanner noise cannot flood the outbox or the journal.

Issue 6: each rejected line (garbage bytes, a card number that is no card) was an event and two log
lines; a noisy RS-485 line at ~10k lines/s filled the 3M-event outbox in minutes. Now the first
``limit`` rejects of a reader in each ``interval_s`` window are still individual `denied` events
(class REJECT in the outbox, each with a warning line, so a person's misread card stays visible);
past that they are counted, and when the window ends one `info` event per reason says how many were
left out: ``credential`` = the count (as the outbox's `outbox_overflow` notice does), ``reason`` = the
reader's own reason code (mqtt.md has no code for "suppressed"; `rate_limited` names a denial of a
presentation), plus one warning with the counts. Every rejected line is thus an event or counted in
one; ``flush()`` at shutdown emits what is still open. Clock values come in as arguments: the
counting is plain code, tested with made-up times.
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog

from edge.model import Event, Method
from edge.outbox import REJECT, Outbox

log = structlog.get_logger(__name__)

LIMIT = 5  # individual reject events per reader per window
INTERVAL_S = 60.0  # window length: at most LIMIT + (reasons seen) events a minute per reader
TICK_S = 1.0  # how often the gateway asks for the windows that ended


class _Window:
    __slots__ = ("counts", "singles", "start")

    def __init__(self, start: float) -> None:
        self.start = start
        self.singles = 0  # rejects passed on as events
        self.counts: dict[str, int] = {}  # reason -> rejects only counted


class RejectSummariser:
    """Counts rejects per reader in windows of ``interval_s`` starting at a reader's first reject.

    ``where`` maps a reader id to the (device, method) of its events.
    """

    def __init__(
        self, where: Mapping[str, tuple[str, Method]], *, limit: int = LIMIT, interval_s: float = INTERVAL_S
    ) -> None:
        self.where = dict(where)
        self.limit = limit
        self.interval_s = interval_s
        self._open: dict[str, _Window] = {}
        self._ended: list[tuple[str, _Window]] = []

    def reject(self, reader: str, reason: str, detail: str, now: float) -> Event | None:
        """One rejected line at clock time ``now``: its `denied` event while the window's allowance
        lasts (logged), else None (counted for the window's summary)."""
        w = self._open.get(reader)
        if w is None or now - w.start >= self.interval_s:
            if w is not None:
                self._ended.append((reader, w))
            w = self._open[reader] = _Window(now)
        if w.singles >= self.limit:
            w.counts[reason] = w.counts.get(reason, 0) + 1
            return None
        w.singles += 1
        log.warning("reader_rejected_line", reader=reader, reason=reason, detail=detail)
        device, method = self._where(reader)
        return Outbox.make_event(device, method, "", "denied", reason, reader=reader, prio=REJECT)

    def due(self, now: float) -> list[Event]:
        """Summary events of the windows that ended by ``now`` (none for a window with nothing left out)."""
        for reader, w in list(self._open.items()):
            if now - w.start >= self.interval_s:
                del self._open[reader]
                self._ended.append((reader, w))
        return self._summaries()

    def flush(self) -> list[Event]:
        """Summary events of every window, ended or not (shutdown: nothing counted is lost)."""
        self._ended.extend(self._open.items())
        self._open = {}
        return self._summaries()

    def _summaries(self) -> list[Event]:
        ended, self._ended = self._ended, []
        out: list[Event] = []
        for reader, w in ended:
            if not w.counts:
                continue
            log.warning(
                "reader_rejects_summarised", reader=reader, individual=w.singles, suppressed=w.counts,
                window_s=self.interval_s,
            )  # fmt: skip
            device, method = self._where(reader)
            for reason, n in sorted(w.counts.items()):
                out.append(Outbox.make_event(device, method, str(n), "info", reason, reader=reader))
        return out

    def _where(self, reader: str) -> tuple[str, Method]:
        return self.where.get(reader, ("gateway", "nfc"))
