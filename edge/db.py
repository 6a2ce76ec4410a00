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
