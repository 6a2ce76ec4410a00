"""Whitelist wire <-> row codec: validation of mqtt.md Entries and Delta ops, compact table rows.

Kept apart from the store so the SQLite mechanics and the contract's shape rules can be read (and
tested) separately. Row = (kind, value, subject, zones JSON, floors JSON, from, until, windows JSON,
blocked); JSON columns are compact arrays, decoded through small caches (a lookup decodes few
distinct zone/window sets).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from edge.limits import FLOOR_MAX, FLOOR_MIN, INT64_MAX, UNIX_S_MAX, int_in
from edge.model import Entry, Window
from edge.tokens import public_key_from_b64

_HEX = frozenset("0123456789ABCDEF")
_HHMM = re.compile(r"([0-9][0-9]):([0-9][0-9])\Z")  # ASCII only: \d takes any script's digits
Row = tuple[str, str, str, str, str | None, int | None, int | None, str | None, int]
_FLOORS_ERR = f"floors: expected list of integers in {FLOOR_MIN}..{FLOOR_MAX}"


class InvalidEntry(ValueError):
    """A whitelist Entry / Op that does not match mqtt.md's shape (message says which field)."""


def dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


@lru_cache(maxsize=4096)
def _enc(items: tuple[Any, ...]) -> str:
    return dumps(items)


@lru_cache(maxsize=4096)
def _dec_tuple(text: str) -> tuple[Any, ...]:
    return tuple(json.loads(text))


@lru_cache(maxsize=4096)
def _dec_windows(text: str) -> tuple[Window, ...]:
    return tuple(Window(tuple(d), s, e) for d, s, e in json.loads(text))


def require_str(v: Any, name: str) -> str:
    if not isinstance(v, str) or not v:
        raise InvalidEntry(f"{name}: expected non-empty string")
    return v


def normalize_value(kind: str, value: Any, name: str = "value") -> str:
    """Card: hex digits only, upper-cased. Plate: letters/digits only (no spaces or separators), NFKC
    then upper, as edge.normalize.normalize_plate does to what a camera reads (else never a match)."""
    if type(value) is not str or not value:
        raise InvalidEntry(f"{name}: expected non-empty string")
    if kind == "card":
        v = value.upper()
        if len(v) > 64 or not _HEX.issuperset(v):
            raise InvalidEntry(f"{name}: card value must be hex digits without separators")
        return v
    v = (value if value.isascii() else unicodedata.normalize("NFKC", value)).upper()
    if len(v) > 32 or not v.isalnum():
        raise InvalidEntry(f"{name}: plate value must be letters and digits only")
    return v


def int_field(v: Any, name: str, lo: int, hi: int = INT64_MAX, lo_name: str = "", hi_name: str = "") -> int:
    """An integer in lo..hi (by default a SQLite INTEGER: versions, parts), else InvalidEntry naming it:
    a direct caller (the CLI) must get a refusal, not an OverflowError from SQLite or a silent gap."""
    if not int_in(v, lo, hi):
        raise InvalidEntry(f"{name}: expected integer in {lo_name or lo}..{hi_name or hi}")
    return v


def unix_s(v: Any, name: str, alt: str = "") -> int:
    """A unix time in 0..UNIX_S_MAX. A bigger int would overflow SQLite's INTEGER in a delta and
    silently become a REAL in a snapshot's JSON staging, so it is refused before either."""
    if not int_in(v, 0, UNIX_S_MAX):
        raise InvalidEntry(f"{name}: expected integer in 0..{UNIX_S_MAX}{alt}")
    return v


def floors_ok(floors: Any) -> bool:
    """A list (or tuple) of integer floors in FLOOR_MIN..FLOOR_MAX, as tokens.md's floors claim."""
    return isinstance(floors, list | tuple) and all(int_in(f, FLOOR_MIN, FLOOR_MAX) for f in floors)


@lru_cache(maxsize=2048)
def _minute(v: str, end: bool) -> int:
    m = _HHMM.match(v)
    mins = -1 if m is None or int(m[2]) > 59 else int(m[1]) * 60 + int(m[2])
    if not 0 <= mins <= (1440 if end else 1439):
        raise ValueError(v)
    return 1440 if end and mins == 0 else mins  # an end of 00:00 means midnight = 24:00


_DAYS = frozenset(range(1, 8))


