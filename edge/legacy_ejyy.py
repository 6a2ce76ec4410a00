"""Legacy e家宜业 (ejyy) access codes: opt-in, and forgeable by anyone who holds ejyy's key.

ejyy's scheme, from github.com/chowa/ejyy (api-server/src, owner-mp/src):
- ``utils/crypto.ts`` encrypt/decrypt: ``createCipheriv('aes-256-cbc', config.crypto.key,
  config.crypto.iv)``; key and iv are plain config strings taken as UTF-8 bytes (32 and 16), Node's
  default PKCS#7 padding, ciphertext as lower-case hex. No MAC: the key is the only secret.
- ``utils/access.ts`` encrypt: plaintext ``{id}#{building_id}#{type}#{Date.now()}``; ``type`` from
  ``constant/enter_access.ts``: 1 SELF_ACCESS_CODE (id = wechat_mp_user_id), 2 VISTOR_ACCESS_CODE
  (id = ejyy_vistor.id); the last field is the minting time in unix ms (13 digits). Codes carry no
  expiry: they are minted afresh each time the phone loads the page (``mp/controller/access/list.ts``,
  ``mp/controller/vistor/detail.ts`` / ``use.ts``).
- QR text: visitors show the hex as is (``pages/vistor/detail.js``, ``use.js``); residents show
  ``uid + Date.now().toString(16)`` (``pages/access/card.js``), i.e. 11 more hex digits of the
  drawing time. That suffix is outside the ciphertext, so anyone can change it: it is dropped unread.

Safe readings chosen here (docs/security.md):
- age: a code is accepted within ``max_age_s`` (+ leeway) of its minting time, never from the
  future, and never while the clock is untrusted. This only limits replays of photographed codes:
  whoever holds the key mints fresh ones at will;
- decryption alone never grants: the whitelist must hold the entry ``whitelist_value(type, id,
  building_id)`` (kind ``card``), put there by the bridge for that person and building, with the
  zones, validity (a visitor's ``expire``), windows and ``blocked`` of any entry. Deleting that entry
  retires the person's legacy codes, forged ones included: migration goes phone by phone;
- refusals: text that is not hex of a plausible length is no legacy code (the JWS verifier's
  ``malformed`` stands); hex that does not decrypt with the key to exactly ejyy's plaintext is
  ``bad_signature`` (CBC without a MAC cannot tell tampering from a foreign key).
Pure: no I/O, no clock reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

RESIDENT, VISITOR = 1, 2
KINDS = {RESIDENT: "resident", VISITOR: "visitor"}
KEY_BYTES, IV_BYTES = 32, 16
MAX_TEXT = 256  # the longest plaintext (two 19-digit ids) is 4 blocks = 128 hex digits, plus the suffix
DRAW_SUFFIX = 11  # len(Date.now().toString(16)) from 2004 to 2527
_BLOCK_HEX = 32
_HEX_TEXT = re.compile(r"[0-9a-fA-F]+")
_PLAIN = re.compile(rb"([1-9][0-9]{0,18})#([1-9][0-9]{0,18})#([12])#([0-9]{13})")
_VALUE_PREFIX = "EE"  # whitelist key: "EE" + type + id (19 digits) + building (19 digits) = 41 hex digits


@dataclass(frozen=True, slots=True)
class LegacyPolicy:
    """ejyy's key and iv (as bytes) and how old a code may be."""

    key: bytes
    iv: bytes
    max_age_s: int = 300
    leeway_s: int = 5

    def __repr__(self) -> str:  # the key is the whole secret: never in a log line
        return f"LegacyPolicy(max_age_s={self.max_age_s}, leeway_s={self.leeway_s})"

    @classmethod
    def from_config(cls, key: str, iv: str, max_age_s: int = 300, leeway_s: int = 5) -> LegacyPolicy:
        """Key and iv exactly as in ejyy's config (``crypto.key``/``crypto.iv``); ValueError if Node
        would refuse them too (aes-256-cbc needs 32 and 16 bytes)."""
        k, i = key_bytes(key, KEY_BYTES, "key"), key_bytes(iv, IV_BYTES, "iv")
        return cls(k, i, max_age_s, leeway_s)


