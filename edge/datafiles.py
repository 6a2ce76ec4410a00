"""The data directory and its databases: checked before use, and a damaged database never stops the gate.

An unusable ``data_dir`` (a file, under a file, not writable) is a :class:`DataDirError` with a
one-line message. A damaged database (garbage header, truncated, bad pages, a garbage WAL) is found at
open by ``PRAGMA quick_check`` (a full read: ~0.14 s warm, ~2.5 s cold for a 1M-entry whitelist on
the dev box; see docs/durability.md), moved aside as ``X.db.damaged-<UTC time>`` with its -wal/-shm
(kept for inspection), and replaced by a fresh one. What can still be read is carried over: the
outbox's events (so they still reach the cloud, which de-duplicates by id), the whitelist's
revocations and key overlay, and the use counts of limited-use codes. Entries are not: an old list
read in part could miss a block or a delete, so the gate waits for the cloud's snapshot (version 0
makes the link ask for one). Each damage is logged as an error and recorded as an `alarm` event.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from edge.config import Config
from edge.db import connect_wal
from edge.outbox import Outbox
from edge.sqlite_pages import salvage_rows, wal_header_ok
from edge.store import WhitelistStore

log = structlog.get_logger(__name__)

ALARM_REASON = "device_unavailable"  # mqtt.md has no storage code; the gateway's own storage failed
_STORES = ("whitelist.db", "whitelist.uses.db", "outbox.db")


class DataDirError(Exception):
    """The data directory cannot be used; str() is one line naming it and the problem."""


def check_data_dir(path: Path, *, create: bool) -> None:
    """Raise DataDirError unless ``path`` is (or, with ``create``, now is) a writable directory whose
    database files are regular files. Without ``create`` a missing directory passes if it could be
    made (check-config must not create it)."""
    where = f"data_dir {path}"
    if path.exists() and not path.is_dir():
        raise DataDirError(f"{where}: is a file, not a directory")
    if not path.exists():
        parent = next((p for p in path.parents if p.exists()), None)
        if parent is not None and not parent.is_dir():
            raise DataDirError(f"{where}: cannot be created: {parent} is a file, not a directory")
        if not create:
            if parent is None or not os.access(parent, os.W_OK | os.X_OK):
                raise DataDirError(f"{where}: cannot be created: {parent} is not writable")
            return
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataDirError(f"{where}: cannot be created: {exc.strerror or exc}") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise DataDirError(f"{where}: is not writable: {exc.strerror or exc}") from None
    for name in _STORES:
        f = path / name
        if f.exists() and not f.is_file():
            raise DataDirError(f"{where}: {name} is not a regular file")


def damage(path: Path) -> str | None:
    """Why the database at ``path`` is damaged, or None if it is sound (or absent)."""
    if not path.exists():
        return None
    if not wal_header_ok(Path(f"{path}-wal")):
        return "the -wal file is garbage (its commits are lost)"
    try:
        con = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        return str(exc)
    try:
        rows = con.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        con.close()
    return None if rows == [("ok",)] else "; ".join(str(r[0]) for r in rows[:3])


def move_aside(path: Path) -> Path:
    """Rename ``path`` and its -wal/-shm to ``<name>.damaged-<UTC>`` (+ -wal/-shm, so SQLite opens
    the set as one database for inspection); returns the new database path."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    dest = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while dest.exists():
        n += 1
        dest = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.replace(f"{path}{suffix}", f"{dest}{suffix}")
    os.replace(path, dest)
    return dest


@dataclass
class Recovery:
    """One damaged database moved aside: what happened, for the log and the alarm event."""

    name: str
    moved_to: str
    why: str
    kept: list[str] = field(default_factory=list)

    def text(self) -> str:
        kept = f"; salvaged {', '.join(self.kept)}" if self.kept else ""
        return f"damaged ({self.why}), moved to {self.moved_to}{kept}"


