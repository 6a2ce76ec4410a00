"""DEMO ONLY signing key for the simulator's demo codes.

It is public (it is in this repository), so anyone can mint codes with it: a real gateway's config
must never trust kid ``demo-only-2026``. Real gateways hold public keys only; the cloud keeps the
private keys (see docs/tokens.md).
"""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

DEMO_KID = "demo-only-2026"
DEMO_PUBLIC_KEY = "uhUrDTUtdJ_H_VGKqxbA1rsuWdxmlGIG0ymcyLB4U6o"
_DEMO_PRIVATE_KEY = "Jc2a0UDL2M_dxVH8nrNAjKSnzr2jFF84fT4CJTjVx3M"


def demo_private_key() -> Ed25519PrivateKey:
    raw = base64.urlsafe_b64decode(_DEMO_PRIVATE_KEY + "=")
    return Ed25519PrivateKey.from_private_bytes(raw)
