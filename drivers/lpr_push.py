"""What every plate-camera push parser returns, and the checks they share.

The vendor parsers (drivers/lpr_vzenith.py, lpr_hikvision.py, lpr_dahua.py) are pure: bytes in, a
:class:`PlateRead` out, or :class:`BadPush` naming the HTTP status and the reason for the camera's
installer. They never decide anything; drivers/lpr.py does, once per record.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

MAX_BODY = 6 * 1024 * 1024  # a 4 MiB picture in base64 (5.4 MiB) plus its JSON; more is refused (413)
_IDENT_JUNK = re.compile(r"[^0-9A-Za-z]")


class BadPush(ValueError):
    """A push that cannot be used: ``status`` (4xx) and a reason that names the field, never a plate."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PlateRead:
    """One plate read as a camera pushed it (the plate not yet normalised).

    ``camera``: the camera's own identifier (Vzenith serialno, Hikvision MAC, Dahua DeviceID);
    ``record``: the camera's id of this read (plateid, UUID, ...), the same when it re-pushes it;
    ``offline``: the camera says it stored the read while it could not deliver it;
    ``taken_at``: unix seconds by the camera's clock, when the push says (None otherwise)."""

    vendor: str
    camera: str
    plate: str
    confidence: int
    record: str | None = None
    offline: bool = False
    taken_at: float | None = None
    direction: str | None = None  # the vendor's own word (forward/reverse...), for the log only
    color: str | None = None


def ident(text: str) -> str:
    """A camera identifier compared without case or separators: 'AA:bb-01' == 'aabb01'."""
    return _IDENT_JUNK.sub("", text).upper()


def need(obj: Any, path: str, kind: type | tuple[type, ...]) -> Any:
    """``obj`` at dotted ``path``, of ``kind`` (bool is never an int here); BadPush 400 otherwise."""
    cur = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            raise BadPush(400, f"{path}: missing (no object at {part!r})")
        if part not in cur:
            raise BadPush(400, f"{path}: missing")
        cur = cur[part]
    if isinstance(cur, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise BadPush(400, f"{path}: wrong type bool")
    if not isinstance(cur, kind):
        raise BadPush(400, f"{path}: wrong type {type(cur).__name__}")
    return cur


def optional(obj: Any, path: str, kind: type | tuple[type, ...]) -> Any:
    """Like :func:`need`, but None when the field (or an object on its way) is absent or null."""
    cur = obj
    for part in path.split("."):
        if not isinstance(cur, dict) or cur.get(part) is None:
            return None
        cur = cur[part]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if (isinstance(cur, bool) and bool not in kinds) or not isinstance(cur, kinds):
        raise BadPush(400, f"{path}: wrong type {type(cur).__name__}")
    return cur


def confidence(value: Any, path: str) -> int:
    """A 0..100 confidence from a number or a string of digits (XML has nothing else)."""
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():  # not '²'
        value = int(value.strip()[:6])  # a 5000-digit string is out of range, not an int() error
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadPush(400, f"{path}: wrong type {type(value).__name__}")
    if not 0 <= value <= 100:
        raise BadPush(400, f"{path}: must be 0..100")
    return int(value)


def plate_text(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise BadPush(400, f"{path}: wrong type {type(value).__name__}")
    if not value.strip():
        raise BadPush(400, f"{path}: empty")
    if len(value) > 32:
        raise BadPush(400, f"{path}: longer than 32 characters")
    return value.strip()


def camera_id(value: Any, path: str) -> str:
    if not isinstance(value, str) or not ident(value):
        raise BadPush(400, f"{path}: missing or empty")
    if len(value) > 64:
        raise BadPush(400, f"{path}: longer than 64 characters")
    return value