def _select(path: Path, sql: str) -> list[tuple[object, ...]] | None:
    """Rows of ``sql`` on a moved-aside database, read only; None if SQLite cannot read them."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        return con.execute(sql).fetchall()
    except sqlite3.DatabaseError:
        return None
    finally:
        con.close()


def _marker(path: Path) -> Path:
    return Path(f"{path}.clean")


def _stamp(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size} {st.st_mtime_ns}\n"


def _wal_empty(path: Path) -> bool:
    wal = Path(f"{path}-wal")
    return not wal.exists() or wal.stat().st_size == 0


def mark_clean(d: Path) -> None:
    """After a clean stop: stamp the closed whitelist (size, mtime) so that the next start may defer
    its full check. Best effort: without a stamp the next start simply checks in full."""
    path = d / _STORES[0]
    try:
        if path.exists() and _wal_empty(path):
            tmp = Path(f"{path}.clean.tmp")
            tmp.write_text(_stamp(path))
            os.replace(tmp, _marker(path))
    except OSError as exc:
        log.warning("clean_mark_failed", file=str(path), error=str(exc))


def _closed_cleanly(path: Path) -> bool:
    """The stamp of a clean stop matches the file and no WAL holds anything since. The stamp is removed
    here either way: from now on the daemon writes, and a crash must lead to a full check."""
    marker = _marker(path)
    try:
        stamp = marker.read_text()
    except OSError:
        return False
    try:
        marker.unlink()
        return stamp == _stamp(path) and _wal_empty(path)
    except OSError:
        return False


def _recover(path: Path, deferred: list[Path] | None = None) -> tuple[Recovery, Path] | None:
    if deferred is not None and path.name == _STORES[0] and path.exists() and _closed_cleanly(path):
        deferred.append(path)  # closed cleanly and untouched since: checked in full after READY
        return None
    why = damage(path)
    if why is None:
        return None
    dest = move_aside(path)
    rec = Recovery(path.name, dest.name, why)
    log.error("database_damaged", file=str(path), moved_to=str(dest), reason=why)
    return rec, dest


def _salvage_uses(old: Path, new: Path, rec: Recovery) -> None:
    """Use counts carried over (the higher count wins). Counts on unreadable pages are lost: such a
    code could get extra uses, which the alarm says."""
    rows = [r for r in salvage_rows(old, (3,)).values() if isinstance(r[0], str) and isinstance(r[1], int)]
    rows = [r for r in rows if isinstance(r[2], int)]
    con = connect_wal(new, journal_limit_mb=64, timeout=30.0)  # the store made it, with its schema
    try:
        sql = "INSERT INTO uses VALUES (?, ?, ?) ON CONFLICT(jti) DO UPDATE SET n = max(n, excluded.n)"
        con.executemany(sql, rows)
    finally:
        con.close()
    rec.kept.append(f"{len(rows)} use counts (others lost: a limited-use code may get extra uses)")


def _salvage_whitelist(old: Path, store: WhitelistStore, rec: Recovery) -> None:
    """Revocations and the cloud's key overlay (a dropped key must stay dropped); not entries."""
    revoked = _select(old, "SELECT jti, until FROM revoked")
    keys = _select(old, "SELECT kid, key FROM keys")
    con = connect_wal(store.path, journal_limit_mb=64, timeout=30.0)
    try:
        if revoked:
            con.executemany("INSERT OR REPLACE INTO revoked VALUES (?, ?)", revoked)
        if keys:
            con.executemany("INSERT OR REPLACE INTO keys VALUES (?, ?)", keys)
    finally:
        con.close()
    rec.kept.append(f"{len(revoked)} revocations" if revoked is not None else "no revocations (unreadable)")
    rec.kept.append(f"{len(keys)} key ops" if keys is not None else "no key ops (unreadable)")
    rec.kept.append("entries not kept: a full list is requested from the cloud")


