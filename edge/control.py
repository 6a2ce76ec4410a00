"""Local control socket (unix, 0600): lets `edge open` / `edge status` / `edge fire reset` /
`edge reload` / `edge doctor` talk to the running daemon.

The serial and RTU ports are held by the daemon, so a maintenance open must go through it rather
than open the bus a second time. One JSON object per line, one reply per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from edge.app import Gateway

log = structlog.get_logger(__name__)
MAX_REQUEST = 4096


def socket_path(data_dir: Path) -> Path:
    return data_dir / "control.sock"


async def _handle(gw: Gateway, req: dict[str, Any]) -> dict[str, Any]:
    cmd = req.get("cmd")
    if cmd == "status":
        return {"ok": True, "status": gw.status()}
    if cmd == "open":
        door = req.get("door")
        if not isinstance(door, str) or door not in gw.devices:
            return {"ok": False, "error": "unknown_target"}
        by = str(req.get("by") or "local")
        args = {"by": by}
        err = await gw.act(door, "open", args)
        result = "granted" if err is None else "denied"
        facts = gw.action_facts(door, "open", args, err)
        gw.record(gw.make_event(door, None, "remote", "local-cli", f"local:{by}", result, err or "ok", None, **facts))
        return {"ok": err is None, "error": err}
    if cmd == "fire_reset":
        return await _fire_reset(gw, str(req.get("by") or "local"))
    if cmd == "reload":  # `edge reload`: the same as SIGHUP, with the result in the reply
        from edge.reload import reload

        return await reload(gw, gw.config_path)
    if cmd == "doctor":  # `edge doctor`: the daemon's own view of its hardware (it holds the ports)
        from edge.doctor_checks import daemon_view

        return {"ok": True, "doctor": daemon_view(gw)}
    return {"ok": False, "error": "unknown_command"}


async def _fire_reset(gw: Gateway, by: str) -> dict[str, Any]:
    """The manual fire reset at the box: the same `normal` action as the cloud's command to target
    `fire`, recorded as a remote event like a maintenance open."""
    if "fire" not in gw.services:
        return {"ok": False, "error": "unknown_target"}
    err = await gw.act("fire", "normal", {"by": f"local:{by}"})
    result = "granted" if err is None else "denied"
    gw.record(gw.make_event("fire", None, "remote", "local-cli", f"local:{by}", result, err or "ok", None))
    return {"ok": err is None, "error": err, "fire": gw.services["fire"].status()}


async def serve(gw: Gateway) -> None:
    path = socket_path(gw.cfg.gateway.data_dir)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            try:
                req = json.loads(line[:MAX_REQUEST])
                reply = (
                    await _handle(gw, req) if isinstance(req, dict) else {"ok": False, "error": "malformed"}
                )
            except json.JSONDecodeError:
                reply = {"ok": False, "error": "malformed"}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ConnectionError) as exc:
            log.warning("control_client_failed", error=str(exc))
        except Exception as exc:  # never let a client take the daemon down
            log.exception("control_error", error=str(exc))
        finally:
            writer.close()

    old = os.umask(0o077)
    try:
        server = await asyncio.start_unix_server(client, path=str(path))
    finally:
        os.umask(old)
    async with server:
        try:
            await server.serve_forever()
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


async def request(data_dir: Path, req: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Send one request to a running daemon; raises ConnectionError when none listens."""
    path = socket_path(data_dir)
    try:
        reader, writer = await asyncio.open_unix_connection(str(path))
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise ConnectionError(f"no running gateway at {path} ({exc.strerror})") from None
    try:
        writer.write(json.dumps(req).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        return json.loads(line)
    finally:
        writer.close()
