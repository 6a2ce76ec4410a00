"""Remote open: ejyy rows and operator requests -> signed command tokens (mqtt.md "Commands").

ejyy's mini-program records a remote open as a row in ``ejyy_community_remote_open_door_log``
(``door_id`` = an ``ejyy_iot_entrance`` id, ``success`` 0). The bridge polls recent rows with
``success = 0``, claims each in ``bridge_command`` (``source`` is unique, so of several bridge
instances exactly one sends it), signs an ``open`` token with the site's Ed25519 private key
and publishes it on ``R/cmd``. The gateway's ``R/cmd/result`` fills the row's result and, when
ok, sets ejyy's ``success`` to 1. Rows older than ``MAX_AGE_S`` are never sent: a stale tap must
not open a door minutes later.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bridge.config import BridgeConfig
from bridge.db import now_ms, transaction
from edge.tokens import mint_token

MAX_AGE_S = 30
TTL_S = 30


class Signer:
    """The site's signing key (JSON ``{"kid", "private"}``, as `edge cloud keygen` writes it)."""

    def __init__(self, path: Path) -> None:
        data = json.loads(path.read_text())
        raw = base64.urlsafe_b64decode(data["private"] + "=" * (-len(data["private"]) % 4))
        self.key = Ed25519PrivateKey.from_private_bytes(raw)
        self.kid = str(data["kid"])

    def sign(self, claims: dict[str, Any]) -> str:
        return mint_token(self.key, self.kid, claims)


def command_token(
    signer: Signer, site: str, gateway: str, act: str, target: str, **extra: Any
) -> tuple[str, str]:
    now = int(time.time())
    jti = f"cmd-{uuid.uuid4().hex}"
    claims = {
        "iss": site,
        "aud": gateway,
        "jti": jti,
        "iat": now,
        "exp": now + TTL_S,
        "act": act,
        "target": target,
    }
    claims.update({k: v for k, v in extra.items() if v is not None})
    return jti, signer.sign(claims)


def record_sent(
    cur: Any, jti: str, gateway: str, target: str, act: str, by: str | None, source: str | None = None
) -> bool:
    """Claim/record a command; False when ``source`` was already claimed (by this or another instance)."""
    cur.execute(
        "INSERT IGNORE INTO bridge_command (jti, source, gateway, target, act, by_whom, sent_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (jti, source, gateway, target, act, by, now_ms()),
    )
    return bool(cur.rowcount == 1)


def claim_remote_opens(con: Any, cfg: BridgeConfig, signer: Signer) -> list[tuple[str, str]]:
    """New ejyy remote-open rows -> [(gateway, token)] this instance must publish."""
    out: list[tuple[str, str]] = []
    communities = sorted({g.community_id for g in cfg.gateways.values()})
    with transaction(con) as cur:
        cur.execute(
            "SELECT id, door_id, wechat_mp_user_id FROM ejyy_community_remote_open_door_log r"
            " WHERE success = 0 AND created_at > %s AND community_id IN %s"
            " AND NOT EXISTS (SELECT 1 FROM bridge_command c WHERE c.source = CONCAT('ejyy-remote:', r.id))"
            " ORDER BY id",
            (now_ms() - MAX_AGE_S * 1000, communities),
        )
        for rid, door, user in cur.fetchall():
            where = cfg.device_by_ejyy("entrance", int(door))
            if where is None:
                continue
            gw, device = where
            by = f"resident:{int(user)}"
            jti, token = command_token(signer, cfg.site_of(gw), gw, "open", device, by=by)
            if record_sent(cur, jti, gw, device, "open", by, source=f"ejyy-remote:{rid}"):
                out.append((gw, token))
    return out


def on_result(con: Any, gateway: str, body: dict[str, Any]) -> None:
    jti = body.get("jti")
    if not isinstance(jti, str):
        return
    ok = body.get("ok") is True
    err = body.get("error")
    with transaction(con) as cur:
        cur.execute(
            "UPDATE bridge_command SET ok = %s, error = %s, result_at = %s WHERE jti = %s AND gateway = %s",
            (int(ok), str(err)[:64] if err else None, now_ms(), jti, gateway),
        )
        if ok:
            cur.execute("SELECT source FROM bridge_command WHERE jti = %s", (jti,))
            row = cur.fetchone()
            if row and row[0] and str(row[0]).startswith("ejyy-remote:"):
                rid = int(str(row[0]).split(":", 1)[1])
                cur.execute(
                    "UPDATE ejyy_community_remote_open_door_log SET success = 1 WHERE id = %s", (rid,)
                )
