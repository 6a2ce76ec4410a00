"""Remote commands (R/cmd): verify, refuse replays, dispatch to one module per action.

Order, first failure wins: token checks (edge.tokens.verify_command: malformed, signature, key,
site, aud, time window, action arguments) -> clock_unsynced (when trust.require_clock_sync) ->
replay -> unknown target -> unsupported action -> action. The jti is claimed durably (ReplayStore) right after the token checks, before anything
else can happen, so a command runs at most once even if delivered twice or after a restart.
Every command, done or refused, yields exactly one R/cmd/result and one Event (method remote).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from edge.cloud.commands import door, elevator, sync
from edge.cloud.replay import ReplayStore
from edge.ids import new_event_id
from edge.model import Event
from edge.ports import GateControl
from edge.tokens import CommandClaims, CommandDenied, TrustPolicy, verify_command

log = structlog.get_logger(__name__)

MAX_COMMAND_BYTES = 4096  # tokens are at most 1024 bytes (tokens.md); bigger is not even decoded


@dataclass
class CommandContext:
    gateway_id: str
    gate: GateControl
    replay: ReplayStore
    policy: Callable[[], TrustPolicy]
    require_clock_sync: bool
    request_sync: Callable[[], None]
    publish_result: Callable[[dict[str, object]], None]


Action = Callable[[CommandContext, CommandClaims], Awaitable[str | None]]

ACTIONS: dict[str, Action] = {
    "open": door.run,
    "hold_open": door.run,
    "lock": door.run,
    "normal": door.run,
    "elevator_call": elevator.run,
    "elevator_grant": elevator.run,
    "sync": sync.run,
}
GATEWAY_ACTIONS = frozenset({"sync"})  # actions addressed to the gateway itself, not a device


def _decode(payload: bytes) -> str | None:
    if len(payload) > MAX_COMMAND_BYTES:
        return None
    try:
        return payload.decode("ascii").strip()
    except UnicodeDecodeError:
        return None


async def handle_command(
    ctx: CommandContext, payload: bytes, now: float | None = None
) -> tuple[str | None, str]:
    """Run one R/cmd payload to its end. Returns (jti, "ok" or error code)."""
    t0 = time.perf_counter()
    now = time.time() if now is None else now
    token = _decode(payload)
    claims: CommandClaims | None = None
    if token is None:
        verdict: CommandClaims | CommandDenied = CommandDenied("malformed", None, "not a short ASCII token")
    else:
        try:
            verdict = verify_command(token, ctx.policy(), ctx.gateway_id, now)
        except Exception:  # a verifier bug must refuse, not crash or stay silent
            log.exception("command_verify_failed")
            verdict = CommandDenied("malformed", None, "verification failed")
    if isinstance(verdict, CommandDenied):
        jti, error = verdict.jti, verdict.error
        log.warning("command_refused", jti=jti, error=error, detail=verdict.detail)
    else:
        claims = verdict
        jti = claims.jti
        error = await _execute(ctx, claims, now)
    _report(ctx, claims, jti, error, t0)
    return jti, error or "ok"


async def _execute(ctx: CommandContext, c: CommandClaims, now: float) -> str | None:
    if ctx.require_clock_sync and not ctx.gate.clock_synced():
        # The time window proves nothing on an unsynchronised clock: an old captured command could pass.
        log.warning("command_refused", jti=c.jti, error="clock_unsynced")
        return "clock_unsynced"
    keep_until = c.exp + ctx.policy().leeway_s + 1
    if not ctx.replay.claim(c.jti, keep_until, now, c.iat):  # synchronous: no await between check and mark
        log.warning("command_refused", jti=c.jti, error="replay")
        return "replay"
    if c.act not in GATEWAY_ACTIONS and c.target not in ctx.gate.targets():
        log.warning("command_refused", jti=c.jti, error="unknown_target", target=c.target)
        return "unknown_target"
    action = ACTIONS.get(c.act)
    if action is None:
        return "unknown_action"
    if c.act not in GATEWAY_ACTIONS and not ctx.gate.supports(c.target, c.act):
        log.warning("command_refused", jti=c.jti, error="unsupported", target=c.target, act=c.act)
        return "unsupported"
    try:
        error = await action(ctx, c)
    except Exception as exc:  # a driver bug: refuse this command, keep the gateway running
        log.exception("command_failed", jti=c.jti, act=c.act, target=c.target)
        error = "device_unavailable" if isinstance(exc, OSError | TimeoutError) else "internal_error"
    log.info("command_done", jti=c.jti, act=c.act, target=c.target, by=c.by, error=error)
    return error


def _report(
    ctx: CommandContext, c: CommandClaims | None, jti: str | None, error: str | None, t0: float
) -> None:
    ts = int(time.time() * 1000)
    device = "gateway"
    facts: dict[str, Any] = {}
    if c is not None and c.act not in GATEWAY_ACTIONS:
        device = c.target
        try:
            facts = ctx.gate.action_facts(c.target, c.act, c.args(), error)
        except Exception:  # the fields are optional: never lose the event and result for them
            log.exception("command_facts_failed", jti=jti)
    event = Event(
        id=new_event_id(),
        ts=ts,
        device=device,
        reader=None,
        method="remote",
        credential=jti or "",
        subject=c.by if c is not None else None,
        result="denied" if error else "granted",
        reason=error or "ok",
        latency_ms=round((time.perf_counter() - t0) * 1000, 3),
        **facts,
    )
    try:
        ctx.gate.record(event)
    except Exception:
        log.exception("command_event_not_recorded", jti=jti)
    ctx.publish_result({"jti": jti, "ok": error is None, "error": error, "ts": ts})
