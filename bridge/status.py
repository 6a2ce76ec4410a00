"""``R/status`` (and its retained Last Will) and ``R/health`` -> ejyy's device ``online`` columns.

``R/status`` ``{"online": false}`` (the Last Will, or a clean stop) marks every device of that
gateway offline; ``R/health`` carries each device's own state and sets them one by one; an
``online: true`` status sets the devices as the last health said (all online if none seen yet).
Every write is an idempotent UPDATE, so each bridge instance may apply every status message:
these topics are subscribed without the share group (a shared subscription gets no retained
messages, and a fresh instance must learn the current state).
"""

from __future__ import annotations

import json
from typing import Any

from bridge.config import BridgeConfig
from bridge.db import now_ms, transaction

TABLE = {"entrance": "ejyy_iot_entrance", "elevator": "ejyy_iot_elevator", "park": "ejyy_iot_park"}


def _set_online(cur: Any, cfg: BridgeConfig, gateway: str, states: dict[str, bool]) -> None:
    devices = cfg.gateways[gateway].devices
    for name, online in states.items():
        dev = devices.get(name)
        if dev is not None:
            cur.execute(f"UPDATE {TABLE[dev.kind]} SET online = %s WHERE id = %s", (int(online), dev.ejyy_id))


def on_status(con: Any, cfg: BridgeConfig, gateway: str, body: dict[str, Any]) -> None:
    online = body.get("online") is True
    with transaction(con) as cur:
        cur.execute("SELECT devices FROM bridge_gateway_status WHERE gateway = %s", (gateway,))
        row = cur.fetchone()
        last: dict[str, bool] = json.loads(row[0]) if row and row[0] else {}
        names = cfg.gateways[gateway].devices
        states = {n: online and last.get(n, True) for n in names}
        _set_online(cur, cfg, gateway, states)
        cur.execute(
            "INSERT INTO bridge_gateway_status (gateway, online, version, whitelist_version, devices, updated_at)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE online = VALUES(online),"
            " version = COALESCE(VALUES(version), version),"
            " whitelist_version = COALESCE(VALUES(whitelist_version), whitelist_version), updated_at = VALUES(updated_at)",
            (
                gateway,
                int(online),
                str(body["version"])[:64] if body.get("version") else None,
                body.get("whitelist_version") if isinstance(body.get("whitelist_version"), int) else None,
                json.dumps(last) if last else None,
                now_ms(),
            ),
        )


def on_health(con: Any, cfg: BridgeConfig, gateway: str, body: dict[str, Any]) -> None:
    devs = body.get("devices")
    if not isinstance(devs, dict):
        return
    states = {str(n): bool(isinstance(d, dict) and d.get("online")) for n, d in devs.items()}
    with transaction(con) as cur:
        cur.execute("SELECT online, devices FROM bridge_gateway_status WHERE gateway = %s", (gateway,))
        row = cur.fetchone()
        if row is not None and not row[0]:
            return  # a stale retained health must not revive a gateway known offline
        merged = {**(json.loads(row[1]) if row and row[1] else {}), **states}
        _set_online(cur, cfg, gateway, states)
        cur.execute(
            "INSERT INTO bridge_gateway_status (gateway, online, devices, updated_at) VALUES (%s, 1, %s, %s)"
            " ON DUPLICATE KEY UPDATE devices = VALUES(devices), updated_at = VALUES(updated_at)",
            (gateway, json.dumps(merged), now_ms()),
        )