@dataclass(frozen=True, slots=True)
class LegacyClaims:
    id: int
    building_id: int
    type: int  # RESIDENT or VISITOR
    ms: int  # minting time, unix ms

    @property
    def kind(self) -> str:
        return KINDS[self.type]

    @property
    def value(self) -> str:
        """The whitelist card value that must be present for this code to be granted."""
        return whitelist_value(self.type, self.id, self.building_id)

    @property
    def entry_key(self) -> tuple[str, str]:
        """(kind, value) of the whitelist entry this code is decided against: the bridge lists each
        legacy-code holder as a card entry."""
        return "card", self.value

    @property
    def credential(self) -> str:
        """The event's credential: says which legacy code it was, like a jti (no secret in it)."""
        return f"ejyy:{self.type}:{self.id}:{self.building_id}:{self.ms}"


@dataclass(frozen=True, slots=True)
class LegacyDenied:
    reason: str
    detail: str = ""
    credential: str = ""


def key_bytes(text: str, size: int, what: str) -> bytes:
    """A Node string key: its UTF-8 bytes, which must be ``size`` long."""
    raw = text.encode("utf-8")
    if len(raw) != size:
        raise ValueError(f"ejyy crypto.{what} must be {size} bytes (UTF-8), got {len(raw)}")
    return raw


def whitelist_value(type_: int, id_: int, building_id: int) -> str:
    """Card value of the entry that admits legacy codes of (type, id, building): 41 hex digits, which
    no card reader yields (normalize_card: an even 4..20 digits), so no card can present it. The
    bridge puts one per resident building binding and per visitor, subject resident:/visitor:<id>."""
    if type_ not in KINDS or not 0 < id_ < 10**19 or not 0 < building_id < 10**19:
        raise ValueError("type must be 1 or 2, ids 1..10**19-1")
    return f"{_VALUE_PREFIX}{type_}{id_:019d}{building_id:019d}"


def candidate(text: str) -> bool:
    """Whether ``text`` has the shape of an ejyy QR (hex ciphertext, with or without the suffix)."""
    return (
        isinstance(text, str)
        and _BLOCK_HEX <= len(text) <= MAX_TEXT
        and len(text) % _BLOCK_HEX in (0, DRAW_SUFFIX)
        and _HEX_TEXT.fullmatch(text) is not None
    )


def _decrypt(policy: LegacyPolicy, data: bytes) -> bytes | None:
    dec = Cipher(algorithms.AES(policy.key), modes.CBC(policy.iv)).decryptor()
    unpad = padding.PKCS7(128).unpadder()
    try:
        return unpad.update(dec.update(data) + dec.finalize()) + unpad.finalize()
    except ValueError:  # bad padding: a foreign key, tampering or noise
        return None


def verify_legacy(
    text: str, policy: LegacyPolicy, now: float, *, clock_trusted: bool = True
) -> LegacyClaims | LegacyDenied:
    """Decrypt, parse and age-check one QR text. A grant still needs the whitelist entry."""
    if not candidate(text):
        return LegacyDenied("malformed", "not an ejyy code")
    cut = len(text) - len(text) % _BLOCK_HEX  # drop the resident page's unauthenticated draw time
    plain = _decrypt(policy, bytes.fromhex(text[:cut]))
    m = None if plain is None else _PLAIN.fullmatch(plain)
    if m is None:
        return LegacyDenied("bad_signature", "does not decrypt to an ejyy code with this key")
    claims = LegacyClaims(int(m[1]), int(m[2]), int(m[3]), int(m[4]))
    cred = claims.credential
    if not clock_trusted:  # every legacy code is time-bound through max_age_s
        return LegacyDenied("clock_unsynced", credential=cred)
    minted = claims.ms / 1000
    if minted > now + policy.leeway_s:
        return LegacyDenied("not_yet_valid", f"minted at {claims.ms} ms", cred)
    if now - minted > policy.max_age_s + policy.leeway_s:
        return LegacyDenied("expired", f"minted at {claims.ms} ms, over {policy.max_age_s} s ago", cred)
    return claims


def encrypt_text(key: bytes, iv: bytes, plaintext: str) -> str:
    """ejyy's ``crypto.encrypt``: aes-256-cbc, PKCS#7, lower-case hex."""
    pad = padding.PKCS7(128).padder()
    data = pad.update(plaintext.encode("utf-8")) + pad.finalize()
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return (enc.update(data) + enc.finalize()).hex()


def mint_legacy(policy: LegacyPolicy, id_: int, building_id: int, type_: int, ms: int) -> str:
    """ejyy's ``access.encrypt`` (tests, migration tooling): the uid a phone would show."""
    return encrypt_text(policy.key, policy.iv, f"{id_}#{building_id}#{type_}#{ms}")
