"""Durable event outbox (SQLite, WAL): every decision is a row before it is reported done.

append() commits with synchronous=NORMAL: the commit is in the WAL in the OS page cache, so it
survives kill -9 of the process; a flusher fsyncs the WAL every ``flush_interval_s`` (when there
were appends), so a power cut loses at most that window. Rows hold the event JSON exactly as sent.
The loop-thread connection never checkpoints (that copies pages and fsyncs); the flusher does, in a
worker thread on its own connection.

Past ``max_events`` rows are evicted by class, not by age alone: scanner noise and `info` events go
before any decision or alarm (issue 6: a noisy reader had emptied the outbox of real decisions). One
`outbox_overflow` notice says how many were dropped; a later overflow folds it into a new one, so the
notices never accumulate. A notice evicted while in flight may be counted twice by the cloud (more,
never fewer, than were lost).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from edge.db import connect_wal
from edge.ids import new_event_id
from edge.model import Event, Method, Result

log = structlog.get_logger(__name__)

_WAL_MAX = 64 * 1024 * 1024  # bytes of WAL before a checkpoint also truncates it
_CHECKPOINT_FRAMES = 4000  # appends between passive checkpoints (~16 MB of WAL at most)

# Eviction classes (column events.prio), lowest evicted first once the bound is reached.
NOTICE = 0  # the outbox_overflow notice: when evicted, its count is carried into the next notice
INFO = 1  # `info` events, among them the per-reader summaries of rejected lines
REJECT = 2  # an individual rejected line (scanner noise): Outbox.make_event(..., prio=REJECT)
DECISION = 3  # decisions and alarms; also every row written before the column existed
_PRIO_KEY = "outbox_prio"  # Event.extra key (local only, never sent)
_CLASSES = (INFO, REJECT, DECISION)  # those an event may ask for (NOTICE is the outbox's own)
_LOW = f"prio < {DECISION}"  # the partial index's own term: queries that repeat it can use the index
_INSERT = "INSERT INTO events(seq, body, prio) VALUES (?, ?, ?)"


def event_json(event: Event) -> str:
    """The wire text of one event: compact, UTF-8 kept as is."""
    return json.dumps(event.to_wire(), separators=(",", ":"), ensure_ascii=False)


def _connect(path: Path, *, autocheckpoint: bool = True) -> sqlite3.Connection:
    return connect_wal(path, journal_limit_mb=16, timeout=10.0, autocheckpoint=autocheckpoint)


def _schema(con: sqlite3.Connection) -> None:
    """Tables, and the class column added to a file from before it (rows there count as decisions).
    The partial index holds only the rarer low classes: a decision's append does not touch it."""
    con.executescript(
        "CREATE TABLE IF NOT EXISTS events(seq INTEGER PRIMARY KEY, body TEXT NOT NULL,"
        f" prio INTEGER NOT NULL DEFAULT {DECISION});"
        "CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v INTEGER NOT NULL) WITHOUT ROWID;"
        "INSERT OR IGNORE INTO meta VALUES ('deleted_hi', 0);"
    )
    if "prio" not in {row[1] for row in con.execute("PRAGMA table_info(events)")}:
        con.execute(f"ALTER TABLE events ADD COLUMN prio INTEGER NOT NULL DEFAULT {DECISION}")
    con.execute(f"CREATE INDEX IF NOT EXISTS events_low ON events(prio, seq) WHERE {_LOW}")


def _notice_count(body: str) -> int:
    """The count an earlier notice carries (0 if unreadable: a bad row must not block every append)."""
    try:
        return int(json.loads(body)["credential"])
    except (ValueError, KeyError, TypeError):
        return 0


