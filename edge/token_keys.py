"""Ed25519 keys as config files carry them (base64url) and the minting side of the token format.

The gateway only verifies (edge/tokens.py); minting is for the cloud simulator, the demo, the bridge
and tests, kept here so the verifier stays about verifying."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")


def b64url_encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def public_key_from_b64(b64: str) -> Ed25519PublicKey:
    """base64url (padding optional, as config files may carry it) -> key, or ValueError."""
    if not isinstance(b64, str) or not _SEGMENT.fullmatch(b64.rstrip("=")):
        raise ValueError("not base64url")
    try:
        raw = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, this is {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def public_key_b64(private_key: Ed25519PrivateKey) -> str:
    raw = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return b64url_encode(raw)


def generate_keypair() -> tuple[Ed25519PrivateKey, str]:
    """A fresh signing key and its public key as unpadded base64url (what config `trust.keys` holds)."""
    key = Ed25519PrivateKey.generate()
    return key, public_key_b64(key)


def mint_token(private_key: Ed25519PrivateKey, kid: str, claims: dict[str, Any]) -> str:
    """Sign ``claims`` as a compact JWS with header {"alg": "EdDSA", "kid": kid} (tokens and commands)."""
    header = json.dumps({"alg": "EdDSA", "kid": kid}, separators=(",", ":")).encode()
    body = json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    signing_input = f"{b64url_encode(header)}.{b64url_encode(body)}".encode("ascii")
    return f"{signing_input.decode('ascii')}.{b64url_encode(private_key.sign(signing_input))}"


__all__ = ["b64url_encode", "generate_keypair", "mint_token", "public_key_b64", "public_key_from_b64"]
