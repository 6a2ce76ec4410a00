"""Durable event outbox (SQLite, WAL): every decision is a row before it is reported done.

API CONTRACT (stub: helper D implements; signatures are fixed, more methods are fine).
append() commits with synchronous=NORMAL (survives kill -9 of the process); a flusher fsyncs the
WAL every ``flush_interval_s`` so a power cut loses at most that window (documented in docs/).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edge.model import Event


class Outbox:
    def __init__(self, path: Path, *, max_events: int = 3_000_000, flush_interval_s: float = 1.0) -> None:
        raise NotImplementedError

    def append(self, event: Event) -> int:
        """Commit one event; returns its sequence number (monotonic). Past ``max_events`` the oldest
        rows are dropped and an `info` event (reason `outbox_overflow`, credential = how many) appended.
        Calls listeners after the commit."""
        raise NotImplementedError

    def add_listener(self, callback: Callable[[], None]) -> None:
        """callback() after each append (the cloud link uses it to wake its drain loop)."""
        raise NotImplementedError

    def peek(self, after_seq: int, limit: int = 500) -> list[tuple[int, str]]:
        """Oldest-first rows with seq > after_seq: (seq, event JSON text as sent on the wire)."""
        raise NotImplementedError

    def delete(self, seqs: list[int] | tuple[int, int]) -> int:
        """Delete acknowledged rows: a list of seqs or an inclusive (lo, hi) range. Returns rows removed."""
        raise NotImplementedError

    def count(self) -> int:
        raise NotImplementedError

    def tail(self, n: int = 20) -> list[dict]:
        """Newest n events as dicts (for `edge events tail`)."""
        raise NotImplementedError

    async def run_flusher(self) -> None:
        """Background task: fsync the WAL every flush_interval_s while there were appends."""
        raise NotImplementedError

    def close(self) -> None:
        """Final fsync and close."""
        raise NotImplementedError
