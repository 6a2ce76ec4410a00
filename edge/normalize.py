"""Credential normalisation: one canonical spelling per card UID / plate, and masks for events.

Readers, the CLI and the whitelist must agree byte for byte on a credential's spelling, or a
listed card is "unknown". The canonical forms are those of shared/spec/mqtt.md: cards are
upper-case hex UIDs without separators, plates are upper case without spaces or separators.
Pure functions, no I/O.
"""

from __future__ import annotations

import unicodedata
from typing import Literal

_HEX = frozenset("0123456789ABCDEF")
_CARD_SEPARATORS = str.maketrans("", "", ":- ")
# Removed from plates (after NFKC, which already maps full-width forms and U+3000 to ASCII): whitespace,
# dots and middle dots (·, ・, •, ‧, ∙, ･), and every dash a keyboard or a camera's font offers.
_PLATE_SEPARATORS = str.maketrans("", "", " \t\r\n\x0b\x0c-.·・•‧∙･‐‑‒–—―−")
_MAX_CARD = 2**80  # 10-byte UIDs (the longest ISO 14443 UID) fit; anything larger is not a card


class BadCredential(ValueError):
    """A credential that cannot be normalised. ``reason`` is the event reason code.

    Messages never contain the credential itself (they end up in logs)."""

    def __init__(self, detail: str, reason: str = "malformed") -> None:
        super().__init__(detail)
        self.reason = reason


def normalize_card(text: str, fmt: Literal["hex", "decimal"]) -> str:
    """Card number as read or typed -> upper-case hex UID without separators.

    ``fmt`` is never guessed: '12345678' is valid in both formats with different meanings.
    hex: leading zeros are part of the UID and kept; 4..20 digits, even (whole bytes).
    decimal: value < 2**80, rendered as hex zero-padded to at least 8 digits and an even length
    (a reader printing the 4-byte UID 0x0000ABCD as decimal 43981 maps to 0000ABCD).
    """
    if not isinstance(text, str):
        raise BadCredential("card number is not text")
    s = text.strip().translate(_CARD_SEPARATORS)
    if not s:
        raise BadCredential("empty card number")
    if fmt == "hex":
        s = s.upper()
        if not _HEX.issuperset(s):
            raise BadCredential("card number has non-hex characters")
        if not 4 <= len(s) <= 20 or len(s) % 2:
            raise BadCredential(f"hex card number must be an even 4..20 digits, got {len(s)}")
        return s
    if fmt == "decimal":
        if not (s.isascii() and s.isdigit()):
            raise BadCredential("decimal card number has non-digit characters")
        if len(s) > 25:  # cheap bound before int(): 2**80 has 25 digits
            raise BadCredential("decimal card number too large")
        n = int(s)
        if n >= _MAX_CARD:
            raise BadCredential("decimal card number too large (>= 2**80)")
        h = f"{n:08X}"
        return h if len(h) % 2 == 0 else "0" + h
    raise BadCredential(f"unknown card format {fmt!r}")


def normalize_plate(text: str) -> str:
    """Plate as read or typed -> upper case without spaces or separators; province characters kept.

    NFKC first, so full-width letters/digits typed on a Chinese IME ('京Ａ１２３４５') match the
    ASCII spelling the whitelist uses. Only letters and digits may remain (as the store requires).
    Lengths are not pinned to the 7 (京A12345) and 8 (new-energy 京AD12345) characters of civil
    plates: police, embassy and cross-border plates (京A1234警, 使014578, 粤Z1234港) must match too.
    """
    if not isinstance(text, str):
        raise BadCredential("plate is not text")
    s = unicodedata.normalize("NFKC", text).translate(_PLATE_SEPARATORS).upper()
    if not 2 <= len(s) <= 12:
        raise BadCredential(f"plate must be 2..12 characters, got {len(s)}")
    if not s.isalnum():
        raise BadCredential("plate may only contain letters and digits")
    return s


def mask_credential(kind: str, value: str) -> str:
    """What an event may carry about a credential: never a full card UID.

    card: '****' + the last 4 hex digits (fewer for short UIDs: at most half is shown);
    plate: first character + '***' + last 2 (only the first for plates of 3 or fewer);
    token: the caller passes the jti, returned unchanged (a jti is not a secret).
    Unknown kinds mask everything.
    """
    if not value:
        return ""
    if kind == "card":
        return "****" + value[-min(4, len(value) // 2) :] if len(value) >= 2 else "****"
    if kind == "plate":
        return value[0] + "***" + (value[-2:] if len(value) > 3 else "")
    if kind == "token":
        return value
    return "****"
