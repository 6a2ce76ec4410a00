"""The trusted key set: config keys overlaid by the cloud's `key` ops (a None value drops a key).

One function for codes (edge/app.py) and remote commands (edge/cloud/link.py): the same keys sign both;
``build_legacy`` for the opt-in ejyy AES codes (edge/flow.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge.legacy_ejyy import LegacyPolicy
from edge.tokens import TrustPolicy

if TYPE_CHECKING:
    from edge.config import Config
    from edge.store import WhitelistStore


def build_policy(cfg: Config, store: WhitelistStore) -> TrustPolicy:
    keys = dict(cfg.trust.keys)
    for kid, key in store.key_overlay().items():
        if key is None:
            keys.pop(kid, None)
        else:
            keys[kid] = key
    return TrustPolicy.build(
        cfg.gateway.site, keys, cfg.trust.leeway_s, cfg.trust.max_lifetime_s.model_dump()
    )


def build_legacy(cfg: Config) -> LegacyPolicy | None:
    """ejyy's legacy AES codes only with an explicit ``trust.legacy_ejyy.enabled: true``; else None,
    and such codes stay ``malformed`` exactly as without the section."""
    section = cfg.trust.legacy_ejyy
    if section is None or not section.enabled:
        return None
    return LegacyPolicy.from_config(section.key, section.iv, section.max_age_s, cfg.trust.leeway_s)
