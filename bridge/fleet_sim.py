"""A fleet of simulated gateways speaking the gateway's side of ``shared/spec/mqtt.md``.

Not full gateways: no devices, no local store. Each simulated gateway is its own paho client (own
client id, persistent session, Last Will ``{"online": false}`` retained on ``R/status``), so the
broker sees 1,000 real sessions. Clients are spread over a few shard threads, each driving its
clients' sockets through one epoll selector (paho's external-loop API), because 1,000
``loop_start`` threads would cost more than the gateways themselves.

Per gateway: ``R/status`` (retained) and ``R/sync/request`` after every (re)connect, ``R/events``
batches of unique ULID-style ids with a per-gateway ``seq``, ``R/health`` every 60 s, snapshots
and deltas on ``R/whitelist`` applied to a version counter, ``R/cmd`` answered with
``R/cmd/result`` and a ``remote`` Event. The contract's only ack for events is the broker's PUBACK:
a batch counts as delivered when it arrives; until then paho keeps it and resends it after a
reconnect (clean session off), which is the gateway's outbox in miniature.

    python -m bridge.fleet_sim --gateways 1000 --events-per-s 20000 --seconds 30 --broker 127.0.0.1:1883
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import selectors
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
VERSION = "fleet-sim/1"
SWEEP_S = 0.02  # batch/write sweep period of a shard thread


def ulid(ms: int | None = None) -> str:
    """26-char ULID (48-bit ms time + 80 random bits): unique and time-ordered, like the gateway's."""
    n = ((int(time.time() * 1000) if ms is None else ms) << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join(CROCKFORD[(n >> (5 * i)) & 31] for i in range(25, -1, -1))


def gateway_names(n: int) -> list[str]:
    return [f"gw-{i:05d}" for i in range(n)]


def gateways_config(names: list[str], community_id: int = 1) -> dict[str, Any]:
    """The bridge's ``gateways:`` section for a simulated fleet: one entrance ``door`` each."""
    return {
        gw: {"community_id": community_id,
             "devices": {"door": {"kind": "entrance", "ejyy_id": i + 1, "zone": "door"}}}
        for i, gw in enumerate(names)
    }  # fmt: skip


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


@dataclass
class Stats:
    sent: int = 0  # events published
    acked: int = 0  # events whose message got its PUBACK
    messages: int = 0
    door_logs: int = 0  # events that should become an ejyy entrance log row (granted qr/nfc)
    ack_ms: list[float] = field(default_factory=list)  # per message: publish -> PUBACK
    snapshots: int = 0
    deltas: int = 0
    commands: int = 0
    connects: int = 0
    ids: list[str] = field(default_factory=list)  # every event id sent (only when recording)


class SimGateway:
    def __init__(self, fleet: Fleet, site: str, name: str) -> None:
        self.fleet, self.name = fleet, name
        self.root = f"edge/v1/{site}/{name}"
        self.seq = 0
        self.version = 0
        self.snap: dict[str, Any] = {}  # snapshot id -> {part: n entries}
        self.pending: dict[int, tuple[int, float]] = {}  # mid -> (events, sent monotonic)
        self.connected = False
        self.next_batch = 0.0
        self.carry = 0.0  # fractional events owed
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"sim-{name}", clean_session=False,
                        protocol=paho.MQTTv311)  # fmt: skip
        c.will_set(f"{self.root}/status", _dumps({"online": False}), qos=1, retain=True)
        c.max_inflight_messages_set(100)
        c.max_queued_messages_set(0)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        self.client = c

    # --- callbacks (run in the shard thread) ---------------------------------------------------
    def _on_connect(self, c: paho.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            return
        self.connected = True
        self.fleet.stats.connects += 1
        c.subscribe([(f"{self.root}/whitelist", 1), (f"{self.root}/cmd", 1)])
        status = {"online": True, "version": VERSION, "started_at": self.fleet.started_ms,
                  "whitelist_version": self.version}  # fmt: skip
        c.publish(f"{self.root}/status", _dumps(status), qos=1, retain=True)
        c.publish(f"{self.root}/sync/request", _dumps({"have": self.version}), qos=1)

    def _on_disconnect(self, *_a: Any) -> None:
        self.connected = False

    def _on_publish(self, _c: paho.Client, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        got = self.pending.pop(mid, None)
        if got is not None:
            st = self.fleet.stats
            with self.fleet.lock:
                st.acked += got[0]
                st.ack_ms.append((time.monotonic() - got[1]) * 1000)

    def _on_message(self, c: paho.Client, _u: Any, m: paho.MQTTMessage) -> None:
        if m.topic.endswith("/cmd"):
            self._on_cmd(c, m.payload)
            return
        try:
            body = json.loads(m.payload)
        except ValueError:
            return  # dropped, as the spec says; never stops the gateway
        if not isinstance(body, dict):
            return
        if body.get("type") == "snapshot":
            parts = self.snap.setdefault(str(body.get("id")), {})
            parts[body.get("part")] = len(body.get("entries") or [])
            if len(parts) == body.get("parts"):
                self.version = int(body.get("version") or 0)
                self.snap.clear()
                self.fleet.stats.snapshots += 1
        elif body.get("type") == "delta":
            if body.get("from") == self.version:
                self.version = int(body.get("to") or 0)
                self.fleet.stats.deltas += 1
            else:
                c.publish(f"{self.root}/sync/request", _dumps({"have": self.version}), qos=1)

    def _on_cmd(self, c: paho.Client, token: bytes) -> None:
        """Answer a command (signature not checked: this is a load generator, not a gateway)."""
        try:
            claims = json.loads(base64.urlsafe_b64decode(token.split(b".")[1] + b"=="))
        except (IndexError, ValueError):
            return
        now = int(time.time() * 1000)
        jti = str(claims.get("jti"))
        c.publish(
            f"{self.root}/cmd/result", _dumps({"jti": jti, "ok": True, "error": None, "ts": now}), qos=1
        )
        ev = self._event(now, "remote", jti, claims.get("by"), "granted", str(claims.get("target") or "door"))
        self._publish_events([ev])
        self.fleet.stats.commands += 1

    # --- traffic --------------------------------------------------------------------------------
    def _event(
        self, ts: int, method: str, cred: str, subject: object, result: str, device: str
    ) -> dict[str, Any]:
        self.seq += 1
        return {"id": ulid(ts), "seq": self.seq, "ts": ts, "device": device, "reader": None,
                "method": method, "credential": cred, "subject": subject, "result": result,
                "reason": "ok" if result == "granted" else "unknown_credential", "latency_ms": 3.0}  # fmt: skip

    def _publish_events(self, events: list[dict[str, Any]]) -> None:
        for i in range(0, len(events), 500):  # the spec's 1..500 events a message
            chunk = events[i : i + 500]
            info = self.client.publish(f"{self.root}/events", _dumps({"events": chunk}), qos=1)
            self.pending[info.mid] = (len(chunk), time.monotonic())
            st = self.fleet.stats
            with self.fleet.lock:
                st.sent += len(chunk)
                st.messages += 1
                st.door_logs += sum(e["result"] == "granted" and e["method"] in ("qr", "nfc") for e in chunk)
                if self.fleet.record:
                    st.ids += [e["id"] for e in chunk]

    def tick(self, now: float, per_gw_rate: float, batch_s: float) -> None:
        if not self.connected or now < self.next_batch:
            return
        self.next_batch = now + batch_s
        self.carry += per_gw_rate * batch_s
        n, self.carry = int(self.carry), self.carry - int(self.carry)
        if n == 0:
            return
        ts = int(time.time() * 1000)
        rnd = self.fleet.rnd
        evs = []
        for _ in range(n):
            user = rnd.randint(1, self.fleet.residents)
            if rnd.random() < 0.85:
                method, cred = ("qr", ulid(ts)) if rnd.random() < 0.6 else ("nfc", f"****{user:04X}"[-8:])
                evs.append(self._event(ts, method, cred, f"resident:{user}", "granted", "door"))
            else:
                evs.append(self._event(ts, "nfc", "****DEAD", None, "denied", "door"))
        self._publish_events(evs)

    def health(self) -> None:
        if self.connected:
            body = {"ts": int(time.time() * 1000), "devices": {"door": {"online": True, "error": None}},
                    "outbox": len(self.pending), "clock_synced": True, "whitelist_version": self.version}  # fmt: skip
            self.client.publish(f"{self.root}/health", _dumps(body), qos=0, retain=True)


class Fleet:
    """``gateways`` simulated gateways over ``shards`` threads; ``events_per_s`` across the fleet."""

    def __init__(self, host: str, port: int, site: str, names: list[str], *, events_per_s: float = 0.0,
                 batch_s: float = 0.5, shards: int = 4, residents: int = 100, record: bool = False) -> None:  # fmt: skip
        self.host, self.port = host, port
        self.events_per_s, self.batch_s = events_per_s, batch_s
        self.residents, self.record = residents, record
        self.stats = Stats()
        self.rnd = random.Random()
        self.started_ms = int(time.time() * 1000)
        self.gws = [SimGateway(self, site, n) for n in names]
        self.shards = [self.gws[i::shards] for i in range(min(shards, len(names)))]
        self.lock = threading.Lock()  # stats are shared by the shard threads
        self.stop_ev = threading.Event()
        self.producing = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self, connect_timeout: float = 60.0) -> Fleet:
        for shard in self.shards:
            t = threading.Thread(target=self._run_shard, args=(shard,), daemon=True)
            t.start()
            self.threads.append(t)
        deadline = time.monotonic() + connect_timeout
        while time.monotonic() < deadline and not all(g.connected for g in self.gws):
            time.sleep(0.05)
        if not all(g.connected for g in self.gws):
            raise RuntimeError(f"{sum(not g.connected for g in self.gws)} gateways did not connect")
        return self

    def produce(self, on: bool = True) -> None:
        (self.producing.set if on else self.producing.clear)()

    def unacked(self) -> int:
        return sum(n for g in self.gws for n, _t in list(g.pending.values()))

    def drain(self, timeout: float) -> bool:
        """Stop producing and wait until every batch has its PUBACK."""
        self.produce(False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.unacked() == 0:
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self.produce(False)
        self.stop_ev.set()
        for t in self.threads:
            t.join(10)

    def _connect(self, g: SimGateway, sel: selectors.BaseSelector) -> None:
        try:
            g.client.connect(self.host, self.port, keepalive=60)
        except OSError:
            return
        sel.register(g.client.socket(), selectors.EVENT_READ, g)

    def _run_shard(self, shard: list[SimGateway]) -> None:
        sel = selectors.DefaultSelector()
        offset = self.rnd.random() * self.batch_s
        for i, g in enumerate(shard):
            g.next_batch = time.monotonic() + offset + self.batch_s * i / max(len(shard), 1)
            self._connect(g, sel)
        per_gw = self.events_per_s / max(len(self.gws), 1)
        last_misc = last_health = time.monotonic()
        last_sweep = 0.0
        while not self.stop_ev.is_set():
            now = time.monotonic()
            if now - last_sweep >= SWEEP_S:  # not every wake-up: a sweep costs ~1 µs per gateway
                last_sweep = now
                if self.producing.is_set():
                    for g in shard:
                        g.tick(now, per_gw, self.batch_s)
                for g in shard:  # what callbacks queued (publish outside callbacks writes at once)
                    if g.client.want_write():
                        g.client.loop_write()
            for key, _ev in sel.select(timeout=SWEEP_S / 2):
                gw: SimGateway = key.data
                if gw.client.loop_read(100) != paho.MQTT_ERR_SUCCESS:
                    self._drop(gw, sel)
                elif gw.client.want_write():
                    gw.client.loop_write()
            if now - last_misc >= 1.0:
                last_misc = now
                for g in shard:
                    if g.client.socket() is None:
                        self._drop(g, sel)
                        self._connect(g, sel)
                    else:
                        g.client.loop_misc()
                if now - last_health >= 60.0:
                    last_health = now
                    for g in shard:
                        g.health()
        for g in shard:
            g.client.publish(f"{g.root}/status", _dumps({"online": False}), qos=1, retain=True)
            g.client.loop_write()
            g.client.disconnect()
        sel.close()

    @staticmethod
    def _drop(g: SimGateway, sel: selectors.BaseSelector) -> None:
        g.connected = False
        for key in list(sel.get_map().values()):
            if key.data is g:
                sel.unregister(key.fileobj)


def percentile(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fleet_sim", description=__doc__.split("\n")[0])
    ap.add_argument("--gateways", type=int, default=1000)
    ap.add_argument("--events-per-s", type=float, default=1000.0, help="across the whole fleet")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--broker", default="127.0.0.1:1883", help="host:port")
    ap.add_argument("--site", default="site-a")
    ap.add_argument("--batch-s", type=float, default=0.5, help="each gateway sends a batch this often")
    ap.add_argument("--shards", type=int, default=4)
    args = ap.parse_args(argv)
    host, _, port = args.broker.rpartition(":")
    fleet = Fleet(host or "127.0.0.1", int(port), args.site, gateway_names(args.gateways),
                  events_per_s=args.events_per_s, batch_s=args.batch_s, shards=args.shards)  # fmt: skip
    t0 = time.monotonic()
    fleet.start()
    connected_s = time.monotonic() - t0
    fleet.produce()
    time.sleep(args.seconds)
    drained = fleet.drain(30.0)
    fleet.close()
    st = fleet.stats
    print(_dumps({"gateways": args.gateways, "connect_s": round(connected_s, 2), "sent": st.sent,
                  "acked": st.acked, "messages": st.messages, "drained": drained,
                  "offered_events_per_s": round(st.sent / args.seconds), "snapshots": st.snapshots,
                  "puback_p50_ms": round(percentile(st.ack_ms, 50), 2),
                  "puback_p99_ms": round(percentile(st.ack_ms, 99), 2)}))  # fmt: skip
    return 0 if drained else 1


if __name__ == "__main__":
    sys.exit(main())
