"""The checks of `edge doctor` (edge/doctor.py) that need no hardware, and their shared pieces.

They run at the gate, maybe beside a running daemon, so everything here is read-only: ports are only
stat()ed (or opened with the exclusive lock and closed at once, see ``port_free``), data files are
opened ``mode=ro``. Each returns a :class:`Check` and never raises. The hardware probes are in
edge/doctor_probes.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import pwd
import shutil
import sqlite3
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel

if TYPE_CHECKING:
    from edge.app import Gateway

Status = Literal["ok", "warn", "fail"]
T = TypeVar("T")

SERVICE_USER_DEFAULT = "gate-edge"  # the user systemd runs `edge run` as (docs/operations.md)


@dataclass
class Check:
    """One line of the report; ``data`` carries the figures for ``--json`` (rtt_ms, free_bytes...)."""

    name: str
    status: Status
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "detail": self.detail, **self.data}


async def in_thread(fn: Callable[[], T], timeout: float) -> T:
    """``fn()`` in a daemon thread; TimeoutError past ``timeout`` (the thread is left to die with us:
    asyncio.to_thread would make the exit wait for a driver call that never returns)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def run() -> None:
        try:
            result = fn()
        except BaseException as exc:  # handed to the awaiting coroutine
            err = exc
            loop.call_soon_threadsafe(lambda: fut.done() or fut.set_exception(err))
        else:
            loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(result))

    threading.Thread(target=run, daemon=True, name="doctor-probe").start()
    return await asyncio.wait_for(fut, timeout)


