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

import structlog

from edge.model import Method, Presentation

log = structlog.get_logger(__name__)

StatusCallback = Callable[[str, bool, "str | None"], None]


@dataclass
class ReaderEnv:
    """What the app hands every reader."""

    present: Callable[[Presentation], object]
    reject: Callable[[str, str, str], None]  # (reader id, reason code, detail)
    note: Callable[[Presentation, str], None] = lambda pres, reason: None  # an `info` event, no decision
    extra: dict[str, Any] = field(default_factory=dict)  # shared services (e.g. the LPR listener)


class Reader(ABC):
    """Base of every reader type: it owns the (online, error) state and its listeners."""

    rate_limit_exempt: bool = False  # plate cameras: a queue of cars is no brute-force attack

    def __init__(self, reader_id: str) -> None:
        self.reader_id = reader_id
        self._status: tuple[bool, str | None] | None = None
        self._status_cbs: list[StatusCallback] = []

    @property
    @abstractmethod
    def online(self) -> bool: ...

    @property
    def method(self) -> Method:
        """The event method of its presentations and rejects (qr, nfc, plate)."""
        return "qr"

    def on_status(self, cb: StatusCallback) -> None:
        """Register ``cb(reader_id, online, error)``; called on every change of (online, error)."""
        self._status_cbs.append(cb)

    def _status_changed(self, online: bool, error: str | None) -> bool:
        """Record (online, error) and tell the listeners; False (nothing told) when it is unchanged.
        Runs on the loop thread; a listener's failure never reaches the reader."""
        if self._status == (online, error):
            return False
        self._status = (online, error)
        for cb in list(self._status_cbs):
            try:
                cb(self.reader_id, online, error)
            except Exception as exc:
                log.error("reader_status_callback_failed", reader=self.reader_id, error=str(exc))
        return True

    @abstractmethod
    async def start(self) -> None:
        """Open the device, or report it offline and keep trying: a missing reader never stops start-up."""

    @abstractmethod
    async def stop(self) -> None: ...
