"""Outbox -> R/events: oldest first, up to 500 events a message, several messages awaiting PUBACK.

Rows are deleted only when the PUBACK of the message that carried them arrives. Within one
connection each row is sent once (the cursor only moves forward); a new connection starts a new
Drainer from the oldest row still on disk, so whatever was unacknowledged when a connection died
is sent again (at-least-once; the cloud de-duplicates by id). paho's own retransmission is not
used: its queue dies with its connection (see edge.cloud.mqtt).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from edge.outbox import Outbox

log = structlog.get_logger(__name__)

BATCH = 500  # mqtt.md: 1 to 500 events a message


def build_payload(texts: list[str]) -> bytes:
    """{"events": [...]} by joining the stored JSON texts: no re-serialisation."""
    return ('{"events":[' + ",".join(texts) + "]}").encode("utf-8")


class Drainer:
    """One per connection. ``publish(payload) -> mid | None``; ``on_acked(mid, ok)`` from the link."""

    def __init__(
        self,
        outbox: Outbox,
        publish: Callable[[bytes], int | None],
        inflight: int,
        on_refused: Callable[[str], None],
    ) -> None:
        self._outbox = outbox
        self._publish = publish
        self._max_inflight = max(1, inflight)
        self._on_refused = on_refused
        self._cursor = 0  # highest seq sent on this connection
        self._inflight: dict[int, tuple[int, int, int]] = {}  # mid -> (lo seq, hi seq, events)
        self._wake = asyncio.Event()
        self.sent_events = 0
        self.acked_events = 0

    def wake(self) -> None:
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    def owns(self, mid: int) -> bool:
        return mid in self._inflight

    def on_acked(self, mid: int, ok: bool, reason: str) -> None:
        span = self._inflight.pop(mid, None)
        if span is None:
            return
        lo, hi, n = span
        if not ok:
            # The broker did not take it (e.g. not authorised): keep the rows; they go again on the
            # next connection, which the link forces so nothing stays stuck.
            log.error("events_refused_by_broker", reason=reason, first_seq=lo, last_seq=hi)
            self._on_refused(reason)
            return
        self._outbox.delete((lo, hi))
        self.acked_events += n
        self._wake.set()

    async def run(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except Exception:  # e.g. the outbox database failing: reconnect (with backoff) and start over
            log.exception("events_drain_failed")
            self._on_refused("drain failed")

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            while len(self._inflight) < self._max_inflight:
                rows = self._outbox.peek(self._cursor, BATCH)
                if not rows and not self._inflight and self._cursor and self._outbox.count():
                    # Rows at or below the cursor yet nothing in flight: seqs went backwards (e.g. an
                    # emptied table restarting its rowids). Never leave them stuck: start over.
                    log.warning("outbox_rows_behind_cursor", cursor=self._cursor)
                    self._cursor = 0
                    rows = self._outbox.peek(self._cursor, BATCH)
                if not rows:
                    break
                mid = self._publish(build_payload([text for _, text in rows]))
                if mid is None:  # not accepted by paho: have the link reconnect, never leave rows stuck
                    self._on_refused("publish failed")
                    return
                lo, hi = rows[0][0], rows[-1][0]
                self._inflight[mid] = (lo, hi, len(rows))
                self._cursor = hi
                self.sent_events += len(rows)
                await asyncio.sleep(0)  # let decisions run between messages: a backlog must not delay them
            await self._wake.wait()