def _event_rows(old: Path) -> list[tuple[int, str]]:
    """(seq, body) of the damaged outbox's rows that are whole events. Rows from before a column was
    added have fewer values (SQLite does not rewrite them); the added columns take their defaults."""
    out = []
    for seq, rec in sorted(salvage_rows(old, (2, 3)).items()):
        body = rec[1]
        if seq <= 0 or rec[0] is not None or not isinstance(body, str):
            continue
        try:
            ev = json.loads(body)
        except ValueError:
            continue
        if isinstance(ev, dict) and isinstance(ev.get("id"), str) and isinstance(ev.get("ts"), int):
            out.append((seq, body))
    return out


def _open_outbox(cfg: Config, path: Path, rec: Recovery | None, old: Path | None) -> Outbox:
    def make() -> Outbox:
        return Outbox(path, max_events=cfg.outbox.max_events, flush_interval_s=cfg.outbox.flush_interval_s)

    if rec is None or old is None:
        return make()
    rows = _event_rows(old)
    make().close()  # the fresh file, with the schema the Outbox owns
    con = connect_wal(path, journal_limit_mb=16, timeout=10.0)
    try:
        con.execute("BEGIN IMMEDIATE")
        con.executemany("INSERT INTO events(seq, body) VALUES (?, ?)", rows)
        con.execute("COMMIT")
    finally:
        con.close()
    rec.kept.append(f"{len(rows)} events")
    return make()


def open_stores(cfg: Config, deferred: list[Path] | None = None) -> tuple[WhitelistStore, Outbox]:
    """Open the whitelist and the outbox, recovering from damage (see the module docstring).
    Raises DataDirError for an unusable data dir; the gate runs in every other case.

    With ``deferred`` (the daemon), a whitelist stamped by a clean stop (:func:`mark_clean`) and not
    changed since skips the full read at start, which is most of start-up with a 1M-entry list; its
    path is added to ``deferred`` for :func:`verify_deferred` after READY. The outbox and use counts
    are small and always checked first. Any other start (kill -9,
    power cut, a file changed while stopped) checks in full first, as before."""
    d = cfg.gateway.data_dir
    check_data_dir(d, create=True)
    wl, uses, ob = (d / n for n in _STORES)
    done: list[Recovery] = []
    wl_rec, uses_rec, ob_rec = _recover(wl, deferred), _recover(uses, deferred), _recover(ob, deferred)
    try:
        store = WhitelistStore(wl)
    except sqlite3.DatabaseError:  # a deferred check, and the damage is where the open reads
        if deferred is None or wl not in deferred:
            raise
        deferred.remove(wl)
        wl_rec = _recover(wl)
        store = WhitelistStore(wl)
    if wl_rec is not None:
        _salvage_whitelist(wl_rec[1], store, wl_rec[0])
        done.append(wl_rec[0])
    if uses_rec is not None:
        _salvage_uses(uses_rec[1], uses, uses_rec[0])
        done.append(uses_rec[0])
    outbox = _open_outbox(cfg, ob, *(ob_rec or (None, None)))
    if ob_rec is not None:
        done.append(ob_rec[0])
    for rec in done:
        report(outbox, rec)
    return store, outbox


def report(outbox: Outbox, rec: Recovery) -> None:
    """Log a recovery and tell the cloud: an alarm event in the outbox."""
    log.error("database_recovered", file=rec.name, moved_to=rec.moved_to, detail=rec.text())
    outbox.append(Outbox.make_event("gateway", "sensor", rec.name, "alarm", ALARM_REASON, subject=rec.text()))


def verify_deferred(paths: list[Path]) -> str | None:
    """The full check the start skipped (run in a thread after READY, on its own connection). Damage
    found here ends the daemon (the caller declares it fatal): outputs go safe, systemd restarts it, and
    that start, finding no clean stamp, runs the full check and the recovery above."""
    for path in paths:
        why = damage(path)
        if why is not None:
            log.error("database_damaged", file=str(path), reason=why, when="after start: restarting to recover")
            return f"{path.name}: {why}"
    return None
