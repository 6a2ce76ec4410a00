"""The property platform's part in `edge demo`, played with the DEMO key over a local broker.

It answers the gateway's sync request with the demo whitelist as a snapshot, sends one signed
remote open, and checks that every decision the gateway made reached the cloud as an event.
The blocking CloudClient runs in worker threads so the gateway's loop never waits on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.config import Config
from edge.ids import new_event_id
from edge.model import Event
from edge.sim.cloud_client import CloudClient, Received, command_claims, load_entries
from edge.sim.demo_key import DEMO_KID, demo_private_key
from edge.tokens import mint_token


class DemoCloud:
    def __init__(self, cfg: Config, say: Callable[[str], None] = print) -> None:
        assert cfg.mqtt is not None
        self.cfg = cfg
        self.say = say
        self.client = CloudClient(
            cfg.mqtt.host,
            cfg.mqtt.port,
            cfg.gateway.site,
            cfg.gateway.id,
            client_id=f"demo-cloud-{new_event_id()}",
            persistent=False,  # a fresh session: only what this run's gateway sends
        )
        self._live: Callable[[str], None] | None = None

    async def connect(self) -> None:
        await asyncio.to_thread(self.client.connect)
        self.client.listener = self._on_message

    async def close(self) -> None:
        await asyncio.to_thread(self.client.close)

    def _on_message(self, r: Received) -> None:
        """paho thread: in the interactive part, show each event as the cloud receives it."""
        live = self._live
        if live is None or not r.topic.endswith("/events"):
            return
        for e in r.json().get("events", []):
            who = f" {e['subject']}" if e.get("subject") else ""
            live(f"  [cloud] event received: {e['device']} {e['result']}{who} ({e['reason']})")

    def show_live_events(self, loop: asyncio.AbstractEventLoop) -> None:
        self._live = lambda line: loop.call_soon_threadsafe(self.say, line)

    async def serve_whitelist(self, entries_file: Path, timeout: float = 20.0) -> int | None:
        """Wait for R/sync/request, answer with a snapshot one version above the gateway's.
        Returns the version sent, or None when the gateway never asked."""
        c = self.client
        asked = await asyncio.to_thread(c.wait_for, lambda _rs: bool(c.on("sync/request")), timeout)
        if not asked:
            self.say(f"  [cloud] no sync request from {self.cfg.gateway.id} within {timeout:g} s")
            return None
        have = int(c.on("sync/request")[0].json().get("have", 0))
        version = have + 1  # a newer list than the gateway's: it must take it
        entries = load_entries(entries_file)
        self.say(f"  [cloud] gateway {self.cfg.gateway.id} came online, asks for the whitelist (has v{have})")
        await asyncio.to_thread(c.send_snapshot, entries, version)
        self.say(f"  [cloud] sent the whitelist as snapshot v{version} ({len(entries)} entries)")
        return version

    async def remote_open(self, target: str, by: str, timeout: float = 15.0) -> dict[str, Any] | None:
        """A signed `open` command (DEMO key); returns the gateway's R/cmd/result, None if none came."""
        cfg = self.cfg
        claims = command_claims(cfg.gateway.site, cfg.gateway.id, "open", target, by=by)
        await asyncio.to_thread(self.client.send_command, mint_token(demo_private_key(), DEMO_KID, claims))
        jti = claims["jti"]
        self.say(f"  [cloud] sent a signed remote open for {target} (command {jti})")

        def result() -> dict[str, Any] | None:
            return next((r for r in self.client.results() if r.get("jti") == jti), None)

        await asyncio.to_thread(self.client.wait_for, lambda _rs: result() is not None, timeout)
        return result()

    async def check_events(self, decisions: list[Event], timeout: float = 20.0) -> bool:
        """Every gateway decision arrived, same result and reason; prints the count."""
        want = {e.id: e for e in decisions}

        def got() -> dict[str, dict[str, Any]]:
            return {e["id"]: e for e in self.client.events()}

        await asyncio.to_thread(self.client.wait_for, lambda _rs: want.keys() <= got().keys(), timeout)
        received = got()
        mine = [received[i] for i in want if i in received]
        backlog = len(received) - len(mine)
        extra = f" (+{backlog} older ones from the gateway's outbox)" if backlog else ""
        self.say(f"  [cloud] received {len(mine)} events from this run{extra}")
        missing = [i for i in want if i not in received]
        wrong = [e["id"] for e in mine if (e["device"], e["result"], e["reason"]) != _decision(want[e["id"]])]
        if missing or wrong:
            self.say(f"  [cloud] MISMATCH: {len(missing)} missing, {len(wrong)} different from the gateway's")
            return False
        self.say(f"  [cloud] all {len(want)} match the gateway's decisions")
        return True


def _decision(e: Event) -> tuple[str, str, str]:
    return (e.device, e.result, e.reason)
