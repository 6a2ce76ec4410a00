"""R/health payload (retained, QoS 0): devices, outbox depth, clock trust, whitelist version."""

from __future__ import annotations

import time

from edge.outbox import Outbox
from edge.ports import GateControl
from edge.store import WhitelistStore


def health_payload(gate: GateControl, outbox: Outbox, store: WhitelistStore) -> dict[str, object]:
    devices: dict[str, dict[str, object]] = {}
    for dev, state in gate.device_health().items():
        err = state.get("error")
        devices[str(dev)] = {"online": bool(state.get("online")), "error": None if err is None else str(err)}
    return {
        "ts": int(time.time() * 1000),
        "devices": devices,
        "outbox": outbox.count(),
        "clock_synced": bool(gate.clock_synced()),
        "whitelist_version": store.version,
    }
