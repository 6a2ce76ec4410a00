"""Executed command ids (jti), durable in SQLite, so a command runs at most once even across restarts.

A jti is claimed (row committed with synchronous=FULL) *before* the action runs: a crash between the
claim and the action loses one command (safe) rather than running it twice (unsafe). Rows are kept
until the token's ``exp`` plus the verification leeway; after that verify_command refuses the token
as expired anyway, so the row can go.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import structlog

from edge.datafiles import Recovery, damage, move_aside
from edge.sqlite_pages import salvage_rows

log = structlog.get_logger(__name__)

_PURGE_EVERY_S = 60.0
_UNSURE = "unsure_before"  # meta key: commands issued before this unix second may have run already


class ReplayStore:
    """``claim(jti, keep_until)`` is atomic on the calling thread: no await between check and insert.

    A damaged file (edge/datafiles.py's check) is moved aside and the ids still readable are carried
    over; ids on lost pages cannot be told from new ones, so every command issued before the recovery
    is refused as a replay (the safe side: such a command may have run; all of them expire within
    MAX_COMMAND_LIFETIME_S). ``recovery`` says what happened, for the caller's alarm event."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        why = damage(path)
        old = move_aside(path) if why is not None else None
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS executed (jti TEXT PRIMARY KEY, keep_until INTEGER NOT NULL)"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
        self._purged_at = 0.0
        self.recovery: Recovery | None = None
        if old is not None and why is not None:
            self.recovery = self._recover(old, why)
        row = self._db.execute("SELECT v FROM meta WHERE k = ?", (_UNSURE,)).fetchone()
        self._unsure_before: int | None = None if row is None else int(row[0])

    def _recover(self, old: Path, why: str) -> Recovery:
        rows = [(r[0], r[1]) for r in salvage_rows(old, (2,)).values()
                if isinstance(r[0], str) and isinstance(r[1], int)]  # fmt: skip
        earlier = [v for k, v in rows if k == _UNSURE]  # a recovery before this one, if still readable
        ids = [(k, v) for k, v in rows if k != _UNSURE]
        self._db.execute("BEGIN")
        self._db.executemany("INSERT OR IGNORE INTO executed VALUES (?, ?)", ids)
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (_UNSURE, max([int(time.time()) + 1, *earlier])))
        self._db.execute("COMMIT")
        log.error("database_damaged", file=str(old), reason=why)
        kept = [f"{len(ids)} command ids", "commands issued before now are refused as replays"]
        return Recovery("replay.db", old.name, why, kept)

    def claim(self, jti: str, keep_until: int, now: float | None = None, issued_at: int | None = None) -> bool:
        """Mark ``jti`` executed. True if it was new (the caller may act), False on a replay (or when
        it was issued before a recovery lost the record of what ran)."""
        now = time.time() if now is None else now
        if self._unsure_before is not None and (issued_at is None or issued_at < self._unsure_before):
            return False
        if now - self._purged_at > _PURGE_EVERY_S:
            self.purge(now)
        cur = self._db.execute(
            "INSERT OR IGNORE INTO executed (jti, keep_until) VALUES (?, ?)", (jti, int(keep_until))
        )
        return cur.rowcount == 1

    def seen(self, jti: str) -> bool:
        return self._db.execute("SELECT 1 FROM executed WHERE jti = ?", (jti,)).fetchone() is not None

    def purge(self, now: float) -> int:
        self._purged_at = now
        cur = self._db.execute("DELETE FROM executed WHERE keep_until < ?", (int(now),))
        if cur.rowcount:
            log.debug("replay_purged", rows=cur.rowcount)
        return cur.rowcount

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM executed").fetchone()[0])

    def close(self) -> None:
        self._db.close()
