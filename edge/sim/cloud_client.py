"""The cloud's side of mqtt.md, as a small blocking client: for the `edge cloud` CLI, tests and benches.

It is a plain paho client with a persistent session (so events published while it was away are
delivered when it returns), collecting what the gateway sends and publishing what the cloud sends.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.cloud.sync import snapshot_parts
from edge.ids import new_event_id
from edge.tokens import mint_token

SNAPSHOT_PART = 10_000  # entries per snapshot part (~1.5 MB)


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    t: float  # time.perf_counter() on arrival

    def json(self) -> Any:
        return json.loads(self.payload)


class CloudClient:
    """Subscribes to ``edge/v1/{site}/{gateway}/#`` (gateway ``+`` for all) and records arrivals."""

    def __init__(
        self,
        host: str,
        port: int,
        site: str,
        gateway: str,
        *,
        client_id: str | None = None,
        persistent: bool = True,
        username: str | None = None,
        password: str | None = None,
        ca: Path | None = None,
        cert: Path | None = None,
        key: Path | None = None,
        on_message: Callable[[Received], None] | None = None,
    ) -> None:
        self.root = f"edge/v1/{site}/{gateway}"
        self.host, self.port = host, port
        self.persistent = persistent
        self.received: list[Received] = []
        self._cond = threading.Condition()
        self.listener = on_message  # called on paho's thread for every message
        self._connected = threading.Event()
        self.c = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"cloud-{new_event_id()}",
            protocol=paho.MQTTv5,
        )
        self.c.max_inflight_messages_set(0)
        self.c.max_queued_messages_set(0)
        if username is not None:
            self.c.username_pw_set(username, password)
        if ca is not None or cert is not None:
            self.c.tls_set(
                ca_certs=str(ca) if ca else None, certfile=cert and str(cert), keyfile=key and str(key)
            )
        self.c.on_connect = self._connect_cb
        self.c.on_message = self._message_cb
        self.c.on_disconnect = lambda *_a: self._connected.clear()

    # --- connection -------------------------------------------------------------------------
    def _connect_cb(self, c: paho.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if not rc.is_failure:
            sock = c.socket()
            if sock is not None:  # no Nagle: commands go out at once (see edge.cloud.mqtt._no_delay)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c.subscribe(f"{self.root}/#", qos=1)
            self._connected.set()

    def _message_cb(self, _c: paho.Client, _u: Any, m: paho.MQTTMessage) -> None:
        r = Received(m.topic, m.payload, bool(m.retain), time.perf_counter())
        with self._cond:
            self.received.append(r)
            self._cond.notify_all()
        if self.listener is not None:
            self.listener(r)

    def connect(self, timeout: float = 10.0) -> CloudClient:
        props = Properties(PacketTypes.CONNECT)
        if self.persistent:
            props.SessionExpiryInterval = 3600
        self.c.connect(self.host, self.port, 5, clean_start=not self.persistent, properties=props)
        self.c.loop_start()
        if not self._connected.wait(timeout):
            raise TimeoutError(f"cloud client: no connection to {self.host}:{self.port}")
        time.sleep(0.1)  # SUBACK
        return self

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()

    def __enter__(self) -> CloudClient:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- what the gateway sent ----------------------------------------------------------------
    def on(self, sub: str) -> list[Received]:
        with self._cond:
            return [
                r for r in self.received if r.topic == f"{self.root}/{sub}" or r.topic.endswith("/" + sub)
            ]

    def wait_for(self, pred: Callable[[list[Received]], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not pred(self.received):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.2))
        return True

    def events(self) -> Iterator[dict[str, Any]]:
        for r in self.on("events"):
            yield from json.loads(r.payload)["events"]

    def results(self) -> list[dict[str, Any]]:
        return [r.json() for r in self.on("cmd/result")]

    # --- what the cloud sends -----------------------------------------------------------------
    def publish(
        self,
        sub: str,
        payload: bytes | str | dict[str, Any],
        qos: int = 1,
        wait: bool = True,
        root: str | None = None,
    ) -> None:
        """Publish on ``{root}/{sub}``; ``root`` defaults to this client's gateway."""
        if isinstance(payload, dict):
            payload = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        info = self.c.publish(f"{root or self.root}/{sub}", payload, qos=qos)
        if wait and qos > 0:
            info.wait_for_publish(10)

    def send_delta(self, frm: int, to: int, ops: list[dict[str, Any]]) -> None:
        self.publish("whitelist", {"type": "delta", "from": frm, "to": to, "ops": ops})

    def snapshot_parts(
        self,
        entries: list[dict[str, Any]],
        version: int,
        snap_id: str | None = None,
        part_size: int = SNAPSHOT_PART,
    ) -> list[dict[str, Any]]:
        return snapshot_parts(entries, version, snap_id or new_event_id(), part_size)

    def send_snapshot(
        self,
        entries: list[dict[str, Any]],
        version: int,
        part_size: int = SNAPSHOT_PART,
        root: str | None = None,
    ) -> int:
        parts = self.snapshot_parts(entries, version, part_size=part_size)
        for p in parts:
            self.publish("whitelist", p, root=root)
        return len(parts)

    def send_command(self, token: str) -> None:
        self.publish("cmd", token)


def command_claims(
    site: str, gateway: str, act: str, target: str, *, ttl: int = 30, now: int | None = None, **extra: Any
) -> dict[str, Any]:
    now = int(time.time()) if now is None else now
    claims: dict[str, Any] = {
        "iss": site,
        "aud": gateway,
        "jti": f"cmd-{new_event_id()}",
        "iat": now,
        "exp": now + ttl,
        "act": act,
        "target": target,
    }
    claims.update({k: v for k, v in extra.items() if v is not None})
    return claims


def mint_command(
    key: Ed25519PrivateKey, kid: str, site: str, gateway: str, act: str, target: str, **kw: Any
) -> str:
    return mint_token(key, kid, command_claims(site, gateway, act, target, **kw))


def load_entries(path: Path) -> list[dict[str, Any]]:
    """A JSON list of Entries, or NDJSON (one Entry per line)."""
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        data = json.loads(text)
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of entries")
        return data
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def iter_chunks(items: Iterable[Any], n: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for it in items:
        chunk.append(it)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
