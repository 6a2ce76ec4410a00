"""The one small interface every reader (serial scanner, camera, NFC, plate camera) implements.

A reader turns what a person shows into :class:`edge.model.Presentation`s and hands them to
``env.present``; what it cannot make sense of goes to ``env.reject`` (summarised per reader, so noise
cannot flood the outbox). Readers register their config model by ``type`` (drivers/registry.py).
Blocking libraries run in threads that hand results to the loop; nothing here may stall it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edge.model import Method, Presentation

StatusCallback = Callable[[str, bool, "str | None"], None]


@dataclass
class ReaderEnv:
    """What the app hands every reader."""

    present: Callable[[Presentation], object]
    reject: Callable[[str, str, str], None]  # (reader id, reason code, detail)
    note: Callable[[Presentation, str], None] = lambda pres, reason: None  # an `info` event, no decision
    extra: dict[str, Any] = field(default_factory=dict)  # shared services (e.g. the LPR listener)


class Reader(ABC):
    """Base of every reader type."""

    reader_id: str
    rate_limit_exempt: bool = False  # plate cameras: a queue of cars is no brute-force attack

    @property
    @abstractmethod
    def online(self) -> bool: ...

    @property
    def method(self) -> Method:
        """The event method of its presentations and rejects (qr, nfc, plate)."""
        return "qr"

    @abstractmethod
    def on_status(self, cb: StatusCallback) -> None:
        """Register ``cb(reader_id, online, error)``; called on every change of (online, error)."""

    @abstractmethod
    async def start(self) -> None:
        """Open the device, or report it offline and keep trying: a missing reader never stops start-up."""

    @abstractmethod
    async def stop(self) -> None: ...
