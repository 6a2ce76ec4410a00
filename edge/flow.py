"""The hot path: presentation -> decision (pure engine) -> event in the outbox -> the device acts.

The event is committed before the device is driven, so a crash at any moment keeps it. The device is
whatever kind the reader serves (door, barrier, elevator): this module only speaks the Device
interface, so a new kind needs no branch here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import structlog

from drivers.device import Device, Grant
from drivers.modbus_bus import DeviceUnavailable
from edge.db import is_damage
from edge.engine import Clock, DeviceContext, decide_entry, decide_legacy, decide_token
from edge.legacy_ejyy import LegacyClaims, candidate, verify_legacy
from edge.model import Decision, Presentation
from edge.normalize import mask_credential
from edge.ratelimit import RateLimiter
from edge.supervise import declare_fatal
from edge.tokens import TokenClaims, verify_token
from edge.trust import build_legacy

if TYPE_CHECKING:
    from edge.app import Gateway

log = structlog.get_logger(__name__)


class Flow:
    """Decides presentations for the gateway's devices; ``present`` never raises."""

    def __init__(
        self,
        gw: Gateway,
        devices: Mapping[str, Device],
        reader_device: Mapping[str, str],
        exempt: frozenset[str] = frozenset(),
    ) -> None:
        self.gw = gw
        self.devices = devices
        self.reader_device = reader_device
        rl = gw.cfg.rate_limit
        self.limiter = RateLimiter(rl.denials, rl.window_s, rl.cooldown_s)
        self.exempt = exempt  # readers never rate limited (plate cameras)
        self.legacy = build_legacy(gw.cfg)  # None unless trust.legacy_ejyy.enabled: ejyy codes stay malformed
        self._tasks: set[asyncio.Task[None]] = set()

    def present(self, pres: Presentation) -> Decision:
        """Decide one presentation, commit its event, then drive the device. Never raises."""
        try:
            return self._present(pres)
        except Exception as exc:  # a bug must not kill the reader or the loop: deny and say why
            log.exception("presentation_failed", reader=pres.reader, error=str(exc))
            if is_damage(exc):  # a whitelist that went bad under us: deny, then restart to recover it
                declare_fatal("decision", f"damaged database: {exc}")
            decision = Decision("denied", "internal_error")
            self._record(pres, self.reader_device.get(pres.reader or "", "gateway"), decision, None)
            return decision

    def _present(self, pres: Presentation) -> Decision:
        gw = self.gw
        dev_id = self.reader_device.get(pres.reader or "")
        if dev_id is None:
            decision = Decision("denied", "device_unavailable", credential=_mask(pres))
            self._record(pres, "gateway", decision, None)
            return decision
        device = self.devices[dev_id]
        key = None if pres.kind == "token" else f"{pres.kind}:{pres.value}"
        ctx = device.context(key)
        limited = pres.reader is not None and pres.reader not in self.exempt
        if limited and self.limiter.blocked(pres.reader, time.monotonic()):  # type: ignore[arg-type]
            decision = Decision("denied", "rate_limited", credential=_mask(pres))
            self._record(pres, dev_id, decision, ctx)
            return decision
        now = time.time()
        synced = gw.clock.synced()
        if pres.kind == "token" and self.legacy is not None and candidate(pres.value):
            decision, key, ctx = self._legacy(pres, device, now, synced)  # hex: never a JWS
        elif pres.kind == "token":
            verified = verify_token(pres.value, gw.policy, now, clock_trusted=synced)
            revoked, used = False, 0
            if isinstance(verified, TokenClaims):
                revoked = gw.store.is_revoked(verified.jti, now)
                used = gw.store.uses(verified.jti) if verified.uses is not None else 0
            decision = decide_token(pres, verified, ctx, revoked=revoked, used=used)
            if decision.reason == "malformed" and pres.reader is not None:
                # Text that is no token at all is scanner noise like garbage bytes: summarised per
                # reader, so a babbling scanner cannot flood the outbox or the journal.
                gw.reader_reject(pres.reader, "malformed", getattr(verified, "detail", ""))
                return decision
            if decision.granted and isinstance(verified, TokenClaims) and verified.uses is not None:
                gw.store.record_use(verified.jti, verified.exp)
        else:
            entry = gw.store.lookup(pres.kind, pres.value)
            clock = Clock(now, gw.tz, synced, gw.cfg.trust.require_clock_sync)
            decision = decide_entry(pres, entry, ctx, clock, _mask(pres))
        self._record(pres, dev_id, decision, ctx)
        if limited and not decision.granted and self.limiter.denied(pres.reader, decision.reason,  # type: ignore[arg-type]
                                                                    time.monotonic()):  # fmt: skip
            log.warning("reader_rate_limited", reader=pres.reader, cooldown_s=self.limiter.cooldown_s)
        if decision.alarm is not None:  # e.g. soft anti-passback: through, and the cloud is told
            self._record(pres, dev_id, Decision("denied", decision.alarm, decision.subject,
                                                credential=decision.credential), ctx, result="alarm")  # fmt: skip
        if decision.granted:
            grant = Grant(decision, pres.method, pres.reader, key, t_in=pres.t_mono)
            self.spawn(self.actuate(device, grant, lambda: self._failed(pres, dev_id, decision, ctx)))
        # Logged after the actuation task's first step (FIFO), so rendering the line costs the door nothing.
        asyncio.get_running_loop().call_soon(_log_decision, dev_id, pres, decision)
        return decision

    def _legacy(
        self, pres: Presentation, device: Device, now: float, synced: bool
    ) -> tuple[Decision, str | None, DeviceContext]:
        """An ejyy AES code (opt-in): decided as the card entry the bridge keeps for its person and
        building, so its key (anti-passback, the barrier's claim) is that entry's."""
        gw = self.gw
        assert self.legacy is not None
        verified = verify_legacy(pres.value, self.legacy, now, clock_trusted=synced)
        entry, key = None, None
        if isinstance(verified, LegacyClaims):
            key = ":".join(verified.entry_key)
            entry = gw.store.lookup(*verified.entry_key)
        ctx = device.context(key)
        clock = Clock(now, gw.tz, synced, gw.cfg.trust.require_clock_sync)
        return decide_legacy(pres, verified, entry, ctx, clock), key, ctx

    def note(self, pres: Presentation, reason: str) -> None:
        """An `info` event for a presentation that is only reported, never decided (a plate camera
        replaying a record from its offline memory): it opens nothing."""
        dev_id = self.reader_device.get(pres.reader or "", "gateway")
        device = self.devices.get(dev_id)
        ctx = device.context(None) if device is not None else None
        self._record(pres, dev_id, Decision("denied", reason, credential=_mask(pres)), ctx, result="info")

    def _record(
        self,
        pres: Presentation,
        device: str,
        decision: Decision,
        ctx: DeviceContext | None,
        *,
        result: str | None = None,
    ) -> None:
        latency = (time.perf_counter() - pres.t_mono) * 1000 if pres.t_mono else None
        floors = decision.floors if ctx is not None and ctx.floors is not None and decision.granted else None
        event = self.gw.outbox.make_event(
            device,
            pres.method,
            decision.credential,
            result or decision.result,  # type: ignore[arg-type]
            decision.reason,
            reader=pres.reader,
            subject=decision.subject,
            latency_ms=None if latency is None else round(latency, 3),
            direction=(ctx.direction if ctx is not None and ctx.direction else None) or pres.direction,
            floors=floors,
        )
        self.gw.record(event)
        metrics = self.gw.metrics
        if metrics is not None:  # counters only; latency of fresh decisions (not alarms, notes, failures)
            metrics.decided(pres.method, event.result, decision.reason, latency if result is None else None)

    def _failed(self, pres: Presentation, device: str, decision: Decision, ctx: DeviceContext) -> None:
        denied = Decision("denied", "device_unavailable", decision.subject, credential=decision.credential)
        self._record(pres, device, denied, ctx, result="denied")  # explicit: no decision latency

    async def actuate(self, device: Device, grant: Grant, on_failure: Callable[[], None]) -> None:
        """Drive the device for a grant. Whatever goes wrong (device offline, a timeout, a bug, a request
        stuck past the bound), the grant is followed by a `device_unavailable` event: a person was let
        in on paper only, and the cloud must know. The bound keeps a wedged bus from holding grants
        (and their memory) forever; the write itself stays bounded by the bus's own timeouts."""
        t_act = time.perf_counter()
        try:
            async with asyncio.timeout(device.actuation_timeout_s()):
                await device.grant(grant)
            log.debug("actuated", device=device.device_id, credential=grant.decision.credential,
                      t_in=grant.t_in, t_act=t_act, t_done=time.perf_counter())  # fmt: skip
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = "timeout" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
            if not isinstance(exc, (TimeoutError, DeviceUnavailable, OSError)):
                log.exception("actuation_bug", device=device.device_id, error=error)
            log.error("actuation_failed", device=device.device_id, error=error)
            on_failure()

    def spawn(self, coro: object) -> None:
        task = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def cancel(self) -> None:
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _mask(pres: Presentation) -> str:
    return mask_credential(pres.kind, pres.value) if pres.kind != "token" else ""


def _log_decision(device: str, pres: Presentation, decision: Decision) -> None:
    log.info(
        "decision",
        device=device,
        reader=pres.reader,
        result=decision.result,
        reason=decision.reason,
        subject=decision.subject,
        credential=decision.credential,
        floors=list(decision.floors) if decision.floors is not None else None,
    )