class Outbox:
    """Rows ``(seq, body, prio)``; ``seq`` only ever grows, even across restarts with an empty table (a
    high water mark is kept in meta), so a sender's "after_seq" cursor never skips a new row. Eviction
    may remove rows between kept ones; a cursor and a range delete only ever see fewer rows."""

    def __init__(self, path: Path, *, max_events: int = 3_000_000, flush_interval_s: float = 1.0) -> None:
        if max_events < 2:
            raise ValueError("max_events must be at least 2")
        self.path = Path(path)
        self.max_events = max_events
        self.flush_interval_s = flush_interval_s
        self._con = _connect(self.path, autocheckpoint=False)
        _schema(self._con)
        lo_hi = self._con.execute("SELECT count(*), max(seq) FROM events").fetchone()
        (gone,) = self._con.execute("SELECT v FROM meta WHERE k = 'deleted_hi'").fetchone()
        self._count: int = lo_hi[0]
        self._seq: int = max(lo_hi[1] or 0, gone)
        self._listeners: list[Callable[[], None]] = []
        self._dirty = False  # appended since the last fsync
        self._since_ckpt = 0
        self._io = threading.Lock()  # fsync / checkpoint / close
        self._ckpt_con: sqlite3.Connection | None = None
        self._wal_fd: int | None = None
        self._open_wal()

    def _open_wal(self) -> None:
        wal = Path(f"{self.path}-wal")
        try:
            fd = os.open(wal, os.O_RDONLY)
        except FileNotFoundError:
            return
        old, self._wal_fd = self._wal_fd, fd
        if old is not None:
            os.close(old)

    def append(self, event: Event) -> int:
        """Commit one event; returns its sequence number (monotonic). Past ``max_events`` rows are
        evicted by class (see _overflow) and an `info` notice (reason `outbox_overflow`, credential =
        how many) appended; an event less important than every row kept is itself dropped and counted
        (its number is then the notice's). Calls listeners after the commit."""
        body = event_json(event)
        prio = event.extra.get(_PRIO_KEY)
        if prio not in _CLASSES:
            prio = INFO if event.result == "info" else DECISION
        if self._count < self.max_events:
            self._seq += 1
            self._con.execute(_INSERT, (self._seq, body, prio))
            self._count += 1
        else:
            self._overflow(body, prio)
        self._dirty = True
        self._since_ckpt += 1
        if self._since_ckpt > 50 * _CHECKPOINT_FRAMES:  # no flusher running: keep the WAL bounded
            self.checkpoint()
        for cb in self._listeners:
            try:
                cb()
            except Exception as exc:  # a listener must never undo or fail a committed append
                log.error("outbox_listener_failed", error=str(exc))
        return self._seq

    def _overflow(self, body: str, prio: int) -> None:
        """Make room in one transaction. Evicted first: the old notice (its count goes into the new one),
        then up to 1% of the rows (at least 2) of the lowest classes, oldest first, but none more
        important than the incoming event; decisions only when nothing lower is left. An incoming event
        that outranks nothing is dropped instead and counted, so a flood of low events never pushes out
        a decision: the single notice takes one slot, and only the first time."""
        con = self._con
        con.execute("BEGIN IMMEDIATE")
        try:
            notes = con.execute(f"SELECT seq, body FROM events WHERE {_LOW} AND prio = {NOTICE}").fetchall()
            carried = sum(_notice_count(b) for _, b in notes)
            want = max(0, max(2, self.max_events // 100) - len(notes))
            gone, hi = self._evict_low(want, prio, len(notes) > 0)
            hi = max([hi, *(s for s, _ in notes)])
            if gone < want and prio >= DECISION:  # nothing lower is left: the oldest decisions
                sql = "SELECT coalesce((SELECT seq FROM events ORDER BY seq LIMIT 1 OFFSET ?), max(seq))"
                sql += " FROM events"
                (cut,) = con.execute(sql, (want - gone - 1,)).fetchone()
                gone += con.execute("DELETE FROM events WHERE seq <= ?", (cut,)).rowcount
                hi = max(hi, cut or 0)
            if not notes and not gone:  # the notice needs a slot: the lowest row gives it, this once
                (seq,) = con.execute(
                    f"SELECT coalesce((SELECT seq FROM events WHERE {_LOW} ORDER BY prio, seq LIMIT 1),"
                    " (SELECT min(seq) FROM events))"
                ).fetchone()
                gone += con.execute("DELETE FROM events WHERE seq = ?", (seq,)).rowcount
                hi = max(hi, seq or 0)
            kept = len(notes) + gone >= 2  # room for the notice and the event
            dropped = carried + gone + (not kept)
            info = self.make_event("gateway", "sensor", str(dropped), "info", "outbox_overflow")
            con.execute("UPDATE meta SET v = max(v, ?) WHERE k = 'deleted_hi'", (hi,))
            rows = [(self._seq + 1, event_json(info), NOTICE)] + [(self._seq + 2, body, prio)] * kept
            con.executemany(_INSERT, rows)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        self._seq += len(rows)
        self._count += len(rows) - len(notes) - gone
        if kept or not notes:  # a batch evicted (every ~1% of appends) or a first drop; else just counted
            log.warning("outbox_overflow", dropped=dropped, max_events=self.max_events, kept=kept)

    def _evict_low(self, want: int, prio: int, notes: bool) -> tuple[int, int]:
        """Delete the notices, and up to ``want`` rows of classes INFO..min(prio, REJECT) in (class, seq)
        order, through the partial index; returns (rows deleted other than notices, highest seq)."""
        con = self._con
        if notes:
            con.execute(f"DELETE FROM events WHERE {_LOW} AND prio = {NOTICE}")
        if want == 0:
            return 0, 0
        lasts = con.execute(
            f"SELECT prio, max(seq) FROM (SELECT prio, seq FROM events WHERE {_LOW} AND prio > {NOTICE}"
            " AND prio <= ? ORDER BY prio, seq LIMIT ?) GROUP BY prio",
            (prio, want),
        ).fetchall()
        gone = 0
        for p, last in lasts:  # contiguous in index order: per class, everything up to its last seq
            sql = f"DELETE FROM events WHERE {_LOW} AND prio = ? AND seq <= ?"
            gone += con.execute(sql, (p, last)).rowcount
        return gone, max((last for _, last in lasts), default=0)

    def add_listener(self, callback: Callable[[], None]) -> None:
        """callback() after each append (the cloud link uses it to wake its drain loop)."""
        self._listeners.append(callback)

    def peek(self, after_seq: int, limit: int = 500) -> list[tuple[int, str]]:
        """Oldest-first rows with seq > after_seq: (seq, event JSON text as sent on the wire)."""
        sql = "SELECT seq, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?"
        return self._con.execute(sql, (after_seq, limit)).fetchall()

    def delete(self, seqs: list[int] | tuple[int, int]) -> int:
        """Delete acknowledged rows: a list of seqs or an inclusive (lo, hi) range. Returns rows removed.
        A *tuple* is always a range; pass a list for individual seqs."""
        con = self._con
        if isinstance(seqs, tuple):
            lo, hi = seqs
            if hi < lo:
                return 0
        elif not seqs:
            return 0
        else:
            hi = max(seqs)
        con.execute("BEGIN IMMEDIATE")
        try:
            if isinstance(seqs, tuple):
                n = con.execute("DELETE FROM events WHERE seq BETWEEN ? AND ?", (lo, hi)).rowcount
            else:
                n = 0
                for i in range(0, len(seqs), 500):
                    chunk = seqs[i : i + 500]
                    sql = f"DELETE FROM events WHERE seq IN ({','.join('?' * len(chunk))})"
                    n += con.execute(sql, chunk).rowcount
            # never past the last seq handed out: a wide range must not make seqs jump at the restart
            con.execute("UPDATE meta SET v = max(v, ?) WHERE k = 'deleted_hi'", (min(hi, self._seq),))
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")  # else the connection stays in a transaction and appends never commit
            raise
        self._count -= n
        return n

    def count(self) -> int:
        return self._count

    def tail(self, n: int = 20) -> list[dict]:
        """Newest n events as dicts, newest first (for `edge events tail`)."""
        rows = self._con.execute("SELECT body FROM events ORDER BY seq DESC LIMIT ?", (n,)).fetchall()
        return [json.loads(b) for (b,) in rows]

    @staticmethod
    def make_event(device: str, method: Method, credential: str, result: Result, reason: str, *,
                   reader: str | None = None, subject: str | None = None, latency_ms: float | None = None,
                   ts: int | None = None, prio: int | None = None, direction: str | None = None,
                   floors: tuple[int, ...] | None = None) -> Event:  # fmt: skip
        """An Event with a fresh ULID id and ``ts`` = now (unix ms) unless given. ``prio`` overrides the
        eviction class read from ``result`` (info -> INFO, else DECISION): rejected lines are REJECT."""
        ts = int(time.time() * 1000) if ts is None else ts
        extra: dict[str, object] = {} if prio is None else {_PRIO_KEY: prio}
        return Event(
            new_event_id(), ts, device, reader, method, credential, subject, result, reason, latency_ms, extra,
            direction, floors,
        )  # fmt: skip

    # --- durability ---
    def sync(self) -> None:
        """fsync the WAL (blocking: call from a worker thread). Reopens the fd if the file was replaced."""
        with self._io:
            wal = Path(f"{self.path}-wal")
            try:
                if self._wal_fd is None or os.fstat(self._wal_fd).st_ino != os.stat(wal).st_ino:
                    self._open_wal()
            except FileNotFoundError:
                return
            if self._wal_fd is not None:
                os.fsync(self._wal_fd)

    def checkpoint(self) -> None:
        """Passive checkpoint on a separate connection (never blocks appends). Under a steady stream of
        writes (a backlog drain, a burst) a passive checkpoint never catches up, and SQLite only rewinds
        the WAL when one does, so past _WAL_MAX bytes a TRUNCATE checkpoint follows: it holds appends
        back only for the copy of what the passive one left, and it bounds the WAL on disk."""
        with self._io:
            if self._ckpt_con is None:
                self._ckpt_con = _connect(self.path)
            self._ckpt_con.execute("PRAGMA wal_checkpoint(PASSIVE)")
            try:
                big = os.stat(f"{self.path}-wal").st_size > _WAL_MAX
            except FileNotFoundError:
                big = False
            if big:
                busy, _, _ = self._ckpt_con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                log.info("outbox_wal_truncated", done=not busy)
        self._since_ckpt = 0

    async def run_flusher(self) -> None:
        """Background task: fsync the WAL every flush_interval_s while there were appends."""
        while True:
            await asyncio.sleep(self.flush_interval_s)
            if not self._dirty:
                continue
            self._dirty = False
            try:
                await asyncio.to_thread(self.sync)
                if self._since_ckpt >= _CHECKPOINT_FRAMES:
                    await asyncio.to_thread(self.checkpoint)
            except Exception as exc:  # a full or failing disk must not kill the task
                self._dirty = True
                log.error("outbox_flush_failed", error=str(exc))

    def close(self) -> None:
        """Final fsync and close."""
        self.sync()
        with self._io:
            if self._ckpt_con is not None:
                self._ckpt_con.close()
            self._con.close()
            if self._wal_fd is not None:
                os.close(self._wal_fd)
                self._wal_fd = None
