"""MQTT payloads fuzzed into the real CloudLink's on-message dispatch, on every subscribed topic.

The link runs as in the daemon (its whitelist worker, the command handler, the replay store, the
whitelist store and the outbox, all real, on disk); only the socket is replaced by a loopback
Communicator that records what the link publishes. An input is done when the link acks it (the
PUBACK a broker would get), so each one is handled to its end before the next.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from typing import Any

from edge.cloud.link import CloudLink
from edge.outbox import Outbox
from edge.sim.cloud_client import command_claims
from edge.store import WhitelistStore
from tests.support.cloud import GW, SITE, RecordingGate, make_config
from tests.support.fuzz_mutate import dump_json, mutate_bytes, mutate_json
from tests.support.fuzz_targets import COMMAND_ERRORS, Keys, Outcome, checked, need, workdir

MqttInput = tuple[str, bytes]  # topic suffix (whitelist | cmd | anything else), payload
ROOT_TOPIC = f"edge/v1/{SITE}/{GW}"


class Loopback:
    """A Communicator that is always connected and records publishes (the broker is not under test)."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []
        self._mid = 0
        self._closed: asyncio.Future[str] | None = None

    connected = True
    last_error = None
    max_inflight = 65535

    async def connect(self) -> bool:
        return True

    def subscribe(self, topics: list[tuple[str, int]]) -> None:
        self.topics = [t for t, _ in topics]

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int | None:
        self.published.append((topic, payload))
        self._mid += 1
        return self._mid

    async def wait_closed(self) -> str:
        self._closed = asyncio.get_running_loop().create_future()
        return await self._closed

    async def close(self, *, clean: bool) -> None:
        if self._closed is not None and not self._closed.done():
            self._closed.set_result("closed")


def _entry(i: int) -> dict[str, Any]:
    if i % 2:
        return {
            "kind": "plate",
            "value": f"京A{i % 100000:05d}",
            "subject": f"resident:{i}",
            "zones": ["car-north"],
        }
    return {"kind": "card", "value": f"{i:08X}", "subject": f"resident:{i}", "zones": ["north-gate"],
            "floors": [3], "from": None, "until": None,
            "windows": [{"days": [1, 2, 3, 4, 5], "start": "07:00", "end": "22:00"}], "blocked": False}  # fmt: skip


class MqttInputs:
    """Fuzzed payloads for the gateway's subscribed topics, from valid Deltas, Snapshot parts and
    signed commands; ``version`` says the gateway's whitelist version, so some Deltas apply."""

    def __init__(self, keys: Keys, version: Callable[[], int]) -> None:
        self.keys = keys
        self.version = version
        self.extra = [f"edge/v1/{SITE}/other-gw/cmd", ROOT_TOPIC, f"{ROOT_TOPIC}/whitelist/x", "#", ""]

    def _whitelist_doc(self, rng: random.Random) -> dict[str, Any]:
        v = self.version()
        k = rng.randrange(1000)
        ops: list[dict[str, Any]] = [
            {"op": "put", "entry": _entry(k)}, {"op": "del", "kind": "card", "value": f"{k:08X}"},
            {"op": "revoke", "jti": f"fz-{k}", "until": int(time.time()) + 600},
            {"op": "key", "kid": f"other-{k % 3}", "key": self.keys.signer.public_b64 if k % 2 else None},
        ]  # fmt: skip
        if rng.random() < 0.6:
            return {"type": "delta", "from": v, "to": v + 1, "ops": rng.sample(ops, rng.randrange(1, 5))}
        parts = rng.choice((1, 1, 2))
        return {"type": "snapshot", "id": f"s-{rng.randrange(4)}", "version": v + 1, "part": rng.randrange(1, parts + 1),
                "parts": parts, "entries": [_entry(k + i) for i in range(rng.randrange(4))]}  # fmt: skip

    def _command(self, rng: random.Random) -> dict[str, Any]:
        act, target, extra = rng.choice([
            ("open", "north-gate", {"by": "staff:7"}), ("hold_open", "south-gate", {}), ("lock", "north-gate", {}),
            ("normal", "north-gate", {}), ("elevator_call", "lift-1", {"floor": 3}),
            ("elevator_grant", "lift-1", {"floors": [3, 5], "seconds": 30}), ("sync", "gateway", {}),
        ])  # fmt: skip
        return command_claims(SITE, GW, act, target, **extra)

    def generate(self, rng: random.Random) -> MqttInput:
        r = rng.random()
        if r < 0.03:
            return rng.choice(self.extra), mutate_bytes(b'{"type":"delta"}', rng)
        if r < 0.6:
            doc = self._whitelist_doc(rng)
            if rng.random() < 0.1:
                return "whitelist", dump_json(doc, rng)
            body = dump_json(mutate_json(doc, rng), rng)
            return "whitelist", body if rng.random() < 0.8 else mutate_bytes(body, rng)
        claims = self._command(rng)
        if rng.random() < 0.6:
            claims = mutate_json(claims, rng) if rng.random() < 0.85 else claims
            try:
                token = self.keys.mint(claims) if isinstance(claims, dict) else json.dumps(claims)
            except (TypeError, ValueError, UnicodeEncodeError):
                token = self.keys.mint(self._command(rng))
            return "cmd", token.encode()
        return "cmd", mutate_bytes(self.keys.mint(claims).encode(), rng)