def _windows(v: Any) -> str:
    if type(v) is not list or not v:
        raise InvalidEntry("windows: expected non-empty list or absent")  # [] is ambiguous: refuse it
    out = []
    for i, w in enumerate(v):
        if type(w) is not dict and not isinstance(w, Mapping):
            raise InvalidEntry(f"windows[{i}]: expected object")
        days = w.get("days")
        if (
            type(days) is not list
            or not days
            or any(type(d) is not int for d in days)  # before the set test: a list day is unhashable
            or not _DAYS.issuperset(days)
        ):
            raise InvalidEntry(f"windows[{i}].days: expected non-empty list of ISO weekdays 1..7")
        try:
            start = _minute(w.get("start"), False)
        except (ValueError, TypeError):
            raise InvalidEntry(f"windows[{i}].start: expected HH:MM, 00:00..23:59") from None
        try:
            end = _minute(w.get("end"), True)
        except (ValueError, TypeError):
            raise InvalidEntry(f"windows[{i}].end: expected HH:MM, 00:00..24:00") from None
        out.append((tuple(sorted(set(days))), start, end))
    return _enc(tuple(out))


@lru_cache(maxsize=4096)
def _zones(zones: tuple[Any, ...]) -> str:
    if not zones or not all(type(z) is str and z for z in zones):
        raise ValueError
    return dumps(zones)


def row_from_wire(obj: Any) -> Row:
    """Validate an mqtt.md Entry dict into the compact table row (kind, value, subject, zones JSON,
    floors JSON, from, until, windows JSON, blocked). Hot in snapshot staging: kept lean."""
    if type(obj) is not dict and not isinstance(obj, Mapping):
        raise InvalidEntry("entry: expected object")
    get = obj.get
    kind = get("kind")
    if kind != "card" and kind != "plate":
        raise InvalidEntry("kind: expected 'card' or 'plate'")
    value = normalize_value(kind, get("value"))
    subject = get("subject")
    if type(subject) is not str or not subject:
        raise InvalidEntry("subject: expected non-empty string")
    zones = get("zones")
    try:
        if type(zones) is not list:
            raise TypeError
        zones_json = _zones(tuple(zones))
    except (TypeError, ValueError):
        raise InvalidEntry("zones: expected non-empty list of non-empty strings") from None
    # the tests of floors_ok and unix_s written out: this runs for every entry of a snapshot
    floors = get("floors")
    if floors is not None:
        if type(floors) is not list or any(
            type(f) is not int or not FLOOR_MIN <= f <= FLOOR_MAX for f in floors
        ):
            raise InvalidEntry(f"{_FLOORS_ERR}, null or absent")
        floors = _enc(tuple(floors))
    vfrom, vuntil, blocked = get("from"), get("until"), get("blocked", False)
    if vfrom is not None and (type(vfrom) is not int or not 0 <= vfrom <= UNIX_S_MAX):
        unix_s(vfrom, "from", " or null")  # raises, naming the range
    if vuntil is not None and (type(vuntil) is not int or not 0 <= vuntil <= UNIX_S_MAX):
        unix_s(vuntil, "until", " or null")
    if type(blocked) is not bool:
        raise InvalidEntry("blocked: expected boolean")
    windows = get("windows")
    return (kind, value, subject, zones_json, floors, vfrom, vuntil,
            None if windows is None else _windows(windows), int(blocked))  # fmt: skip


