"""QR codes in our token format (tokens.md), minted from ejyy rows, for the mini-program backend.

ejyy's own codes are AES with one global key and no expiry; these are Ed25519-signed, short-lived
and scoped to the zones that serve the holder's buildings:
- resident: ``sub`` ``resident:<wechat_mp_user_id>``, valid ``resident_ttl_s`` (<= 300 s, the
  gateway's default maximum), zones/floors of the devices serving the user's bound houses;
- visitor: ``sub`` ``visitor:<ejyy_vistor.id>``, valid from now until the row's ``expire``
  (capped at ``visitor_max_s``), zones of the devices serving the visited building, ``uses``
  optional.

HTTP (aiohttp, when ``codes.listen`` is set; bearer ``codes.api_token`` required):
``POST /v1/codes/resident {"user_id": N}`` and ``POST /v1/codes/visitor {"vistor_id": N, "uses": k}``
-> ``{"token", "jti", "exp"}``; 404 when the holder has no access, 410 for an expired visitor.
CLI: ``edge-bridge code -c bridge.yaml resident N`` / ``visitor N``.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import threading
import time
from typing import Any

from aiohttp import web

from bridge import whitelist
from bridge.commands import Signer
from bridge.config import BridgeConfig
from bridge.db import connect, transaction


class NoAccess(Exception):
    """The holder opens nothing (unknown, unbound, or expired: ``gone``)."""

    def __init__(self, why: str, gone: bool = False) -> None:
        super().__init__(why)
        self.gone = gone


def _scope(
    cfg: BridgeConfig, cur: Any, site: str, user: int | None, building: int | None
) -> tuple[list[str], list[int]]:
    zones: set[str] = set()
    floors: set[int] = set()
    for g in cfg.gateways.values():
        if (g.site or cfg.site) != site:
            continue
        if user is not None:
            r = whitelist.residents(cur, g.community_id).get(user)
            buildings = r.buildings if r else set()
        else:
            cur.execute("SELECT community_id FROM ejyy_building_info WHERE id = %s", (building,))
            row = cur.fetchone()
            buildings = (
                {building} if row and int(row[0]) == g.community_id and building is not None else set()
            )
        if not buildings:
            continue
        for d in g.devices.values():
            if d.kind in ("entrance", "elevator") and (not d.buildings or buildings & set(d.buildings)):
                zones.add(d.zone)
                if d.kind == "elevator":
                    for b in buildings:
                        floors.update(d.floors.get(b, []))
    return sorted(zones), sorted(floors)


def resident_code(cfg: BridgeConfig, con: Any, signer: Signer, user_id: int) -> dict[str, Any]:
    now = int(time.time())
    with transaction(con) as cur:
        zones, floors = _scope(cfg, cur, cfg.site, user_id, None)
    if not zones:
        raise NoAccess(f"resident {user_id} has no bound house served by a gate")
    claims: dict[str, Any] = {
        "iss": cfg.site, "sub": f"resident:{user_id}", "kind": "resident", "jti": f"r{user_id}-{secrets.token_hex(6)}",
        "nbf": now, "exp": now + cfg.codes.resident_ttl_s, "zones": zones,
    }  # fmt: skip
    if floors:
        claims["floors"] = floors
    return {"token": signer.sign(claims), "jti": claims["jti"], "exp": claims["exp"]}


def visitor_code(
    cfg: BridgeConfig, con: Any, signer: Signer, vistor_id: int, uses: int | None = None
) -> dict[str, Any]:
    now = int(time.time())
    with transaction(con) as cur:
        cur.execute("SELECT building_id, expire FROM ejyy_vistor WHERE id = %s", (vistor_id,))
        row = cur.fetchone()
        if row is None:
            raise NoAccess(f"no visitor {vistor_id}")
        building, expire = int(row[0]), int(row[1]) // 1000
        if expire <= now:
            raise NoAccess(f"visitor {vistor_id} expired", gone=True)
        zones, floors = _scope(cfg, cur, cfg.site, None, building)
    if not zones:
        raise NoAccess(f"building {building} of visitor {vistor_id} is served by no gate")
    claims: dict[str, Any] = {
        "iss": cfg.site, "sub": f"visitor:{vistor_id}", "kind": "visitor", "jti": f"v{vistor_id}-{secrets.token_hex(6)}",
        "nbf": now, "exp": min(expire, now + cfg.codes.visitor_max_s), "zones": zones,
    }  # fmt: skip
    if floors:
        claims["floors"] = floors
    if uses:
        claims["uses"] = int(uses)
    return {"token": signer.sign(claims), "jti": claims["jti"], "exp": claims["exp"]}


# --- HTTP ----------------------------------------------------------------------------------------
def make_app(cfg: BridgeConfig, signer: Signer) -> web.Application:
    if not cfg.codes.api_token:
        raise ValueError("codes.listen needs codes.api_token (the endpoint mints door codes)")
    expected = f"Bearer {cfg.codes.api_token}".encode()

    def mint(kind: str, body: dict[str, Any]) -> dict[str, Any]:
        con = connect(cfg.db)
        try:
            if kind == "resident":
                return resident_code(cfg, con, signer, int(body["user_id"]))
            return visitor_code(cfg, con, signer, int(body["vistor_id"]), body.get("uses"))
        finally:
            con.close()

    async def handle(request: web.Request) -> web.Response:
        if not hmac.compare_digest(request.headers.get("Authorization", "").encode(), expected):
            return web.json_response({"error": "unauthorized"}, status=401)
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError
            out = await asyncio.get_running_loop().run_in_executor(
                None, mint, request.match_info["kind"], body
            )
        except NoAccess as exc:
            return web.json_response({"error": str(exc)}, status=410 if exc.gone else 404)
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": "bad request"}, status=400)
        return web.json_response(out)

    app = web.Application()
    app.router.add_post("/v1/codes/{kind:resident|visitor}", handle)
    return app


def serve_in_thread(cfg: BridgeConfig, signer: Signer) -> threading.Thread:
    """Run the codes endpoint on its own event loop thread (the bridge itself is threaded)."""
    assert cfg.codes.listen
    host, _, port = cfg.codes.listen.rpartition(":")
    app = make_app(cfg, signer)
    ready = threading.Event()

    def run() -> None:
        loop = asyncio.new_event_loop()
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, host or "127.0.0.1", int(port)).start())
        ready.set()
        loop.run_forever()

    t = threading.Thread(target=run, name="bridge-codes", daemon=True)
    t.start()
    ready.wait(10)
    return t
