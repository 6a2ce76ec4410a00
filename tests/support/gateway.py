"""Helpers to run a real gateway in tests: config files, signing keys, free ports, token minting."""

from __future__ import annotations

import base64
import socket
import time
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

SITE = "c42"
KID = "test-2026"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Signer:
    """The cloud's side of trust in tests: a private key and a way to mint codes."""

    def __init__(self, kid: str = KID) -> None:
        self.kid = kid
        self.key = Ed25519PrivateKey.generate()
        raw = self.key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.public_b64 = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def code(
        self,
        jti: str,
        *,
        kind: str = "visitor",
        sub: str = "visitor:1",
        ttl: int = 3600,
        zones: list[str] | None = None,
        **extra: Any,
    ) -> str:
        from edge.tokens import mint_token

        now = int(time.time())
        claims = {
            "iss": SITE,
            "sub": sub,
            "kind": kind,
            "jti": jti,
            "nbf": now - 5,
            "exp": now + ttl,
            "zones": zones or ["north-gate"],
            **extra,
        }
        return mint_token(self.key, self.kid, claims)


def gateway_config(
    tmp_path: Path,
    *,
    signer: Signer,
    bus: dict[str, Any],
    readers: dict[str, dict[str, Any]],
    door: dict[str, Any] | None = None,
    mqtt: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a gateway YAML with one door `north-gate` on bus `b1` opened by ``readers``."""
    cfg: dict[str, Any] = {
        "gateway": {
            "site": SITE,
            "id": "gw-test",
            "timezone": "Asia/Shanghai",
            "data_dir": str(tmp_path / "data"),
        },
        "trust": {"keys": {signer.kid: signer.public_b64}, "require_clock_sync": False},
        "buses": {"b1": bus},
        "doors": {
            "north-gate": {
                "bus": "b1",
                "device_id": 1,
                "zone": "north-gate",
                "lock_coil": 0,
                "pulse_ms": 300,
                "pulse_mode": "flash",
                "readers": list(readers),
                **(door or {}),
            }
        },
        "readers": readers,
    }
    if mqtt:
        cfg["mqtt"] = mqtt
    for k, v in (extra or {}).items():
        cfg[k] = v
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path
