"""Transport-neutral interface of the cloud link (like Frigate's frigate/comms): the link logic
(status, sync, events, commands, health) talks to a Communicator, so MQTT can be swapped or faked.

A Communicator connects once per ``connect()`` call (the link owns the retry policy) and reports
everything back on the asyncio loop through a ``LinkHandler``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class LinkHandler(Protocol):
    """Called on the event-loop thread, in the order the transport saw things."""

    def on_message(self, topic: str, payload: bytes, ack: Callable[[], None]) -> None:
        """An inbound message; call ``ack()`` once it is handled (or dropped)."""
        ...

    def on_published(self, mid: int, ok: bool, reason: str) -> None:
        """The broker acknowledged message ``mid`` (PUBACK); ``ok`` False when it refused it."""
        ...

    def on_lost(self, reason: str) -> None:
        """The connection ended (not called for a failed ``connect()``)."""
        ...


class Communicator(Protocol):
    @property
    def connected(self) -> bool: ...

    @property
    def last_error(self) -> str | None:
        """Why the last connection attempt failed or the last connection ended, in plain words."""
        ...

    @property
    def max_inflight(self) -> int:
        """How many QoS 1 messages the peer accepts unacknowledged (its Receive Maximum)."""
        ...

    async def connect(self) -> bool:
        """One attempt; True once the broker accepted (CONNACK success)."""
        ...

    def subscribe(self, topics: list[tuple[str, int]]) -> None: ...

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int | None:
        """Queue a message; returns its id for QoS 1 (see on_published), None when not connected."""
        ...

    async def wait_closed(self) -> str:
        """Until the current connection ends; returns the reason."""
        ...

    async def close(self, *, clean: bool) -> None:
        """End the connection; ``clean`` sends DISCONNECT (no Last Will), otherwise just drops it."""
        ...
