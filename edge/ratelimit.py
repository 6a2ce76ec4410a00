"""Per-reader rate limiting of denials: a brute-force guard.

Someone trying card numbers or forged codes at one reader collects denials. After ``denials`` of them
within ``window_s``, every presentation at that reader is denied `rate_limited` for ``cooldown_s`` —
valid ones too, which is the point: the attacker learns nothing during the cooldown. Only decisions that
judged a credential count (unknown, blocked, forged, expired...), not a device being unavailable, and not
scanner noise (rejected lines never reach a decision). Readers whose ``rate_limit_exempt`` is true (plate
cameras: a queue of cars is no attack) are never limited. Plain code, clock values passed in.
"""

from __future__ import annotations

from collections import deque

NOT_COUNTED = frozenset({"device_unavailable", "rate_limited", "low_confidence", "internal_error", "clock_unsynced"})


class RateLimiter:
    def __init__(self, denials: int, window_s: float, cooldown_s: float) -> None:
        self.denials = denials
        self.window_s = window_s
        self.cooldown_s = cooldown_s
        self._recent: dict[str, deque[float]] = {}
        self._until: dict[str, float] = {}

    def blocked(self, reader: str, now: float) -> bool:
        """Whether presentations at ``reader`` are refused at clock time ``now``."""
        until = self._until.get(reader)
        if until is None:
            return False
        if now < until:
            return True
        del self._until[reader]
        return False

    def denied(self, reader: str, reason: str, now: float) -> bool:
        """Count a denial; True when it starts a cooldown."""
        if self.denials <= 0 or reason in NOT_COUNTED:
            return False
        q = self._recent.setdefault(reader, deque())
        q.append(now)
        while q and now - q[0] > self.window_s:
            q.popleft()
        if len(q) >= self.denials:
            q.clear()
            self._until[reader] = now + self.cooldown_s
            return True
        return False
