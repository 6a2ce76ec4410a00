"""Gateway events -> ejyy's log tables, exactly once per event id.

Mapping (granted passages only; ejyy's logs are passage logs, every other event is kept only as
its id in ``bridge_event``):
- entrance devices -> ``ejyy_iot_entrance_log``, elevator devices -> ``ejyy_iot_elevator_log``:
  ``method`` 1 QR (``qr``), 2 NFC (``nfc`` with a token: phone NFC), 3 IC card (``nfc`` whose
  credential is a masked card UID ``****B2C3``); ``wechat_mp_user_id`` from ``resident:N``,
  ``vistor_id`` from ``visitor:N``;
- park devices -> ``ejyy_iot_park_log``: ``car_number`` (events carry a masked plate, so it is
  resolved from the subject's ejyy car or visitor row matching the mask), ``gate`` (device's
  ``gate`` or its name), ``is_leave`` 1 when ``direction`` is ``out``.

Idempotence: the log tables have no event id, so one transaction does INSERT IGNORE of the batch's
ids into ``bridge_event`` tagged with a fresh batch token, reads back which ids carry that token
(the new ones) and inserts log rows for those only, then commits. A redelivered batch finds all
its ids already there and writes nothing; a crash before COMMIT leaves nothing behind.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from bridge.config import BridgeConfig
from bridge.db import now_ms, transaction

METHOD = {"qr": 1, "nfc": 2}
IC_CARD = 3


def _subject(subject: object) -> tuple[int | None, int | None]:
    """-> (wechat_mp_user_id, vistor_id)."""
    if not isinstance(subject, str):
        return None, None
    kind, _, n = subject.partition(":")
    if not n.isdigit():
        return None, None
    return (int(n), None) if kind == "resident" else (None, int(n)) if kind == "visitor" else (None, None)


def _method(e: dict[str, Any]) -> int | None:
    m = METHOD.get(str(e.get("method")))
    if m == 2 and str(e.get("credential") or "").startswith("****"):
        return IC_CARD
    return m


def _mask_matches(mask: str, plate: str) -> bool:
    if "***" not in mask:
        return mask == plate
    head, _, tail = mask.partition("***")
    return plate.startswith(head) and plate.endswith(tail)


def _car_number(cur: Any, e: dict[str, Any]) -> str:
    mask = str(e.get("credential") or "")
    user, visitor = _subject(e.get("subject"))
    if user is not None:
        cur.execute(
            "SELECT car_number FROM ejyy_user_car WHERE wechat_mp_user_id = %s AND status = 1", (user,)
        )
    elif visitor is not None:
        cur.execute("SELECT car_number FROM ejyy_vistor WHERE id = %s", (visitor,))
    else:
        return mask[:8]
    for (car,) in cur.fetchall():
        plate = re.sub(r"[\s·\-.]", "", str(car or "")).upper()
        if plate and _mask_matches(mask, plate):
            return plate[:8]
    return mask[:8]


def valid(e: object) -> bool:
    return isinstance(e, dict) and isinstance(e.get("id"), str) and 0 < len(e["id"]) <= 64


def _ts(e: dict[str, Any]) -> int:
    ts = e.get("ts")
    return ts if isinstance(ts, int) and 0 <= ts < 10**13 else 0


def write_batch(con: Any, cfg: BridgeConfig, items: list[tuple[str, dict[str, Any]]]) -> int:
    """Write (gateway, event) pairs, of any gateways, in one transaction. Returns how many were new."""
    by_id: dict[str, tuple[str, dict[str, Any]]] = {}
    for gw, e in items:
        if gw in cfg.gateways and valid(e):
            by_id.setdefault(e["id"], (gw, e))
    if not by_id:
        return 0
    batch = uuid.uuid4().hex
    now = now_ms()
    with transaction(con) as cur:
        cur.executemany(
            "INSERT IGNORE INTO bridge_event (event_id, gateway, ts, batch, written_at) VALUES (%s, %s, %s, %s, %s)",
            [(i, gw, _ts(e), batch, now) for i, (gw, e) in sorted(by_id.items())],  # one lock order
        )
        if cur.rowcount == len(by_id):  # the usual case: all new, no need to read them back
            fresh = list(by_id.values())
        else:
            cur.execute("SELECT event_id FROM bridge_event WHERE batch = %s", (batch,))
            fresh = [by_id[i] for (i,) in cur.fetchall()]
        door_rows: dict[str, list[tuple[Any, ...]]] = {"entrance": [], "elevator": []}
        park_rows: list[tuple[Any, ...]] = []
        for gw, e in sorted(fresh, key=lambda x: (_ts(x[1]), x[1]["id"])):
            dev = cfg.gateways[gw].devices.get(str(e.get("device")))
            if dev is None or e.get("result") != "granted":
                continue
            ts = _ts(e) or now
            if dev.kind == "park":
                gate = (dev.gate or str(e["device"]))[:32]
                park_rows.append(
                    (dev.ejyy_id, _car_number(cur, e), gate, int(e.get("direction") == "out"), ts)
                )
                continue
            method = _method(e)
            if method is not None:
                user, visitor = _subject(e.get("subject"))
                door_rows[dev.kind].append((user, visitor, dev.ejyy_id, method, ts))
        if door_rows["entrance"]:
            cur.executemany(
                "INSERT INTO ejyy_iot_entrance_log (wechat_mp_user_id, vistor_id, entrance_id, method, created_at)"
                " VALUES (%s, %s, %s, %s, %s)",
                door_rows["entrance"],
            )
        if door_rows["elevator"]:
            cur.executemany(
                "INSERT INTO ejyy_iot_elevator_log (wechat_mp_user_id, vistor_id, elevator_id, method, created_at)"
                " VALUES (%s, %s, %s, %s, %s)",
                door_rows["elevator"],
            )
        if park_rows:
            cur.executemany(
                "INSERT INTO ejyy_iot_park_log (park_id, car_number, gate, is_leave, created_at)"
                " VALUES (%s, %s, %s, %s, %s)",
                park_rows,
            )
    return len(fresh)
