"""ejyy rows -> whitelist Entries per gateway (mqtt.md), snapshots and deltas.

Sources, per gateway (its ejyy community and the devices it serves, from the bridge config):
- residents: ``ejyy_user_building`` rows with status 1 (bound) whose ``ejyy_building_info`` is in
  the community, of users whose ``ejyy_wechat_mp_user.status`` is 1 (not frozen);
- their cards: ``bridge_card`` (ejyy stores no card UIDs) -> card Entries, zones of the entrance
  and elevator devices serving one of the user's buildings, floors from the elevator config;
- their cars: ``ejyy_user_car`` status 1 -> plate Entries with the park devices' zones;
- visitors: ``ejyy_vistor`` with a ``car_number`` -> plate Entries valid from ``created_at`` until
  ``expire`` (the gateway enforces ``until`` itself, so a visitor stops opening on time even if
  the bridge is down);
- ``ejyy_iot_park_blacklist`` of the gateway's parks -> blocked plate Entries (they win).

ejyy has no ``updated_at`` columns and deletes rows or flips ``status`` in place, so a high-water
mark on ``created_at``/``id`` alone would miss unbinding, deletes and blacklist removals. The bridge
therefore keeps, per gateway, the entry set it last sent (``bridge_whitelist``) and diffs the freshly
built set against it: removed keys become ``del`` ops, changed ones ``put``. To keep polling cheap, a
fingerprint query (count, max id, sum of status per source table) runs every ``poll_s``; the full
build + diff runs when the fingerprint moves, and every ``full_diff_s`` regardless (expired visitors
drop out then). The state row is locked (SELECT ... FOR UPDATE) while a version is bumped, so
several bridge instances never publish two different deltas for one version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bridge.config import BridgeConfig, GatewayConfig
from bridge.db import now_ms, transaction
from edge.normalize import BadCredential, normalize_plate

Entry = dict[str, Any]


@dataclass
class Resident:
    user_id: int
    buildings: set[int]


def _zones_for(g: GatewayConfig, kinds: tuple[str, ...], buildings: set[int] | None) -> list[str]:
    zones = {
        d.zone
        for d in g.devices.values()
        if d.kind in kinds and (buildings is None or not d.buildings or buildings & set(d.buildings))
    }
    return sorted(zones)


def _floors_for(g: GatewayConfig, buildings: set[int]) -> list[int]:
    floors: set[int] = set()
    for d in g.devices.values():
        if d.kind == "elevator":
            for b in buildings:
                floors.update(d.floors.get(b, []))
    return sorted(floors)


def _plate(raw: str | None) -> str | None:
    if not raw:
        return None
    try:
        return normalize_plate(raw)
    except BadCredential:
        return None


def residents(cur: Any, community_id: int) -> dict[int, Resident]:
    cur.execute(
        "SELECT ub.wechat_mp_user_id, ub.building_id FROM ejyy_user_building ub"
        " JOIN ejyy_building_info bi ON bi.id = ub.building_id"
        " JOIN ejyy_wechat_mp_user u ON u.id = ub.wechat_mp_user_id"
        " WHERE bi.community_id = %s AND ub.status = 1 AND u.status = 1",
        (community_id,),
    )
    out: dict[int, Resident] = {}
    for uid, bid in cur.fetchall():
        out.setdefault(int(uid), Resident(int(uid), set())).buildings.add(int(bid))
    return out


def build_entries(cur: Any, cfg: BridgeConfig, gateway: str, now_s: int) -> dict[str, Entry]:
    """The whole whitelist of one gateway, keyed ``kind:value``."""
    g = cfg.gateways[gateway]
    out: dict[str, Entry] = {}
    res = residents(cur, g.community_id)
    park_zones = _zones_for(g, ("park",), None)
    if res:
        cur.execute("SELECT uid, wechat_mp_user_id FROM bridge_card WHERE status = 1")
        for uid, user in cur.fetchall():
            r = res.get(int(user))
            zones = _zones_for(g, ("entrance", "elevator"), r.buildings) if r else []
            if not r or not zones:
                continue
            e: Entry = {"kind": "card", "value": str(uid).upper(), "subject": f"resident:{r.user_id}",
                        "zones": zones, "from": None, "until": None, "blocked": False}  # fmt: skip
            floors = _floors_for(g, r.buildings)
            if floors:
                e["floors"] = floors
            out[f"card:{e['value']}"] = e
    if g.legacy_codes:
        _legacy_entries(cur, g, res, now_s, cfg.visitor_grace_s, out)
    if park_zones:
        cur.execute(
            "SELECT id, car_number, created_at, expire FROM ejyy_vistor"
            " WHERE community_id = %s AND car_number IS NOT NULL AND expire > %s ORDER BY id",
            (g.community_id, (now_s - cfg.visitor_grace_s) * 1000),
        )
        for vid, car, created, expire in cur.fetchall():
            plate = _plate(car)
            if plate:
                out[f"plate:{plate}"] = {
                    "kind": "plate", "value": plate, "subject": f"visitor:{vid}", "zones": park_zones,
                    "from": int(created) // 1000, "until": int(expire) // 1000, "blocked": False,
                }  # fmt: skip
        if res:
            cur.execute(
                "SELECT wechat_mp_user_id, car_number FROM ejyy_user_car WHERE status = 1 ORDER BY id"
            )
            for user, car in cur.fetchall():
                plate = _plate(car)
                if plate and int(user) in res:  # a resident's car wins over a visitor's booking
                    out[f"plate:{plate}"] = {
                        "kind": "plate", "value": plate, "subject": f"resident:{int(user)}",
                        "zones": park_zones, "from": None, "until": None, "blocked": False,
                    }  # fmt: skip
        parks = [d.ejyy_id for d in g.devices.values() if d.kind == "park"]
        cur.execute(
            "SELECT id, car_number FROM ejyy_iot_park_blacklist WHERE park_id IN %s ORDER BY id", (parks,)
        )
        for bid, car in cur.fetchall():
            plate = _plate(car)
            if plate:
                prev = out.get(f"plate:{plate}")
                out[f"plate:{plate}"] = {
                    "kind": "plate", "value": plate,
                    "subject": prev["subject"] if prev else f"blacklist:{bid}",
                    "zones": park_zones, "from": None, "until": None, "blocked": True,
                }  # fmt: skip
    return out


def _legacy_entries(
    cur: Any, g: GatewayConfig, res: dict[int, Resident], now_s: int, grace_s: int, out: dict[str, Entry]
) -> None:
    """One entry per resident building binding and per visitor booking, keyed as the gateway's legacy
    verifier looks a decrypted ejyy code up (``whitelist_value``): the code grants only while the row
    that would have made ejyy accept it exists, and only at that building's devices."""
    from edge.legacy_ejyy import RESIDENT, VISITOR, whitelist_value

    for r in res.values():
        for b in sorted(r.buildings):
            zones = _zones_for(g, ("entrance", "elevator"), {b})
            if zones:
                e: Entry = {"kind": "card", "value": whitelist_value(RESIDENT, r.user_id, b),
                            "subject": f"resident:{r.user_id}", "zones": zones, "from": None,
                            "until": None, "blocked": False}  # fmt: skip
                floors = _floors_for(g, {b})
                if floors:
                    e["floors"] = floors
                out[f"card:{e['value']}"] = e
    cur.execute(
        "SELECT id, building_id, created_at, expire FROM ejyy_vistor WHERE community_id = %s AND expire > %s",
        (g.community_id, (now_s - grace_s) * 1000),
    )
    for vid, b, created, expire in cur.fetchall():
        zones = _zones_for(g, ("entrance", "elevator"), {int(b)})
        if zones:
            value = whitelist_value(VISITOR, int(vid), int(b))
            out[f"card:{value}"] = {"kind": "card", "value": value, "subject": f"visitor:{int(vid)}",
                                    "zones": zones, "from": int(created) // 1000,
                                    "until": int(expire) // 1000, "blocked": False}  # fmt: skip


def fingerprint(cur: Any, cfg: BridgeConfig, gateway: str) -> str:
    """Moves whenever a row feeding this gateway is inserted, deleted or has its status flipped."""
    g = cfg.gateways[gateway]
    parks = [d.ejyy_id for d in g.devices.values() if d.kind == "park"] or [0]
    cur.execute(
        "SELECT"
        " (SELECT CONCAT(COUNT(*), '.', COALESCE(MAX(ub.id), 0), '.', COALESCE(SUM(ub.status), 0))"
        "    FROM ejyy_user_building ub JOIN ejyy_building_info bi ON bi.id = ub.building_id"
        "    WHERE bi.community_id = %s),"
        " (SELECT CONCAT(COUNT(*), '.', COALESCE(MAX(id), 0), '.', COALESCE(SUM(status), 0)) FROM ejyy_user_car),"
        " (SELECT CONCAT(COUNT(*), '.', COALESCE(SUM(status), 0), '.', COALESCE(SUM(CRC32(CONCAT(uid, '/', wechat_mp_user_id))), 0))"
        "    FROM bridge_card),"
        " (SELECT CONCAT(COUNT(*), '.', COALESCE(MAX(id), 0), '.', COALESCE(SUM(expire), 0))"
        "    FROM ejyy_vistor WHERE community_id = %s),"
        " (SELECT CONCAT(COUNT(*), '.', COALESCE(MAX(id), 0)) FROM ejyy_iot_park_blacklist WHERE park_id IN %s),"
        " (SELECT CONCAT(COUNT(*), '.', COALESCE(SUM(status), 0)) FROM ejyy_wechat_mp_user)",
        (g.community_id, g.community_id, parks),
    )
    return "|".join(str(v) for v in cur.fetchone())


def diff(old: dict[str, Entry], new: dict[str, Entry]) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = []
    for key in sorted(old.keys() - new.keys()):
        kind, _, value = key.partition(":")
        ops.append({"op": "del", "kind": kind, "value": value})
    for key in sorted(new):
        if old.get(key) != new[key]:
            ops.append({"op": "put", "entry": new[key]})
    return ops


def _locked_state(cur: Any, gateway: str) -> tuple[int, dict[str, Entry], str]:
    lock = "SELECT version, fingerprint FROM bridge_whitelist WHERE gateway = %s FOR UPDATE"
    cur.execute(lock, (gateway,))
    row = cur.fetchone()
    if row is None:  # first time only: INSERT before the locking read would deadlock two instances
        cur.execute(
            "INSERT IGNORE INTO bridge_whitelist (gateway, version, updated_at) VALUES (%s, 0, %s)",
            (gateway, now_ms()),
        )
        cur.execute(lock, (gateway,))
        row = cur.fetchone()
    version, fp = row
    cur.execute("SELECT k, body FROM bridge_whitelist_entry WHERE gateway = %s", (gateway,))
    return int(version), {str(k): json.loads(b) for k, b in cur.fetchall()}, str(fp)


def _store(
    cur: Any, gateway: str, version: int, old: dict[str, Entry], new: dict[str, Entry], fp: str
) -> None:
    """Write only what changed (one row per entry: a 100,000-entry list is no single huge value)."""
    gone = sorted(old.keys() - new.keys())
    for n in range(0, len(gone), 1000):
        cur.execute(
            "DELETE FROM bridge_whitelist_entry WHERE gateway = %s AND k IN %s", (gateway, gone[n : n + 1000])
        )
    changed = [
        (gateway, k, json.dumps(e, ensure_ascii=False, separators=(",", ":")))
        for k, e in new.items()
        if old.get(k) != e
    ]
    for n in range(0, len(changed), 5000):
        cur.executemany(
            "INSERT INTO bridge_whitelist_entry (gateway, k, body) VALUES (%s, %s, %s)"
            " ON DUPLICATE KEY UPDATE body = VALUES(body)",
            changed[n : n + 5000],
        )
    cur.execute(
        "UPDATE bridge_whitelist SET version = %s, fingerprint = %s, updated_at = %s WHERE gateway = %s",
        (version, fp, now_ms(), gateway),
    )


def current(con: Any, cfg: BridgeConfig, gateway: str, now_s: int) -> tuple[int, list[Entry]]:
    """For ``R/sync/request``: the current list and its version (bumped if ejyy moved on).

    With an unchanged fingerprint the stored list is served as is (a fleet reconnecting at once
    must not rebuild every list); expiries are caught by the poller's periodic full diff.
    """
    with transaction(con) as cur:
        version, old, last_fp = _locked_state(cur, gateway)
        fp = fingerprint(cur, cfg, gateway)
        if version > 0 and fp == last_fp:
            return version, list(old.values())  # nothing moved since the last build: no rebuild
        new = build_entries(cur, cfg, gateway, now_s)
        if new != old or version == 0:
            version += 1
        _store(cur, gateway, version, old, new, fp)
    return version, list(new.values())


def poll_delta(con: Any, cfg: BridgeConfig, gateway: str, now_s: int, full: bool) -> dict[str, Any] | None:
    """A Delta from the last sent version when ejyy changed (None when nothing did)."""
    with transaction(con) as cur:
        cur.execute("SELECT fingerprint, version FROM bridge_whitelist WHERE gateway = %s", (gateway,))
        row = cur.fetchone()
        if row is None:
            return None  # nothing sent yet: the gateway's sync request brings a snapshot
        fp = fingerprint(cur, cfg, gateway)
        if not full and fp == row[0]:
            return None
        version, old, _ = _locked_state(cur, gateway)
        new = build_entries(cur, cfg, gateway, now_s)
        ops = diff(old, new)
        if not ops:
            _store(cur, gateway, version, old, old, fp)
            return None
        _store(cur, gateway, version + 1, old, new, fp)
    return {"type": "delta", "from": version, "to": version + 1, "ops": ops}


