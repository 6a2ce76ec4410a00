"""Plain value types shared by readers, the decision engine, actuators and the outbox.

They carry no behaviour and do no I/O, so every stage of the flow
(reader -> presentation -> decision -> actuator -> event) can be tested with plain values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

PresentationKind = Literal["token", "card", "plate"]
# Event "method" values of shared/spec/mqtt.md.
Method = Literal["qr", "nfc", "plate", "remote", "button", "fire", "sensor"]
Result = Literal["granted", "denied", "alarm", "info"]


@dataclass(frozen=True, slots=True)
class Presentation:
    """Something a person showed a reader: a token (QR / phone NFC), a card UID or a plate."""

    kind: PresentationKind
    value: str  # raw token text, upper-hex card UID, or normalised plate
    method: Method  # event method: qr, nfc, plate
    reader: str | None  # reader id from config
    t_mono: float = 0.0  # time.perf_counter() when the last byte arrived (latency accounting)
    confidence: float | None = None  # a plate camera's read confidence, 0-100
    min_confidence: float | None = None  # the reader's bound: a read below it is denied low_confidence
    direction: str | None = None  # what the camera saw (in/out), for the event when the device has none


@dataclass(frozen=True, slots=True)
class Entry:
    """A whitelist entry (card or plate), shape of mqtt.md's Entry."""

    kind: Literal["card", "plate"]
    value: str
    subject: str
    zones: tuple[str, ...]
    floors: tuple[int, ...] | None = None
    valid_from: int | None = None  # unix s ("from")
    valid_until: int | None = None  # unix s ("until")
    windows: tuple[Window, ...] | None = None
    blocked: bool = False


@dataclass(frozen=True, slots=True)
class Window:
    """Weekly window in the site's time zone. ``days`` are ISO weekdays (1 = Monday) on which the
    window *starts*; ``end <= start`` means it runs past midnight into the next day."""

    days: tuple[int, ...]
    start_min: int  # minutes after midnight, 0..1439
    end_min: int  # minutes after midnight, 1..1440


@dataclass(frozen=True, slots=True)
class Decision:
    result: Literal["granted", "denied"]
    reason: str  # "ok" or a reason code of tokens.md / mqtt.md
    subject: str | None = None
    floors: tuple[int, ...] | None = None
    jti: str | None = None  # token id when the presentation was a token that parsed
    credential: str = ""  # masked credential for the event
    alarm: str | None = None  # a grant that also raises an alarm event (soft anti-passback)

    @property
    def granted(self) -> bool:
        return self.result == "granted"


@dataclass(frozen=True, slots=True)
class Event:
    """An access event, shape of mqtt.md's Event. ``id`` is a ULID (sortable, unique)."""

    id: str
    ts: int  # unix ms
    device: str
    reader: str | None
    method: Method
    credential: str
    subject: str | None
    result: Result
    reason: str
    latency_ms: float | None = None
    extra: dict[str, object] = field(default_factory=dict)  # not sent; local diagnostics only
    direction: str | None = None  # barrier and plate events (mqtt.md, optional)
    floors: tuple[int, ...] | None = None  # elevator grants: the floors enabled (mqtt.md, optional)

    def to_wire(self) -> dict[str, object]:
        wire = self._base_wire()
        if self.direction is not None:
            wire["direction"] = self.direction
        if self.floors is not None:
            wire["floors"] = list(self.floors)
        return wire

    def _base_wire(self) -> dict[str, object]:
        return {
            "id": self.id,
            "ts": self.ts,
            "device": self.device,
            "reader": self.reader,
            "method": self.method,
            "credential": self.credential,
            "subject": self.subject,
            "result": self.result,
            "reason": self.reason,
            "latency_ms": self.latency_ms,
        }
