"""Event ids: ULIDs, so ids sort by creation time and the cloud can de-duplicate by them."""

from __future__ import annotations

from ulid import ULID


def new_event_id() -> str:
    """A fresh 26-character Crockford base32 ULID (48-bit ms timestamp + 80 random bits)."""
    return str(ULID())