def _entry_row(e: Entry) -> Row:
    """The row_from_wire checks, for an Entry built in code (CLI import, bench): same invariants."""
    if e.kind != "card" and e.kind != "plate":
        raise InvalidEntry("kind: expected 'card' or 'plate'")
    value = normalize_value(e.kind, e.value)
    require_str(e.subject, "subject")
    if not isinstance(e.zones, tuple | list) or not e.zones or not all(type(z) is str and z for z in e.zones):
        raise InvalidEntry("zones: expected non-empty list of non-empty strings")
    if e.floors is not None and not floors_ok(e.floors):
        raise InvalidEntry(f"{_FLOORS_ERR} or None")
    for name, v in (("from", e.valid_from), ("until", e.valid_until)):
        if v is not None:
            unix_s(v, name, " or None")
    if type(e.blocked) is not bool:
        raise InvalidEntry("blocked: expected boolean")
    ws = None
    if e.windows is not None:
        if not isinstance(e.windows, tuple | list) or not e.windows:
            raise InvalidEntry("windows: expected non-empty list or None")
        out = []
        for i, w in enumerate(e.windows):
            days = w.days if isinstance(w, Window) else None
            if not isinstance(days, tuple | list) or not days or any(type(d) is not int for d in days):
                raise InvalidEntry(f"windows[{i}].days: expected non-empty list of ISO weekdays 1..7")
            if not _DAYS.issuperset(days):
                raise InvalidEntry(f"windows[{i}].days: expected non-empty list of ISO weekdays 1..7")
            if type(w.start_min) is not int or not 0 <= w.start_min <= 1439:
                raise InvalidEntry(f"windows[{i}].start: expected minutes 0..1439")
            if type(w.end_min) is not int or not 1 <= w.end_min <= 1440:
                raise InvalidEntry(f"windows[{i}].end: expected minutes 1..1440")
            out.append((tuple(sorted(set(days))), w.start_min, w.end_min))
        ws = _enc(tuple(out))
    floors = None if e.floors is None else _enc(tuple(e.floors))
    zones = _enc(tuple(e.zones))
    return (e.kind, value, e.subject, zones, floors, e.valid_from, e.valid_until, ws, int(e.blocked))


def row_of_entry(e: Entry, i: int) -> Row:
    """Validate entry number ``i`` of an import into a row; InvalidEntry names it: entries[i].field."""
    try:
        return _entry_row(e)
    except InvalidEntry as exc:
        raise InvalidEntry(f"entries[{i}].{exc}") from None
    except AttributeError:
        raise InvalidEntry(f"entries[{i}]: expected an Entry") from None


def entry_of_row(kind: Any, value: str, r: tuple[Any, ...]) -> Entry:
    subject, zones, floors, vfrom, vuntil, windows, blocked = r
    return Entry(
        kind,
        value,
        subject,
        _dec_tuple(zones),
        None if floors is None else _dec_tuple(floors),
        vfrom,
        vuntil,
        None if windows is None else _dec_windows(windows),
        bool(blocked),
    )


def entry_from_wire(obj: Mapping[str, Any]) -> Entry:
    """Validate and convert an mqtt.md Entry dict (card values upper hex, plates upper, no spaces).
    Lower-case input is upper-cased; separators, spaces and non-hex card digits are refused."""
    r = row_from_wire(obj)
    return entry_of_row(r[0], r[1], r[2:])


def entry_to_wire(entry: Entry) -> dict[str, Any]:
    out: dict[str, Any] = {
        "kind": entry.kind,
        "value": entry.value,
        "subject": entry.subject,
        "zones": list(entry.zones),
    }
    if entry.floors is not None:
        out["floors"] = list(entry.floors)
    out["from"], out["until"] = entry.valid_from, entry.valid_until
    if entry.windows is not None:
        out["windows"] = [
            {
                "days": list(w.days),
                "start": f"{w.start_min // 60:02d}:{w.start_min % 60:02d}",
                "end": f"{w.end_min // 60:02d}:{w.end_min % 60:02d}",
            }
            for w in entry.windows
        ]
    out["blocked"] = entry.blocked
    return out


def parse_op(op: Any, i: int) -> tuple[Any, ...]:
    """Validate one Delta op into ("put", row), ("del", kind, value), ("revoke", ...) or ("key", ...)."""
    if not isinstance(op, Mapping):
        raise InvalidEntry(f"ops[{i}]: expected object")
    kind = op.get("op")
    try:
        if kind == "put":
            return ("put", row_from_wire(op.get("entry")))
        if kind == "del":
            k = op.get("kind")
            if k not in ("card", "plate"):
                raise InvalidEntry("kind: expected 'card' or 'plate'")
            return ("del", k, normalize_value(k, op.get("value")))
        if kind == "revoke":
            until = unix_s(op.get("until"), "until")
            return ("revoke", require_str(op.get("jti"), "jti"), until)
        if kind == "key":
            key = op.get("key")
            if key is not None:
                try:  # the same strict decoding the gateway applies when it loads the overlay
                    public_key_from_b64(require_str(key, "key"))
                except ValueError:
                    raise InvalidEntry("key: expected base64url Ed25519 public key (32 bytes) or null") from None
            return ("key", require_str(op.get("kid"), "kid"), key)
    except InvalidEntry as exc:
        raise InvalidEntry(f"ops[{i}].{exc}") from None
    raise InvalidEntry(f"ops[{i}].op: expected put, del, revoke or key")
