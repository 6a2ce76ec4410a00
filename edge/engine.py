"""The decision engine: pure functions, values in, decision out, no I/O and no clock reads.

The app gathers the facts (token verification result, whitelist entry, revocation, use count,
clock state, door mode) and hands them here, so every rule is tested with plain values.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from edge.legacy_ejyy import LegacyClaims, LegacyDenied
from edge.model import Decision, Entry, Presentation, Window
from edge.tokens import TokenClaims, TokenDenied, check_token_facts


@dataclass(frozen=True, slots=True)
class DeviceContext:
    """What the engine knows of the device a presentation was made at.

    ``floors``: the floors an elevator car serves (None: not an elevator); a grant enables the
    credential's floors within them. ``direction`` (in/out) and ``passback`` (none/soft/hard) with
    ``last_direction`` (the credential's last passage in the barrier's group, looked up by the app) are
    for barriers."""

    id: str
    zone: str
    mode: str = "normal"  # normal | hold_open | lock
    online: bool = True
    floors: tuple[int, ...] | None = None
    direction: str | None = None
    passback: str = "none"
    last_direction: str | None = None


@dataclass(frozen=True, slots=True)
class Clock:
    now: float  # unix seconds
    tz: ZoneInfo
    synced: bool = True
    require_sync: bool = True


def _mask_jti(jti: str | None) -> str:
    return jti or ""


def decide_token(
    pres: Presentation,
    verified: TokenClaims | TokenDenied,
    device: DeviceContext,
    *,
    revoked: bool,
    used: int,
) -> Decision:
    """Finish a token decision: steps 8-10 of tokens.md on top of ``verified`` (steps 1-7)."""
    if isinstance(verified, TokenDenied):
        return Decision("denied", verified.reason, jti=verified.jti, credential=_mask_jti(verified.jti))
    cred = verified.jti
    reason = check_token_facts(verified, device.zone, revoked, used)
    if reason is not None:
        return Decision("denied", reason, subject=verified.sub, jti=verified.jti, credential=cred)
    if device.mode == "lock" or not device.online:
        return Decision(
            "denied", "device_unavailable", subject=verified.sub, jti=verified.jti, credential=cred
        )
    return _device_rules(device, verified.floors, verified.sub, cred, jti=verified.jti)


def _device_rules(
    device: DeviceContext,
    floors: tuple[int, ...] | None,
    sub: str,
    cred: str,
    *,
    jti: str | None = None,
) -> Decision:
    """The last rules, which depend on the device kind: elevator floors, then anti-passback."""
    if device.floors is not None:
        # A credential without floors selects none (tokens.md: absent = none): the lift stays as it is.
        allowed = set(device.floors).intersection(floors or ())
        if not allowed:
            return Decision("denied", "no_floors", subject=sub, jti=jti, credential=cred)
        floors = tuple(sorted(allowed))
    alarm = None
    if device.passback != "none" and device.direction is not None and device.last_direction == device.direction:
        if device.passback == "hard":
            return Decision("denied", "passback", subject=sub, jti=jti, credential=cred)
        alarm = "passback"  # soft: let them through, and tell the cloud
    return Decision("granted", "ok", subject=sub, floors=floors, jti=jti, credential=cred, alarm=alarm)


def in_windows(windows: tuple[Window, ...], local: datetime) -> bool:
    """Whether ``local`` (site time) falls in any weekly window; overnight windows belong to their start day."""
    minute = local.hour * 60 + local.minute
    today = local.isoweekday()
    yesterday = 7 if today == 1 else today - 1
    for w in windows:
        if w.end_min > w.start_min:
            if today in w.days and w.start_min <= minute < w.end_min:
                return True
        else:  # runs past midnight: [start, 24:00) on a listed day, [00:00, end) on the day after
            if today in w.days and minute >= w.start_min:
                return True
            if yesterday in w.days and minute < w.end_min:
                return True
    return False


def decide_entry(
    pres: Presentation, entry: Entry | None, device: DeviceContext, clock: Clock, masked: str
) -> Decision:
    """Decide a card or plate against its whitelist entry (None = not on the list)."""
    if pres.confidence is not None and pres.min_confidence is not None and pres.confidence < pres.min_confidence:
        return Decision("denied", "low_confidence", credential=masked)  # a misread must open nothing
    if entry is None:
        return Decision("denied", "unknown_credential", credential=masked)
    sub = entry.subject
    if entry.blocked:
        return Decision("denied", "blocked", subject=sub, credential=masked)
    time_bound = entry.valid_from is not None or entry.valid_until is not None or bool(entry.windows)
    if time_bound and not clock.synced and clock.require_sync:
        return Decision("denied", "clock_unsynced", subject=sub, credential=masked)
    if entry.valid_from is not None and clock.now < entry.valid_from:
        return Decision("denied", "not_yet_valid", subject=sub, credential=masked)
    if entry.valid_until is not None and clock.now > entry.valid_until:
        return Decision("denied", "expired", subject=sub, credential=masked)
    if device.zone not in entry.zones:
        return Decision("denied", "zone_denied", subject=sub, credential=masked)
    if entry.windows and not in_windows(entry.windows, datetime.fromtimestamp(clock.now, clock.tz)):
        return Decision("denied", "outside_schedule", subject=sub, credential=masked)
    if device.mode == "lock" or not device.online:
        return Decision("denied", "device_unavailable", subject=sub, credential=masked)
    return _device_rules(device, entry.floors, sub, masked)


def decide_legacy(
    pres: Presentation,
    verified: LegacyClaims | LegacyDenied,
    entry: Entry | None,
    device: DeviceContext,
    clock: Clock,
) -> Decision:
    """A legacy ejyy code: decrypting proves nothing past the key, so a valid one is then decided
    exactly as a card against its whitelist entry (``verified.value``); no entry, no grant."""
    if isinstance(verified, LegacyDenied):
        return Decision("denied", verified.reason, credential=verified.credential)
    return decide_entry(pres, entry, device, clock, verified.credential)