def ago(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s // 3600} h"
    return f"{s // 86400} days"


# --- Modbus units a config uses ----------------------------------------------------------------


def modbus_units(cfg: Any) -> dict[tuple[str, int], list[str]]:
    """(bus, unit) -> ids of the devices and sections wired to it. Found generically: any model,
    nested anywhere in a device or section, with a ``bus`` name and a ``device_id`` (no kind named)."""
    from drivers.registry import SECTIONS

    out: dict[tuple[str, int], list[str]] = {}
    owners = [(dev_id, dev) for _s, dev_id, dev in cfg.devices()]
    owners += [(name, cfg.section(name)) for name in SECTIONS if cfg.section(name) is not None]
    for owner, model in owners:
        for unit in sorted(_units_of(model)):
            if unit[0] in cfg.buses:
                out.setdefault(unit, []).append(owner)
    return dict(sorted(out.items()))


def _units_of(obj: Any, depth: int = 0) -> set[tuple[str, int]]:
    found: set[tuple[str, int]] = set()
    if depth > 8:
        return found
    if isinstance(obj, BaseModel):
        bus, unit = getattr(obj, "bus", None), getattr(obj, "device_id", None)
        if isinstance(bus, str) and isinstance(unit, int) and not isinstance(unit, bool):
            found.add((bus, unit))
        for name in type(obj).model_fields:
            found |= _units_of(getattr(obj, name, None), depth + 1)
    elif isinstance(obj, dict):
        for v in obj.values():
            found |= _units_of(v, depth + 1)
    elif isinstance(obj, list | tuple):
        for v in obj:
            found |= _units_of(v, depth + 1)
    return found


# --- the daemon's side (edge/control.py) --------------------------------------------------------


def daemon_view(gw: Gateway) -> dict[str, Any]:
    """What the running daemon knows: device and reader health, each Modbus unit with the round trip
    of its last answered request, the cloud link."""
    from edge import __version__

    units = []
    for (bid, unit), users in modbus_units(gw.cfg).items():
        bus = gw.buses[bid]
        rtt_of = getattr(bus, "device_rtt_ms", None)
        rtt = rtt_of(unit) if callable(rtt_of) else None
        units.append({
            "bus": bid, "unit": unit, "users": users, "online": bus.is_online(unit),
            "error": bus.device_error(unit), "rtt_ms": None if rtt is None else round(rtt, 1),
        })  # fmt: skip
    cloud = None
    if gw.cloud is not None:
        cloud = {"connected": bool(getattr(gw.cloud, "connected", False)),
                 "error": getattr(gw.cloud, "last_error", None)}  # fmt: skip
    return {"pid": os.getpid(), "version": __version__, "started_at": gw.started_at,
            "devices": gw.device_health(), "units": units, "cloud": cloud}  # fmt: skip


# --- serial ports: present, readable by the service user, free ---------------------------------


def service_user() -> str:
    return os.environ.get("EDGE_SERVICE_USER") or SERVICE_USER_DEFAULT


def _user_access(st: os.stat_result, user: pwd.struct_passwd) -> tuple[bool, str]:
    """Whether ``user`` may read and write a file with ``st``, and through what (owner, group, other)."""
    if user.pw_uid == 0:
        return True, "root"
    gname = _group_name(st.st_gid)
    if st.st_uid == user.pw_uid:
        return st.st_mode & 0o600 == 0o600, "owner"
    groups = {user.pw_gid} | {g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem}
    if st.st_gid in groups:
        return st.st_mode & 0o060 == 0o060, f"group {gname}"
    return st.st_mode & 0o006 == 0o006, f"not in group {gname}"


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def port_access(name: str, path: str) -> Check:
    """Present, a character device, read-write for this user and for the service user if it exists."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return Check(name, "fail", f"{path} is missing (adapter unplugged, or another udev name?)")
    except OSError as exc:
        return Check(name, "fail", f"{path}: {exc.strerror or exc}")
    if not stat.S_ISCHR(st.st_mode):
        return Check(name, "fail", f"{path} is not a serial device (not a character device)")
    me = os.access(path, os.R_OK | os.W_OK)
    gname = _group_name(st.st_gid)
    parts = [f"{path} present (group {gname})", f"{'read-write' if me else 'NOT read-write'} for {_me()}"]
    status: Status = "ok" if me else "fail"
    uname = service_user()
    try:
        user = pwd.getpwnam(uname)
    except KeyError:
        parts.append(f"no {uname} user here: the check above is the one that counts")
    else:
        ok, via = _user_access(st, user)
        if ok:
            parts.append(f"read-write for {uname} ({via})")
            status = "ok"  # the service user is who opens it; the installer may be someone else
        else:
            fix = (
                f"usermod -aG {gname} {uname}, or SupplementaryGroups={gname} in the unit"
                if st.st_mode & 0o060 == 0o060
                else f"its group {gname} has no read-write either: a udev rule with GROUP=dialout, MODE=0660"
            )
            parts.append(f"NOT read-write for {uname} ({via}): {fix}")
            status = "fail"
    return Check(name, status, "; ".join(parts), {"path": path})


def _me() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid {os.getuid()}"


def port_free(path: str) -> str | None:
    """None when the port opens with the exclusive lock (then closed at once), else why not."""
    import serial

    try:
        port = serial.Serial(path, timeout=0, exclusive=True)
    except serial.SerialException as exc:
        text = str(exc)
        if "exclusively lock" in text:
            return "held by another process (a running `edge run` with another data_dir?)"
        return text.split(": ", 1)[-1] if "could not open port" in text else text
    except (OSError, ValueError) as exc:
        return str(exc)
    port.close()
    return None


# --- host and data -----------------------------------------------------------------------------


def clock(require_sync: bool) -> Check:
    from edge.clock import kernel_clock_synced

    synced = kernel_clock_synced()
    if synced:
        return Check("clock", "ok", "synchronised (kernel NTP state)", {"synced": True})
    if synced is None:
        return Check(
            "clock", "warn", "cannot ask the kernel whether the clock is synchronised", {"synced": None}
        )
    if require_sync:
        msg = (
            "NOT synchronised: time-bound codes are denied clock_unsynced until NTP syncs (network, chrony?)"
        )
        return Check("clock", "fail", msg, {"synced": False})
    return Check("clock", "warn", "NOT synchronised (trust.require_clock_sync is false: codes judged anyway)",
                 {"synced": False})  # fmt: skip


MIN_FREE_BYTES = 64 * 1024 * 1024  # below this the outbox and a whitelist snapshot may not fit
WARN_FREE_BYTES = 512 * 1024 * 1024


def disk(data_dir: Path) -> Check:
    where = data_dir
    while not where.exists() and where.parent != where:  # not created yet: the disk it will be on
        where = where.parent
    try:
        du = shutil.disk_usage(where)
    except OSError as exc:
        return Check("disk", "fail", f"{data_dir}: {exc.strerror or exc}")
    pct = 100 * du.free / du.total if du.total else 0.0
    text = f"{du.free / 2**30:.1f} GiB free of {du.total / 2**30:.1f} GiB ({pct:.0f}%) at {data_dir}"
    data = {"free_bytes": du.free, "total_bytes": du.total}
    if du.free < MIN_FREE_BYTES:
        return Check("disk", "fail", text + ": events and whitelist updates may not be stored", data)
    if du.free < WARN_FREE_BYTES or pct < 5:
        return Check("disk", "warn", text + ": getting full", data)
    return Check("disk", "ok", text, data)


def _ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)


def outbox(path: Path, max_events: int, cloud: bool) -> Check:
    if not path.exists():
        return Check("outbox", "ok", "no outbox yet (created by the first `edge run`)", {"events": 0})
    try:
        con = _ro(path)
        try:
            (n,) = con.execute("SELECT count(*) FROM events").fetchone()
            row = con.execute("SELECT body FROM events ORDER BY seq LIMIT 1").fetchone()
        finally:
            con.close()
    except sqlite3.Error as exc:
        return Check("outbox", "fail", f"{path}: cannot read: {exc}")
    age = None
    if row is not None:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            age = max(0.0, time.time() - int(json.loads(row[0])["ts"]) / 1000)
    data = {"events": n, "oldest_age_s": None if age is None else round(age)}
    text = f"{n} events waiting" + (f", oldest {ago(age)} old" if age is not None else "")
    if n >= 0.9 * max_events:
        return Check(
            "outbox", "warn", f"{text}: near outbox.max_events {max_events}, low classes get evicted", data
        )
    if not cloud:
        return Check("outbox", "ok", f"{text} (offline mode: no cloud takes them)", data)
    if age is not None and age > 600:
        return Check("outbox", "warn", f"{text}: events are not reaching the cloud", data)
    return Check("outbox", "ok", text, data)


def whitelist(path: Path, cloud: bool) -> Check:
    """Version and size from the store's meta, and how long ago the last snapshot, delta or import was
    applied (meta `synced_at`, unix ms)."""
    if not path.exists():
        return Check(
            "whitelist", "warn", "no whitelist yet: only QR codes can open", {"version": 0, "entries": 0}
        )
    try:
        con = _ro(path)
        try:
            meta = dict(con.execute("SELECT k, v FROM meta WHERE k IN ('version', 'count', 'synced_at')"))
        finally:
            con.close()
    except sqlite3.Error as exc:
        return Check("whitelist", "fail", f"{path}: cannot read: {exc}")
    version, n = int(meta.get("version", 0)), int(meta.get("count", 0))
    synced = meta.get("synced_at")
    age = None if synced is None else max(0.0, time.time() - int(synced) / 1000)
    data = {"version": version, "entries": n, "last_sync_age_s": None if age is None else round(age)}
    text = f"version {version}, {n} entries"
    if age is not None:
        text += f"; last change applied {ago(age)} ago (snapshot, delta or import)"
    elif cloud:
        text += "; no change applied since this store was created"
    if n == 0:
        return Check("whitelist", "warn", f"{text}: empty, only QR codes can open", data)
    return Check("whitelist", "ok", text, data)
