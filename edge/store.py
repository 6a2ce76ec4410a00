"""Whitelist store (SQLite, WAL): entries, revocations, per-jti use counts, trusted-key overlay, version.

Lookups are synchronous and run on the event-loop thread (microseconds: a primary-key probe of a
WITHOUT ROWID table). Entries live in two tables, ``entries_a`` / ``entries_b``; meta ``active``
names the one decisions read. A snapshot (or a CLI import) fills the *inactive* table on a writer
connection in a worker thread, in short chunked transactions, so decisions keep reading the old list;
the swap is one tiny transaction (flip ``active``, set version and count, clear the part register).

Snapshot rules (mqtt.md leaves details open; these are the safe readings chosen):
- the most recent id to *start* wins: the first part of an unseen id discards whatever was staged;
  parts of any id seen before (superseded or already applied) are ignored, so a redelivered part
  never restarts an old snapshot;
- a snapshot whose ``version`` is below the local version is ignored (at its first part and again at
  the swap), because applying it would roll back newer deltas (e.g. a delete or block);
- ``version`` and ``parts`` must be the same in every part of one id, else the part is invalid.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import structlog

from edge.model import Entry
from edge.store_codec import (
    InvalidEntry,
    Row,
    dumps,
    entry_from_wire,
    entry_of_row,
    entry_to_wire,
    int_field,
    normalize_value,
    parse_op,
    require_str,
    row_from_wire,
    row_of_entry,
)
from edge.store_schema import (
    FIELDS,
    FROM_JSON,
    IMPORT_ID,
    SCHEMA,
    SLICE,
    SNAP_KEYS,
    SYNCED_AT,
    USES,
    Abandoned,
    Txn,
    connect,
)

__all__ = ["InvalidEntry", "WhitelistStore", "entry_from_wire", "entry_to_wire", "normalize_value"]

log = structlog.get_logger(__name__)

_SEEN_KEEP = 256  # snapshot ids remembered as started (to ignore their late or duplicate parts)

EntriesListener = Callable[[Path, list[tuple[str, str]]], None]
_entry_listeners: list[EntriesListener] = []


def on_entries_changed(cb: EntriesListener) -> None:
    """Call ``cb(store_path, [(kind, value), ...])`` after a delta that puts or deletes entries commits:
    per-credential state kept elsewhere (a barrier's anti-passback, drivers/passback.py) is reset by it."""
    if cb not in _entry_listeners:
        _entry_listeners.append(cb)


class WhitelistStore:
    """Three connections: a read connection for the loop thread, a writer (deltas, snapshots, imports;
    worker threads, behind a lock) and one on a separate ``*.uses.db`` file for per-jti use counts, so
    ``record_use`` on the loop thread never waits for a snapshot being built."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._wlock = threading.Lock()
        self._alock: asyncio.Lock | None = None
        self._w = connect(self.path, autocheckpoint=False)  # checkpoints: after a swap and every purge
        self._w.executescript(SCHEMA)
        self._w.execute("PRAGMA cache_size=-65536")
        self._r = connect(self.path, autocheckpoint=False)
        self._r.execute("PRAGMA mmap_size=268435456")  # page reads without a syscall each
        self._u_path = self.path.with_name(self.path.stem + ".uses.db")
        self._u = connect(self._u_path)
        self._uc: sqlite3.Connection | None = None  # checkpoints of the uses file (purge thread)
        self._u.execute(USES)
        self._ckpt: threading.Thread | None = None
        meta = dict(self._w.execute("SELECT k, v FROM meta").fetchall())
        self._set_active(meta["active"])
        self._version, self._count = int(meta["version"]), int(meta["count"])
        sid = meta.get("snap_id")
        self._snap = (
            None
            if sid is None or str(sid).startswith(IMPORT_ID)  # an import that died half-way: cleared later
            else (sid, int(meta["snap_version"]), int(meta["snap_parts"]))
        )
        self._checked = time.monotonic()

    def _set_active(self, name: str) -> None:
        sql = f"SELECT subject, zones, floors, vfrom, vuntil, windows, blocked FROM entries_{name} "
        self._active_sql = (name, sql + "WHERE kind = ? AND value = ?")  # one assignment: atomic for readers

    # --- lookups (sync, hot path) ---
    @property
    def version(self) -> int:
        """Local whitelist version (0 = empty / never synced)."""
        return self._version

    def lookup(self, kind: str, value: str) -> Entry | None:
        now = time.monotonic()
        if now - self._checked > 1.0:  # another process (CLI import) may have swapped: re-read meta
            self._checked = now
            meta = dict(self._r.execute("SELECT k, v FROM meta WHERE k IN ('active','version','count')"))
            if meta["active"] != self._active_sql[0]:
                self._set_active(meta["active"])
                self._version, self._count = int(meta["version"]), int(meta["count"])
        value = value.upper()
        r = self._r.execute(self._active_sql[1], (kind, value)).fetchone()
        return None if r is None else entry_of_row(kind, value, r)

    def is_revoked(self, jti: str, now: float) -> bool:
        """True while a `revoke` op for ``jti`` holds (until its ``until``, inclusive)."""
        r = self._r.execute("SELECT until FROM revoked WHERE jti = ?", (jti,)).fetchone()
        return r is not None and now <= r[0]

    def uses(self, jti: str) -> int:
        r = self._u.execute("SELECT n FROM uses WHERE jti = ?", (jti,)).fetchone()
        return 0 if r is None else int(r[0])

    def record_use(self, jti: str, expires: int) -> int:
        """Count one grant of ``jti`` (kept until ``expires``); returns the new count. Durable: committed
        with synchronous=NORMAL (survives a process kill; a power cut may lose the last moments)."""
        sql = "INSERT INTO uses VALUES (?, 1, ?) ON CONFLICT(jti) DO UPDATE SET n = n + 1, "
        sql += "expires = max(expires, excluded.expires) RETURNING n"
        return int(self._u.execute(sql, (jti, int(expires))).fetchone()[0])

    def key_overlay(self) -> dict[str, str | None]:
        """kid -> base64url key (trusted by a `key` op) or None (dropped by a `key` op)."""
        return dict(self._r.execute("SELECT kid, key FROM keys").fetchall())

    def count(self) -> int:
        """Entries in the active list (kept in meta, so this never scans the table)."""
        return self._count

    def staging(self) -> dict[str, Any] | None:
        """The snapshot being collected, if any: id, version, parts and the part numbers received."""
        if (snap := self._snap) is None:
            return None
        got = [p for (p,) in self._r.execute("SELECT part FROM staging ORDER BY part")]
        return {"id": snap[0], "version": snap[1], "parts": snap[2], "received": got}

    # --- writes (writer connection; caller of the _methods holds self._wlock) ---
    def _reset_staging(self, snap: tuple[str, int, int] | None) -> None:
        """Forget staged rows and parts, empty the inactive table (SQLite truncates it: no per-row work);
        remember ``snap`` as the collection under way (on disk too, so other processes see it)."""
        with Txn(self._w) as w:
            w.execute(f"DELETE FROM entries_{self._inactive(w)}")
            w.execute("DELETE FROM staging")
            w.execute("DELETE FROM staged")
            w.execute("DELETE FROM meta WHERE k IN (?, ?, ?)", SNAP_KEYS)
            if snap is not None:
                w.executemany("INSERT INTO meta VALUES (?, ?)", zip(SNAP_KEYS, snap, strict=True))
                if not snap[0].startswith(IMPORT_ID):
                    w.execute("INSERT OR REPLACE INTO snap_seen VALUES (?, ?)", (snap[0], time.time_ns()))
                    sql = "DELETE FROM snap_seen WHERE id NOT IN (SELECT id FROM snap_seen ORDER BY at DESC LIMIT ?)"
                    w.execute(sql, (_SEEN_KEEP,))
        self._snap = None if snap is None or snap[0].startswith(IMPORT_ID) else snap

    @staticmethod
    def _inactive(w: sqlite3.Connection, sid: str | None = None) -> str:
        """The inactive table, read from disk. With ``sid``: raise Abandoned unless that collection is
        still the one under way (a CLI import in another process replaces it, and may have swapped)."""
        meta = dict(w.execute("SELECT k, v FROM meta WHERE k IN ('active', 'snap_id')"))
        if sid is not None and meta.get("snap_id") != sid:
            raise Abandoned(f"{sid} was replaced by {meta.get('snap_id') or 'a swap'}")
        return "b" if meta["active"] == "a" else "a"

    def _stage_rows(self, rows: list[Row], part: int, sid: str) -> None:
        """Put one part's rows where the swap will find them. Fast path: rows in strictly ascending key
        order, all above the inactive table's last key (a cloud exporting in key order), go straight
        into that table as B-tree appends: no second copy, nothing left to sort. Otherwise they go to
        ``staged`` (a rowid table) and are sorted in once, at the swap. Either way one transaction."""
        keys = [(r[0], r[1]) for r in rows]
        with Txn(self._w) as w:
            t = self._inactive(w, sid)
            fast = bool(keys) and all(k0 < k1 for k0, k1 in itertools.pairwise(keys))
            if fast:
                last = w.execute(f"SELECT kind, value FROM entries_{t} ORDER BY kind DESC, value DESC LIMIT 1").fetchone()
                fast = last is None or tuple(last) < keys[0]
            if fast:
                sql = f"INSERT INTO entries_{t} SELECT {FROM_JSON} FROM json_each(?2) j"
            else:
                sql = f"INSERT INTO staged SELECT ?1, {FROM_JSON} FROM json_each(?2) j"
            # JSON texts unpacked by SQLite in C instead of binding rows one by one; in slices, because
            # json.dumps holds the GIL throughout and the decision loop must not wait long for it
            for i in range(0, len(rows), SLICE):
                w.execute(sql, (part, dumps(rows[i : i + SLICE])))
            w.execute("INSERT OR REPLACE INTO staging VALUES (?, '')", (part,))

    def _build_and_swap(self, version: int, sid: str, *, force: bool = False) -> bool:
        """One transaction: sort any ``staged`` rows into the inactive table (readers untouched), then
        make it the active list with its version and count. Refused when ``version`` is below the local
        one, unless forced (an import). A key sent twice keeps the row written last (sorted-in rows are
        written after fast-path rows; among them the higher part, then the later row, wins)."""
        t0 = time.perf_counter()
        with Txn(self._w) as w:
            new = self._inactive(w, sid)
            cur = int(w.execute("SELECT v FROM meta WHERE k = 'version'").fetchone()[0])
            ok = force or version >= cur
            n = 0
            if ok:
                w.execute(
                    f"INSERT OR REPLACE INTO entries_{new} SELECT {FIELDS} FROM staged "
                    "ORDER BY kind, value, part, rowid"
                )
                n = w.execute(f"SELECT count(*) FROM entries_{new}").fetchone()[0]
                w.executemany(
                    "UPDATE meta SET v = ? WHERE k = ?", ((new, "active"), (version, "version"), (n, "count"))
                )
                w.execute(SYNCED_AT, (int(time.time() * 1000),))
            w.execute("DELETE FROM meta WHERE k IN (?, ?, ?)", SNAP_KEYS)
            w.execute("DELETE FROM staging")
            w.execute("DELETE FROM staged")
        if ok:
            self._set_active(new)
            self._version, self._count = version, n
        self._snap = None
        log.info("whitelist_swap", ok=ok, version=version, entries=n, ms=round((time.perf_counter() - t0) * 1e3, 1))
        self._w.execute("PRAGMA wal_checkpoint(PASSIVE)")  # the new list is live already; now tidy the WAL
        return ok

    def import_entries(self, entries: Iterable[Entry], version: int | None = None) -> int:
        """Replace the whole list atomically (CLI import); returns rows. Sync, any thread.
        ``version=None`` sets version 0 ("not the cloud's list"), so the next sync fetches a snapshot.
        A snapshot being collected is abandoned (its later parts are ignored); if one starts in another
        process during the import, the import fails with nothing changed (run it again)."""
        v = 0 if version is None else int_field(version, "version", 0)  # before anything is touched
        sid = f"{IMPORT_ID}{os.getpid()}-{time.time_ns()}"
        with self._wlock:
            self._reset_staging((sid, v, 0))
            rows: list[Row] = []
            part = 0
            try:
                for i, e in enumerate(entries):
                    rows.append(row_of_entry(e, i))
                    if len(rows) == 5000:
                        part += 1
                        self._stage_rows(rows, part, sid)
                        rows = []
                self._stage_rows(rows, part + 1, sid)
                self._build_and_swap(v, sid, force=True)  # an import may go back in version
            except Abandoned as exc:
                raise RuntimeError(f"import abandoned: {exc}; nothing changed, run it again") from None
            except BaseException:
                self._reset_staging(None)  # the list in use is untouched; leave no half import behind
                raise
        log.info("whitelist_imported", entries=self._count, version=v)
        return self._count

    def _lock(self) -> asyncio.Lock:
        if self._alock is None:
            self._alock = asyncio.Lock()
        return self._alock

    async def apply_delta(self, delta: Mapping[str, Any]) -> bool:
        """Apply an mqtt.md Delta in one transaction iff delta['from'] == version. Returns False on a
        version gap (nothing changed). Raises InvalidEntry on a malformed delta (nothing changed).
        ``to`` must be greater than ``from``; both fit a SQLite INTEGER."""
        frm = int_field(delta.get("from"), "from", 0)
        to = int_field(delta.get("to"), "to", frm + 1, lo_name="from+1")
        ops = delta.get("ops")
        if type(ops) is not list:
            raise InvalidEntry("ops: expected list")
        checked = [parse_op(op, i) for i, op in enumerate(ops)]  # all ops valid before anything is written
        async with self._lock():
            ok = await asyncio.to_thread(self._apply_delta, frm, to, checked)
        if ok:
            changed = [op[1][:2] if op[0] == "put" else op[1:3] for op in checked if op[0] in ("put", "del")]
            for cb in list(_entry_listeners) if changed else ():
                try:
                    cb(self.path, changed)
                except Exception as exc:  # the delta is committed: a listener's failure is only logged
                    log.error("entries_listener_failed", error=str(exc))
        log.info(
            "delta_applied" if ok else "delta_version_gap", frm=frm, to=to, ops=len(ops), have=self._version
        )
        return ok

    def _apply_delta(self, frm: int, to: int, ops: list[tuple[Any, ...]]) -> bool:
        with self._wlock, Txn(self._w) as w:
            # read from disk, not memory: a CLI import in another process may have swapped the tables
            meta = dict(w.execute("SELECT k, v FROM meta WHERE k IN ('active', 'version', 'count')"))
            if int(meta["version"]) != frm:
                return False
            t, n = meta["active"], int(meta["count"])
            if t != self._active_sql[0]:
                self._set_active(t)
            for op in ops:
                if op[0] == "put":
                    r = op[1]
                    n += (
                        w.execute(f"SELECT 1 FROM entries_{t} WHERE kind=? AND value=?", r[:2]).fetchone()
                        is None
                    )
                    w.execute(f"INSERT OR REPLACE INTO entries_{t} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", r)
                elif op[0] == "del":
                    n -= w.execute(f"DELETE FROM entries_{t} WHERE kind=? AND value=?", op[1:]).rowcount
                elif op[0] == "revoke":
                    sql = "INSERT INTO revoked VALUES (?, ?) ON CONFLICT(jti) DO UPDATE SET until = max(until, excluded.until)"
                    w.execute(sql, op[1:])
                else:
                    w.execute("INSERT OR REPLACE INTO keys VALUES (?, ?)", op[1:])
            w.executemany("UPDATE meta SET v = ? WHERE k = ?", ((to, "version"), (n, "count")))
            w.execute(SYNCED_AT, (int(time.time() * 1000),))
        self._version, self._count = to, n  # reached only after COMMIT
        return True

    async def add_snapshot_part(self, part: Mapping[str, Any]) -> bool:
        """Stage one Snapshot part. Parts of an older id are dropped when a newer id starts; a part of
        an older id than the one being staged/applied is ignored. When all parts of an id are in, the
        list is swapped in one transaction and the version set. Returns True when a swap happened.
        Raises InvalidEntry on a malformed part (nothing staged from it)."""
        sid, version, i, n, entries = (part.get(k) for k in ("id", "version", "part", "parts", "entries"))
        sid = require_str(sid, "id")
        version, n = int_field(version, "version", 0), int_field(n, "parts", 1)
        i = int_field(i, "part", 1, n, hi_name="parts")
        if type(entries) is not list:
            raise InvalidEntry("entries: expected list")
        async with self._lock():
            return await asyncio.to_thread(self._stage, sid, version, i, n, entries)

    def _stage(self, sid: str, version: int, i: int, n: int, entries: list[Any]) -> bool:
        rows = []
        for j, e in enumerate(entries):
            try:
                rows.append(row_from_wire(e))
            except InvalidEntry as exc:
                raise InvalidEntry(f"entries[{j}].{exc}") from None
        with self._wlock:
            snap = self._snap
            if snap is not None and snap[0] == sid:
                if snap[1:] != (version, n):
                    raise InvalidEntry(f"parts: id {sid} started as version {snap[1]} in {snap[2]} parts")
            elif self._w.execute("SELECT 1 FROM snap_seen WHERE id = ?", (sid,)).fetchone():
                log.info("snapshot_part_ignored", id=sid, part=i, reason="superseded_or_applied")
                return False
            elif version < self._version:
                log.warning(
                    "snapshot_part_ignored", id=sid, part=i, reason="older_than_local", version=version
                )
                return False
            else:
                if snap is not None:
                    log.info("snapshot_superseded", old=snap[0], new=sid)
                self._reset_staging((sid, version, n))
            try:
                if not self._w.execute("SELECT 1 FROM staging WHERE part = ?", (i,)).fetchone():
                    self._stage_rows(rows, i, sid)
                # a duplicate is not staged again, but may complete a swap a crash interrupted
                if self._w.execute("SELECT count(*) FROM staging").fetchone()[0] < n:
                    return False
                ok = self._build_and_swap(version, sid)
            except Abandoned as exc:  # a CLI import in another process replaced the list meanwhile
                self._snap = None
                log.warning("snapshot_abandoned", id=sid, part=i, reason=str(exc))
                return False
        log.info("snapshot_applied" if ok else "snapshot_discarded_older_than_local", id=sid, version=version)
        return ok

    def purge(self, now: float) -> None:
        """Drop use counts past expiry now; drop expired revocations and checkpoint the WAL in a background
        thread (the writer may be busy building a snapshot, and the loop thread must not wait for it)."""
        self._u.execute("DELETE FROM uses WHERE expires < ?", (now,))
        if self._ckpt is None or not self._ckpt.is_alive():
            self._ckpt = threading.Thread(
                target=self.purge_revoked, args=(now,), name="whitelist-purge", daemon=True
            )
            self._ckpt.start()

    def purge_revoked(self, now: float) -> None:
        """Blocking part of purge(): expired revocations, then passive WAL checkpoints."""
        with self._wlock:
            self._w.execute("DELETE FROM revoked WHERE until < ?", (now,))
            self._w.execute("PRAGMA wal_checkpoint(PASSIVE)")
            # own connection: a sqlite3 connection used from two threads at once fails at random
            # ("table is locked", "not an error"), and the loop thread keeps using self._u
            if self._uc is None:
                self._uc = connect(self._u_path)
            self._uc.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def close(self) -> None:
        if self._ckpt is not None:
            self._ckpt.join()
        with self._wlock:
            for con in (self._r, self._u, self._uc, self._w):
                if con is not None:
                    con.close()
