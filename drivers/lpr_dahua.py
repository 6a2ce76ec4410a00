"""Dahua ITSAPI (ITC gate cameras): ``POST /NotificationInfo/TollgateInfo`` and its KeepAlive.

    {"Picture": {"SnapInfo": {"DeviceID": "6J0A2B3C4D5E6", "SnapTime": "2026-01-01 08:00:00",
                              "AccurateTime": "2026-01-01 08:00:00.153", "TimeZone": 8},
                 "Plate": {"PlateNumber": "京A12345", "Confidence": 92, "PlateColor": "Blue"},
                 "NormalPic": {"Content": "<base64>"}, "CutoutPic": {...}, "Vehicle": {...}}}

The camera is known by ``Picture.SnapInfo.DeviceID`` (the reader's ``serialno`` holds it). A re-push of a
read carries the same ``AccurateTime`` (milliseconds): with the plate it identifies the record. The
camera's local ``SnapTime`` is aged only when ``TimeZone`` (hours east of UTC) says how to read it.
Both paths are answered ``{"Result": true}``; a KeepAlive may carry ``DeviceID`` (then it must be known).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from drivers.lpr_push import BadPush, PlateRead, camera_id, confidence, need, optional, plate_text

VENDOR = "dahua"
TOLLGATE_PATH = "/NotificationInfo/TollgateInfo"
KEEPALIVE_PATH = "/NotificationInfo/KeepAlive"
ANSWER: dict[str, Any] = {"Result": True}


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, a huge number, deep nesting
        raise BadPush(400, f"bad JSON: {exc}") from None


def parse(body: bytes) -> PlateRead:
    doc = _json(body)
    snap = need(doc, "Picture.SnapInfo", dict)
    device = camera_id(snap.get("DeviceID"), "Picture.SnapInfo.DeviceID")
    plate = plate_text(need(doc, "Picture.Plate.PlateNumber", str), "Picture.Plate.PlateNumber")
    conf = confidence(need(doc, "Picture.Plate.Confidence", (int, float, str)), "Picture.Plate.Confidence")
    accurate = optional(snap, "AccurateTime", str)
    snap_time = optional(snap, "SnapTime", str)
    record = f"{accurate or snap_time}/{plate}" if (accurate or snap_time) else None
    tz = optional(snap, "TimeZone", (int, float))
    return PlateRead(VENDOR, device, plate, conf, record, False, _when(accurate or snap_time, tz),
                     optional(snap, "Direction", str), optional(doc, "Picture.Plate.PlateColor", str))  # fmt: skip


def keepalive_device(body: bytes) -> str | None:
    """The DeviceID a KeepAlive names, None when its body names none (an empty body is fine)."""
    if not body.strip():
        return None
    doc = _json(body)
    if not isinstance(doc, dict):
        raise BadPush(400, "KeepAlive body is not an object")
    dev = doc.get("DeviceID")
    return None if dev is None else camera_id(dev, "DeviceID")


def _when(text: str | None, tz_hours: float | None) -> float | None:
    if text is None or tz_hours is None:
        return None
    if not -14 <= tz_hours <= 14:
        raise BadPush(400, "Picture.SnapInfo.TimeZone: must be -14..14 hours")
    try:
        t = datetime.strptime(text[:19], "%Y-%m-%d %H:%M:%S")
    except ValueError:
        raise BadPush(400, "Picture.SnapInfo.SnapTime: not 'YYYY-MM-DD HH:MM:SS'") from None
    return t.replace(tzinfo=timezone(timedelta(hours=tz_hours))).timestamp()
