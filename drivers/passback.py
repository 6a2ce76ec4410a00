"""Anti-passback state: the last passage (direction) of each plate or card per ``passback_group``.

Kept in a small SQLite file, ``passback.db`` in the data dir, so a restart does not let a car that
entered enter again. It is advisory state, never a reason to stop the gate: a damaged file is moved
aside like the other databases (edge/datafiles.py) and a fresh one used (what a read-only open of the
old file still yields is carried over); a file that cannot be opened at all falls back to memory.
A failing lookup answers "no passage known" (the credential is let through, never locked out), and a
failing write is logged. A cloud ``put`` or ``del`` of a whitelist entry clears its state in every
group (edge/store.py calls :func:`_entries_changed` after the delta commits): the operator has just
re-issued or withdrawn the credential, so its old passages no longer count.
"""

from __future__ import annotations

import sqlite3
import time
import weakref
from pathlib import Path
from typing import Any

import structlog

from drivers.device import DeviceEnv
from edge.db import connect_wal
from edge.store import on_entries_changed

log = structlog.get_logger(__name__)

FILE = "passback.db"
_SCHEMA = """CREATE TABLE IF NOT EXISTS passages(key TEXT NOT NULL, grp TEXT NOT NULL,
  direction TEXT NOT NULL, at INTEGER NOT NULL, PRIMARY KEY(key, grp)) WITHOUT ROWID"""
_OPEN: weakref.WeakSet[PassbackStore] = weakref.WeakSet()


def norm_key(key: str) -> str:
    """``card:04a1`` -> ``card:04A1``: the form the whitelist keeps values in (upper case)."""
    kind, _, value = key.partition(":")
    return f"{kind}:{value.upper()}"


class PassbackStore:
    """One data dir's passages, shared by its barriers (:meth:`for_env`); loop-thread use only."""

    def __init__(self, state_dir: Path | None) -> None:
        self.dir = None if state_dir is None else Path(state_dir)
        self.path = None if self.dir is None else self.dir / FILE
        self.problem: str | None = None  # a recovery to report once as an alarm (see Barrier.start)
        self._refs = 0
        self._con = self._open()
        _OPEN.add(self)

    @classmethod
    def for_env(cls, env: DeviceEnv) -> PassbackStore:
        store: PassbackStore | None = env.extra.get("passback")
        if store is None or store._con is None:
            store = env.extra["passback"] = cls(env.state_dir)
        store._refs += 1
        return store

    def release(self) -> None:
        self._refs -= 1
        if self._refs <= 0:
            self.close()

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
        _OPEN.discard(self)

    # --- the state ------------------------------------------------------------------------
    def last(self, key: str, group: str) -> str | None:
        """Direction of the last passage of ``key`` in ``group``; None if none (or unreadable)."""
        row = self._run("SELECT direction FROM passages WHERE key = ? AND grp = ?", (norm_key(key), group))
        return None if not row else str(row[0][0])

    def record(self, key: str, group: str, direction: str) -> None:
        sql = "INSERT OR REPLACE INTO passages VALUES (?, ?, ?, ?)"
        self._run(sql, (norm_key(key), group, direction, int(time.time())))

    def clear(self, keys: list[str]) -> None:
        """Forget every passage of these credentials, in every group."""
        for key in keys:
            self._run("DELETE FROM passages WHERE key = ?", (norm_key(key),))

    def count(self) -> int:
        row = self._run("SELECT count(*) FROM passages", ())
        return int(row[0][0]) if row else 0

    # --- robustness -----------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection | None:
        if self.path is None:
            return self._fresh(":memory:")
        # Here, not at the top: edge.datafiles imports edge.config, which loads every driver module, and
        # a driver importing it at load time would see the registry filled while it is half-imported.
        from edge.datafiles import damage, move_aside

        try:
            why = damage(self.path)
            kept: list[tuple[Any, ...]] = []
            if why is not None:
                dest = move_aside(self.path)
                kept = _readable_rows(dest)
                self.problem = f"{FILE} damaged ({why}), moved to {dest.name}; {len(kept)} passages kept"
                log.error("passback_damaged", file=str(self.path), moved_to=str(dest), reason=why)
            con = self._fresh(self.path)
            if kept:
                con.executemany("INSERT OR REPLACE INTO passages VALUES (?, ?, ?, ?)", kept)
            return con
        except (sqlite3.Error, OSError) as exc:  # unusable: passback from memory until the next start
            self.problem = f"{FILE} unusable ({exc}); anti-passback state kept in memory only"
            log.error("passback_unusable", file=str(self.path), error=str(exc))
            return self._fresh(":memory:")

    @staticmethod
    def _fresh(target: Path | str) -> sqlite3.Connection:
        if target == ":memory:":
            con = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        else:
            con = connect_wal(Path(target), journal_limit_mb=4, timeout=2.0)
        con.execute(_SCHEMA)
        return con

    def _run(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]] | None:
        """Run one statement; on a database error reopen (moving a damaged file aside) and try once more."""
        for attempt in (1, 2):
            if self._con is None:
                return None
            try:
                return self._con.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                log.error("passback_db_error", error=str(exc), attempt=attempt)
                if attempt == 2:
                    return None
                try:
                    self._con.close()
                except sqlite3.Error:
                    pass
                self._con = self._open()
        return None


def _readable_rows(path: Path) -> list[tuple[Any, ...]]:
    """The passages a read-only open of a moved-aside file still yields (none if it cannot)."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return []
    try:
        rows = con.execute("SELECT key, grp, direction, at FROM passages").fetchall()
    except sqlite3.Error:
        return []
    finally:
        con.close()
    return [r for r in rows if all(isinstance(v, str) for v in r[:3]) and isinstance(r[3], int)]


def _entries_changed(store_path: Path, entries: list[tuple[str, str]]) -> None:
    """A whitelist delta put or deleted ``entries`` (kind, value): forget their passages in that data dir."""
    if not entries:
        return
    keys = [f"{kind}:{value}" for kind, value in entries]
    data_dir = Path(store_path).resolve().parent
    stores = [s for s in list(_OPEN) if s.dir is not None and s.dir.resolve() == data_dir and s._con]
    for store in stores:
        store.clear(keys)
    if not stores and (data_dir / FILE).exists():  # no barrier of this process has it open: on disk
        temp = PassbackStore(data_dir)
        temp.clear(keys)
        temp.close()


on_entries_changed(_entries_changed)
