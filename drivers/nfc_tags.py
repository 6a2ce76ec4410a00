"""What an NFC reader makes of a sensed target or an activated tag. Pure functions on nfcpy's values.

Kept apart from drivers/nfc.py (threads, status, retries) so the rules that decide what a card *is*
are read and tested on their own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from edge.normalize import BadCredential, normalize_card

TOKEN_PARAM = "t"  # a URI record holds its token in this query parameter: https://x/y?t=<token>
_MAX_TOKEN = 4096


@dataclass(frozen=True, slots=True)
class Sensed:
    """A target found by a sense cycle: its key (technology + UID, for presence), the upper-hex UID,
    and whether nfcpy should activate it as a tag to read NDEF."""

    key: str
    uid: str
    activatable: bool


def sensed(target: Any) -> Sensed | None:
    """A RemoteTarget -> Sensed, or None for what is not a card (peer-to-peer devices, Type 1/B).

    ISO 14443-A: the UID is the anticollision answer (``sdd_res``, 4/7/10 bytes), so a MIFARE Classic
    (SAK bit 0x08 without ISO-DEP 0x20), which nfcpy cannot read as a tag, is decided from it and never
    activated. FeliCa: the UID is the IDm (sensf_res[1:9]); 01FE... is NFC-DEP (a phone in P2P).
    """
    brty = str(getattr(target, "brty", "") or "")
    if brty.endswith("A") and target.sdd_res and target.sel_res:
        sak = target.sel_res[0]
        if sak & 0x40 and not sak & 0x20:
            return None  # NFC-DEP only
        uid = _hex(target.sdd_res)
        if uid is None:
            return None
        classic = bool(sak & 0x08) and not sak & 0x20
        return Sensed("A:" + uid, uid, activatable=not classic)
    if brty.endswith("F") and target.sensf_res and len(target.sensf_res) >= 17:
        idm = bytes(target.sensf_res[1:9])
        if idm[:2] == b"\x01\xfe":
            return None
        uid = _hex(idm)
        return None if uid is None else Sensed("F:" + uid, uid, activatable=True)
    return None


def _hex(raw: bytes | bytearray) -> str | None:
    try:
        return normalize_card(bytes(raw).hex(), "hex")
    except BadCredential:
        return None


def token_from_records(records: Iterable[Any]) -> str | None:
    """The token an NDEF message carries, or None: the first text record's text, or the first URI
    record's ``t`` query parameter. A URI without ``t`` is no token (the card is decided by its UID)."""
    for record in records:
        rtype = getattr(record, "type", "")
        if rtype == "urn:nfc:wkt:T":
            text = str(getattr(record, "text", "")).strip()
        elif rtype == "urn:nfc:wkt:U":
            text = token_from_uri(str(getattr(record, "iri", "") or getattr(record, "uri", "")))
        else:
            continue
        if text and len(text) <= _MAX_TOKEN:
            return text
    return None


def token_from_uri(uri: str) -> str:
    """``https://x/y?t=<token>`` -> token ('' when there is none)."""
    try:
        values = parse_qs(urlsplit(uri).query).get(TOKEN_PARAM, [])
    except ValueError:
        return ""
    return values[0].strip() if values else ""
