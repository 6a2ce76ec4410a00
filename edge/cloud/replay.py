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

log = structlog.get_logger(__name__)

_PURGE_EVERY_S = 60.0


class ReplayStore:
    """``claim(jti, keep_until)`` is atomic on the calling thread: no await between check and insert."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS executed (jti TEXT PRIMARY KEY, keep_until INTEGER NOT NULL)"
        )
        self._purged_at = 0.0

    def claim(self, jti: str, keep_until: int, now: float | None = None) -> bool:
        """Mark ``jti`` executed. True if it was new (the caller may act), False on a replay."""
        now = time.time() if now is None else now
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
