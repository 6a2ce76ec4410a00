"""Helpers for cloud-link tests: config, a small real GateControl backed by a real Outbox, link runner.

The gateway side is a recording GateControl (the cloud link is what is under test); events go
through a real Outbox on disk and every assertion is made on MQTT messages or rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

from edge.cloud.link import CloudLink
from edge.config import Config
from edge.ids import new_event_id
from edge.model import Event
from edge.outbox import Outbox
from edge.store import WhitelistStore
from edge.tokens import generate_keypair

SITE = "c42"
GW = "gw-test"
KID = "cloud-1"
DOORS = ("north-gate", "south-gate")
LIFT = "lift-1"


def make_config(data_dir: Path, port: int, trust_keys: dict[str, str], **mqtt: Any) -> Config:
    m: dict[str, Any] = {"host": "127.0.0.1", "port": port, "keepalive_s": 2, "connect_timeout_s": 3.0}
    m["reconnect_max_s"] = 1.0
    m.update(mqtt)
    return Config.model_validate(
        {
            "gateway": {"site": SITE, "id": GW, "data_dir": str(data_dir)},
            "trust": {"keys": trust_keys},
            "mqtt": m,
        }
    )


class RecordingGate:
    """GateControl: doors that record remote opens and modes; events into a real Outbox."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.opens: list[tuple[str, str | None]] = []
        self.modes: list[tuple[str, str]] = []
        self.lift: list[tuple[str, str, dict[str, Any]]] = []
        self.trust_reloads = 0
        self.health: dict[str, dict[str, object]] = {d: {"online": True, "error": None} for d in DOORS}
        self._cbs: list[Callable[[str, bool, str | None], None]] = []
        self.open_delay = 0.0
        self.synced = True

    def targets(self) -> set[str]:
        return {*DOORS, LIFT}

    def supports(self, target: str, action: str) -> bool:
        if target == LIFT:
            return action in ("elevator_call", "elevator_grant")
        return action in ("open", "hold_open", "lock", "normal")

    def action_facts(self, target: str, action: str, args: Mapping[str, Any], error: str | None) -> dict[str, Any]:
        return {}

    async def act(self, target: str, action: str, args: Mapping[str, Any]) -> str | None:
        if action == "open":
            self.opens.append((target, args.get("by")))
            if self.open_delay:
                await asyncio.sleep(self.open_delay)
        elif action in ("hold_open", "lock", "normal"):
            self.modes.append((target, action))
        else:
            self.lift.append((target, action, dict(args)))
        return None

    def device_health(self) -> dict[str, dict[str, object]]:
        return self.health

    def clock_synced(self) -> bool:
        return self.synced

    def record(self, event: Event) -> None:
        self.outbox.append(event)

    def on_device_change(self, callback: Callable[[str, bool, str | None], None]) -> None:
        self._cbs.append(callback)

    def set_device(self, device: str, online: bool, error: str | None) -> None:
        self.health[device] = {"online": online, "error": error}
        for cb in self._cbs:
            cb(device, online, error)

    def reload_trust(self) -> None:
        self.trust_reloads += 1


def access_event(n: int, device: str = "north-gate") -> Event:
    return Event(
        id=new_event_id(),
        ts=int(time.time() * 1000),
        device=device,
        reader="qr-north",
        method="qr",
        credential=f"seq-{n}",
        subject=f"resident:{n}",
        result="granted",
        reason="ok",
        latency_ms=1.0,
    )


class Signer:
    def __init__(self) -> None:
        self.key, self.public = generate_keypair()
        self.kid = KID


class LinkHarness:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        d = cfg.gateway.data_dir
        d.mkdir(parents=True, exist_ok=True)
        self.store = WhitelistStore(d / "whitelist.db")
        self.outbox = Outbox(d / "outbox.db")
        self.gate = RecordingGate(self.outbox)
        self.link = CloudLink(cfg, self.store, self.outbox, self.gate, version="test-1")
        self.task: asyncio.Task[None] | None = None

    async def start(self, wait_connected: bool = True) -> LinkHarness:
        self.task = asyncio.create_task(self.link.run())
        if wait_connected:
            assert await until(lambda: self.link.connected, 15), self.link.last_error
        return self

    async def stop(self) -> None:
        await self.link.stop()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        self.outbox.close()
        self.store.close()


@contextlib.asynccontextmanager
async def running_link(cfg: Config, wait_connected: bool = True) -> AsyncIterator[LinkHarness]:
    h = LinkHarness(cfg)
    try:
        yield await h.start(wait_connected)
    finally:
        await h.stop()


async def until(pred: Callable[[], bool], within: float = 10.0, step: float = 0.02) -> bool:
    """Poll ``pred`` on the loop (the link runs on the same loop) until true or timeout."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(step)
    return bool(pred())
