"""The whitelist database's schema and connection helpers (edge/store.py is the store itself)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from edge.db import connect_wal

FIELDS = "kind, value, subject, zones, floors, vfrom, vuntil, windows, blocked"
SLICE = 1000  # rows per JSON text when staging
IMPORT_ID = "import:"  # collection ids of CLI imports (never remembered as cloud snapshot ids)


class Abandoned(Exception):
    """The collection being written was replaced by another writer (a CLI import elsewhere)."""


FROM_JSON = ", ".join(f"j.value->>{i}" for i in range(9))  # a row's columns out of its JSON array
ENTRY_TABLE = """CREATE TABLE IF NOT EXISTS entries_{}(kind TEXT NOT NULL, value TEXT NOT NULL,
  subject TEXT NOT NULL, zones TEXT NOT NULL, floors TEXT, vfrom INTEGER, vuntil INTEGER, windows TEXT,
  blocked INTEGER NOT NULL, PRIMARY KEY(kind, value)) WITHOUT ROWID;"""
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v) WITHOUT ROWID;
{ENTRY_TABLE.format("a")}
{ENTRY_TABLE.format("b")}
CREATE TABLE IF NOT EXISTS staging(part INTEGER PRIMARY KEY, rows TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS staged(part INTEGER NOT NULL, kind TEXT NOT NULL, value TEXT NOT NULL,
  subject TEXT NOT NULL, zones TEXT NOT NULL, floors TEXT, vfrom INTEGER, vuntil INTEGER, windows TEXT,
  blocked INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS revoked(jti TEXT PRIMARY KEY, until INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS keys(kid TEXT PRIMARY KEY, key TEXT) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snap_seen(id TEXT PRIMARY KEY, at INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO meta VALUES ('version', 0), ('active', 'a'), ('count', 0);
"""
USES = "CREATE TABLE IF NOT EXISTS uses(jti TEXT PRIMARY KEY, n INTEGER NOT NULL, expires INTEGER NOT NULL)"
SNAP_KEYS = ("snap_id", "snap_version", "snap_parts")
SYNCED_AT = "INSERT OR REPLACE INTO meta VALUES ('synced_at', ?)"  # unix ms of the last applied change


def connect(path: Path, *, autocheckpoint: bool = True) -> sqlite3.Connection:
    return connect_wal(path, journal_limit_mb=64, timeout=30.0, autocheckpoint=autocheckpoint)


class Txn:
    """BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any error (connections run in autocommit mode)."""

    def __init__(self, con: sqlite3.Connection) -> None:
        self.con = con

    def __enter__(self) -> sqlite3.Connection:
        self.con.execute("BEGIN IMMEDIATE")
        return self.con

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.con.execute("COMMIT" if exc_type is None else "ROLLBACK")
