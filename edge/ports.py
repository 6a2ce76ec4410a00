"""Interfaces between the core and its edges (cloud link, CLI, simulators).

The cloud link only sees these: it never reaches into drivers, so a transport can be swapped
(MQTT today) without touching the decision flow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from edge.model import Event


class GateControl(Protocol):
    """What the running gateway offers to remote commands and health reporting."""

    def targets(self) -> set[str]:
        """Ids a command may name: every device (door, barrier, elevator...) and service (fire)."""
        ...

    def supports(self, target: str, action: str) -> bool:
        """Whether ``target`` can do ``action`` (e.g. a door cannot do elevator_call)."""
        ...

    async def act(self, target: str, action: str, args: Mapping[str, Any]) -> str | None:
        """Run a remote action (open, hold_open, lock, normal, elevator_call, elevator_grant) on a
        device or service. ``args``: ``floor``, ``floors``, ``seconds``, ``by``. None or an error code."""
        ...

    def action_facts(self, target: str, action: str, args: Mapping[str, Any], error: str | None) -> dict[str, Any]:
        """The optional event fields (``direction``, ``floors``) the action's event carries."""
        ...

    def device_health(self) -> dict[str, dict[str, object]]:
        """device id -> {"online": bool, "error": str | None}."""
        ...

    def clock_synced(self) -> bool: ...

    def record(self, event: Event) -> None:
        """Append an event durably to the outbox (returns after the row is committed)."""
        ...

    def on_device_change(self, callback: Callable[[str, bool, str | None], None]) -> None:
        """Register ``callback(device_id, online, error)`` for device online/offline transitions."""
        ...

    def reload_trust(self) -> None:
        """Rebuild the trusted key set after a `key` op changed it in the store."""
        ...