class MqttFamily:
    name = "mqtt"

    def __init__(self) -> None:
        self.keys = Keys()
        self.dir = workdir()
        cfg = make_config(self.dir, 1, {self.keys.signer.kid: self.keys.signer.public_b64})
        self.loop = asyncio.new_event_loop()
        self.store = WhitelistStore(cfg.gateway.data_dir / "whitelist.db")
        self.outbox = Outbox(cfg.gateway.data_dir / "outbox.db")
        self.gate = RecordingGate(self.outbox)
        self.t = Loopback()
        self.link = CloudLink(
            cfg, self.store, self.outbox, self.gate, version="fuzz", transport=lambda _l: self.t
        )
        self._task = self.loop.create_task(self.link.run())
        self.loop.run_until_complete(self._until(lambda: getattr(self.t, "topics", None)))
        self.topics = [t.removeprefix(ROOT_TOPIC + "/") for t in self.t.topics]
        self.inputs = MqttInputs(self.keys, lambda: self.store.version)
        self.extra = self.inputs.extra

    def generate(self, rng: random.Random) -> MqttInput:
        return self.inputs.generate(rng)

    def close(self) -> None:
        """Stop the link and its loop (tests; the script's workers just exit)."""
        self.loop.run_until_complete(self.link.stop())
        self._task.cancel()
        self.loop.run_until_complete(asyncio.gather(self._task, return_exceptions=True))
        self.outbox.close()
        self.store.close()
        self.loop.close()

    async def _until(self, pred: Any, timeout: float = 10.0) -> None:
        t_end = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > t_end:
                raise TimeoutError("the link did not subscribe")
            await asyncio.sleep(0.01)

    # --- run -----------------------------------------------------------------------------------
    def run(self, inp: MqttInput) -> Outcome:
        return checked(lambda: self.loop.run_until_complete(self._run(inp)))

    async def _run(self, inp: MqttInput) -> Outcome:
        topic, payload = inp
        full = topic if topic in self.extra else f"{ROOT_TOPIC}/{topic}"
        sync = self.link._sync
        if len(self.t.published) > 10_000:
            self.t.published.clear()
        applied, dropped, before = sync.applied, sync.dropped, len(self.t.published)
        acked = asyncio.get_running_loop().create_future()

        def ack() -> None:
            need(not acked.done(), "acked twice")
            acked.set_result(None)

        self.link.on_message(full, payload, ack)
        await asyncio.wait_for(acked, 30)
        need(not self._task.done(), "the cloud link stopped")
        if topic not in ("whitelist", "cmd") or full != f"{ROOT_TOPIC}/{topic}":
            return "other", "unexpected topic, acked"
        new = self.t.published[before:]
        if topic == "whitelist":
            if sync.applied > applied:
                return "accepted", "applied"
            if sync.dropped > dropped:
                return "rejected", "dropped"
            if any(t.endswith("/sync/request") for t, _ in new):
                return "rejected", "version gap: sync requested"
            return "accepted", "snapshot part staged"
        results = [json.loads(p) for t, p in new if t.endswith("/cmd/result")]
        need(len(results) == 1, f"{len(results)} results for one command")
        res = results[0]
        need(res["ok"] is (res["error"] is None), f"inconsistent result {res}")
        if res["ok"]:
            return "accepted", "ok"
        need(res["error"] in COMMAND_ERRORS, f"unknown command error {res['error']!r}")
        return "rejected", str(res["error"])
