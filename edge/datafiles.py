"""Data directory checks and opening the stores, with recovery of a damaged database."""

from __future__ import annotations

from edge.config import Config
from edge.outbox import Outbox
from edge.store import WhitelistStore


def open_stores(cfg: Config) -> tuple[WhitelistStore, Outbox]:
    cfg.gateway.data_dir.mkdir(parents=True, exist_ok=True)
    store = WhitelistStore(cfg.gateway.data_dir / "whitelist.db")
    outbox = Outbox(
        cfg.gateway.data_dir / "outbox.db",
        max_events=cfg.outbox.max_events,
        flush_interval_s=cfg.outbox.flush_interval_s,
    )
    return store, outbox
