"""Vzenith (臻识) style `AlarmInfoPlate` JSON push, also spoken by many OEM gate cameras.

    {"AlarmInfoPlate": {"serialno": "a1b2c3d4-e5f6a7b8", "result": {"PlateResult": {
        "license": "京A12345", "confidence": 96, "colorType": 1, "plateid": 1024, "isoffline": 0,
        "timeStamp": {"Timeval": {"sec": 1767225600}}, "imageFile": "<base64>", ...}}}}

Required: ``serialno`` (the reader's ``serialno``), ``license``, ``confidence``, ``plateid`` (the answer
echoes it, and a re-push carries the same). ``isoffline`` (0/1) and ``plateid``/``isoffline`` at the
`AlarmInfoPlate` level are accepted too; base64 pictures are tolerated (up to the body limit) and
ignored. The answer drives the camera's own relay: ``"info": "ok"`` lifts a barrier wired to it, so it
is sent for a grant only, ``"no"`` for everything else.
"""

from __future__ import annotations

import json
from typing import Any

from drivers.lpr_push import BadPush, PlateRead, camera_id, confidence, need, optional, plate_text
from edge.limits import UNIX_S_MAX

VENDOR = "vzenith"


def looks_like(body: bytes) -> bool:
    """Whether a body pushed on the shared path is this format (JSON naming AlarmInfoPlate early)."""
    head = body[:512].lstrip()
    return head.startswith(b"{") and b"AlarmInfoPlate" in head


def parse(body: bytes) -> PlateRead:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, a huge number, deep nesting
        raise BadPush(400, f"bad JSON: {exc}") from None
    info = need(doc, "AlarmInfoPlate", dict)
    serial = camera_id(info.get("serialno"), "AlarmInfoPlate.serialno")
    res = need(info, "result.PlateResult", dict)
    base = "AlarmInfoPlate.result.PlateResult."
    plate = plate_text(res.get("license"), base + "license")
    if "confidence" not in res:
        raise BadPush(400, base + "confidence: missing")
    conf = confidence(res["confidence"], base + "confidence")
    plateid = res.get("plateid", info.get("plateid"))
    if plateid is None:
        raise BadPush(400, base + "plateid: missing")
    if isinstance(plateid, bool) or not isinstance(plateid, int | str) or str(plateid) == "":
        raise BadPush(400, base + "plateid: wrong type")
    offline = _flag(res.get("isoffline", info.get("isoffline", 0)), base + "isoffline")
    sec = optional(res, "timeStamp.Timeval.sec", int)
    if sec is not None and not 0 <= sec <= UNIX_S_MAX:  # float() of a huge int overflows
        raise BadPush(400, base + "timeStamp.Timeval.sec: out of range")
    color = optional(res, "colorType", int)
    return PlateRead(VENDOR, serial, plate, conf, str(plateid), offline,
                     None if sec is None else float(sec), None, None if color is None else str(color))  # fmt: skip


def answer(read: PlateRead | None, granted: bool) -> dict[str, Any]:
    """The camera's answer; ``plateid`` echoes the read's (a number when the camera sent one)."""
    out: dict[str, Any] = {"info": "ok" if granted else "no"}
    if read is not None and read.record is not None:
        numeric = read.record.isascii() and read.record.isdigit()  # '²' is a digit, not an int
        out["plateid"] = int(read.record) if numeric else read.record
    return {"Response_AlarmInfoPlate": out}


def _flag(value: Any, path: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value in ("0", "1"):
        return value == "1"
    raise BadPush(400, f"{path}: must be 0 or 1")
