"""The one way this daemon opens its SQLite files: WAL, autocommit, usable from worker threads."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def connect_wal(
    path: Path, *, journal_limit_mb: int, timeout: float, autocheckpoint: bool = True
) -> sqlite3.Connection:
    """WAL with synchronous=NORMAL: a commit survives a process kill without an fsync of its own
    (callers that need more fsync themselves). ``journal_limit_mb`` trims the WAL file after a
    checkpoint rewinds it. ``autocheckpoint=False`` for connections on a latency-sensitive thread or
    whose owner checkpoints on its own schedule (copying pages back takes milliseconds)."""
    con = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=timeout)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute(f"PRAGMA journal_size_limit={journal_limit_mb * 1024 * 1024}")
    if not autocheckpoint:
        con.execute("PRAGMA wal_autocheckpoint=0")
    return con


_DAMAGE_CODES = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB (primary codes; extended ones share the low byte)


def is_damage(exc: BaseException) -> bool:
    """A DatabaseError that means the file itself is damaged (not a full disk, a lock or a bug): the
    daemon ends so that the next start's check moves the file aside (edge/datafiles.py)."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in _DAMAGE_CODES
    return type(exc) is sqlite3.DatabaseError  # no code (older sqlite3 module): "malformed", "not a database"
