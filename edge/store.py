"""Whitelist store (SQLite, WAL): entries, revocations, per-jti use counts, trusted-key overlay, version.

API CONTRACT (stub: helper D implements; signatures are fixed, more methods are fine).
Lookups are synchronous and run on the event-loop thread (they must take microseconds).
Bulk writes (snapshots) run in a worker thread on their own connection, so decisions keep
reading the old list until the final swap, which is one short transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from edge.model import Entry


class InvalidEntry(ValueError):
    """A whitelist Entry / Op that does not match mqtt.md's shape (message says which field)."""


def entry_from_wire(obj: Mapping[str, Any]) -> Entry:
    """Validate and convert an mqtt.md Entry dict (card values upper hex, plates upper, no spaces)."""
    raise NotImplementedError


def entry_to_wire(entry: Entry) -> dict[str, Any]:
    raise NotImplementedError


class WhitelistStore:
    def __init__(self, path: Path) -> None:
        raise NotImplementedError

    # --- lookups (sync, hot path) ---
    @property
    def version(self) -> int:
        """Local whitelist version (0 = empty / never synced)."""
        raise NotImplementedError

    def lookup(self, kind: str, value: str) -> Entry | None:
        raise NotImplementedError

    def is_revoked(self, jti: str, now: float) -> bool:
        raise NotImplementedError

    def uses(self, jti: str) -> int:
        raise NotImplementedError

    def record_use(self, jti: str, expires: int) -> int:
        """Count one grant of ``jti`` (kept until ``expires``); returns the new count. Durable."""
        raise NotImplementedError

    def key_overlay(self) -> dict[str, str | None]:
        """kid -> base64url key (trusted by a `key` op) or None (dropped by a `key` op)."""
        raise NotImplementedError

    def count(self) -> int:
        raise NotImplementedError

    # --- writes ---
    def import_entries(self, entries: Iterable[Entry], version: int | None = None) -> int:
        """Replace the whole list atomically (CLI import); returns rows. Sync, any thread."""
        raise NotImplementedError

    async def apply_delta(self, delta: Mapping[str, Any]) -> bool:
        """Apply an mqtt.md Delta in one transaction iff delta['from'] == version. Returns False on a
        version gap (nothing changed). Raises InvalidEntry on a malformed delta (nothing changed)."""
        raise NotImplementedError

    async def add_snapshot_part(self, part: Mapping[str, Any]) -> bool:
        """Stage one Snapshot part. Parts of an older id are dropped when a newer id starts; a part of
        an older id than the one being staged/applied is ignored. When all parts of an id are in, the
        list is swapped in one transaction and the version set. Returns True when a swap happened."""
        raise NotImplementedError

    def purge(self, now: float) -> None:
        """Drop revocations and use counts past their expiry."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError
