"""`edge-bridge run`: the MQTT side. One paho client, three worker threads, each with its own
database connection (PyMySQL connections are not thread-safe):

- ingest: ``R/events`` from the share group, drained in batches of up to ``batch_max`` messages
  and written in one transaction; PUBACKs are sent (manual ack) only after COMMIT, so a bridge
  killed mid-batch gets the messages again (its persistent session, same client id) and the
  event-id table makes the second write a no-op;
- control: ``R/sync/request`` and ``R/cmd/result`` (shared), ``R/status`` and ``R/health``
  (not shared: every instance applies them, idempotently, and gets the retained ones);
- poller: whitelist deltas per gateway and ejyy remote-open rows.

Instances are stateless apart from the database: run as many as the event rate needs, each with
its own stable ``mqtt.client_id`` and the same ``share_group``.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
import pymysql
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bridge import commands, status, whitelist
from bridge.config import BridgeConfig
from bridge.db import connect, is_retryable, now_ms, transaction
from bridge.events import write_batch
from edge.cloud.sync import snapshot_parts

log = logging.getLogger("bridge")
SHARED = ("events", "sync/request", "cmd/result")
UNSHARED = ("status", "health")


@dataclass
class Msg:
    topic: str
    payload: bytes
    mid: int
    qos: int


class Bridge:
    def __init__(self, cfg: BridgeConfig) -> None:
        self.cfg = cfg
        self.signer = commands.Signer(cfg.signing_key)
        self.stop = threading.Event()
        self.events_q: queue.Queue[Msg] = queue.Queue()
        self.control_q: queue.Queue[Msg] = queue.Queue()
        self.written = 0  # events newly written (for logs and tests)
        self.client_id = cfg.mqtt.client_id or f"edge-bridge-{uuid.uuid4().hex[:8]}"
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=paho.MQTTv5)
        c.manual_ack_set(True)
        c.max_inflight_messages_set(0)
        c.max_queued_messages_set(0)
        if cfg.mqtt.username is not None:
            c.username_pw_set(cfg.mqtt.username, cfg.mqtt.password)
        if cfg.mqtt.ca is not None:
            c.tls_set(ca_certs=str(cfg.mqtt.ca))
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        self.client = c
        self.threads: list[threading.Thread] = []

    # --- mqtt ----------------------------------------------------------------------------------
    def _on_connect(self, c: paho.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            log.warning("mqtt connect refused: %s", rc)
            return
        group = self.cfg.mqtt.share_group
        subs = [(f"$share/{group}/edge/v1/+/+/{t}", 1) for t in SHARED] + [
            (f"edge/v1/+/+/{t}", 1) for t in UNSHARED
        ]
        c.subscribe(subs)
        log.info("mqtt connected as %s, share group %s", self.client_id, group)

    def _on_message(self, _c: paho.Client, _u: Any, m: paho.MQTTMessage) -> None:
        msg = Msg(m.topic, m.payload, m.mid, m.qos)
        (self.events_q if m.topic.endswith("/events") else self.control_q).put(msg)

    def publish(self, gateway: str, sub: str, payload: dict[str, Any] | str) -> None:
        body = (
            payload
            if isinstance(payload, str)
            else json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        )
        self.client.publish(f"{self.cfg.root(gateway)}/{sub}", body, qos=1)

    def _ack(self, m: Msg) -> None:
        if m.qos > 0:
            self.client.ack(m.mid, m.qos)

    # --- workers ----------------------------------------------------------------------------------
    def _db(self) -> Any:
        while not self.stop.is_set():
            try:
                return connect(self.cfg.db)
            except pymysql.err.MySQLError as exc:
                log.warning("database unreachable (%s); retrying", exc)
                self.stop.wait(1.0)
        return None

    def _with_db(self, con: Any, fn: Any) -> Any:
        """Run fn(con) until it succeeds; reconnect on connection errors. Returns (con, result)."""
        while not self.stop.is_set():
            try:
                return con, fn(con)
            except (pymysql.err.OperationalError, pymysql.err.InterfaceError) as exc:
                if not (is_retryable(exc) or isinstance(exc, pymysql.err.InterfaceError)):
                    raise
                log.warning("database error (%s); reconnecting", exc)
                try:
                    con.close()
                except Exception:
                    pass  # already broken
                self.stop.wait(0.2)
                con = self._db()
        return con, None

    def _ingest(self) -> None:
        con = self._db()
        while not self.stop.is_set():
            try:
                first = self.events_q.get(timeout=0.2)
            except queue.Empty:
                continue
            msgs = [first]
            while len(msgs) < self.cfg.batch_max:
                try:
                    msgs.append(self.events_q.get_nowait())
                except queue.Empty:
                    break
            items: list[tuple[str, dict[str, Any]]] = []
            for m in msgs:
                gw = self.cfg.gateway_of_topic(m.topic)
                try:
                    body = json.loads(m.payload)
                    evs = body.get("events") if isinstance(body, dict) else None
                except ValueError:
                    evs = None
                if gw is None or not isinstance(evs, list):
                    log.warning("dropped events message on %s (unknown gateway or malformed)", m.topic)
                    continue
                items += [(gw, e) for e in evs if isinstance(e, dict)]
            try:
                con, n = self._with_db(con, lambda c, it=items: write_batch(c, self.cfg, it))
            except pymysql.err.MySQLError as exc:  # a row ejyy refuses: write the rest one by one
                log.error("batch refused (%s); writing its events one by one", exc)
                n = 0
                for item in items:
                    try:
                        con, k = self._with_db(con, lambda c, it=item: write_batch(c, self.cfg, [it]))
                        n += k or 0
                    except pymysql.err.MySQLError as exc1:
                        log.error("event %s dropped: %s", item[1].get("id"), exc1)
            if n is None or self.stop.is_set():
                return  # stopping: nothing acked, the broker redelivers
            self.written += n
            if n < len(items):
                log.info("%d of %d events already written (redelivery): skipped", len(items) - n, len(items))
            for m in msgs:
                self._ack(m)

    def _control_one(self, con: Any, m: Msg) -> None:
        gw = self.cfg.gateway_of_topic(m.topic)
        if gw is None:
            return
        try:
            body = json.loads(m.payload) if m.payload else {}
        except ValueError:
            return
        if not isinstance(body, dict):
            return
        if m.topic.endswith("/sync/request"):
            self._snapshot(con, gw, body.get("have"))
        elif m.topic.endswith("/cmd/result"):
            commands.on_result(con, gw, body)
        elif m.topic.endswith("/status") or m.topic.endswith("/health"):
            if m.topic.endswith("/status"):
                status.on_status(con, self.cfg, gw, body)
            else:
                status.on_health(con, self.cfg, gw, body)
            if body.get("online", True) is not False and self._resync_due(
                con, gw, body.get("whitelist_version")
            ):
                self._snapshot(con, gw, body.get("whitelist_version"))

    def _snapshot(self, con: Any, gw: str, have: object) -> None:
        version, entries = whitelist.current(con, self.cfg, gw, int(time.time()))
        if have != version:
            parts = snapshot_parts(entries, version, uuid.uuid4().hex, self.cfg.snapshot_part)
            for p in parts:
                self.publish(gw, "whitelist", p)
            log.info("snapshot v%d to %s: %d entries in %d parts", version, gw, len(entries), len(parts))

    def _resync_due(self, con: Any, gw: str, have: object) -> bool:
        """A gateway whose status/health shows a version we did not send lately gets a snapshot.

        This heals a sync request lost while no bridge was subscribed (a shared subscription
        without members drops messages) and a lost delta. One instance wins the claim on
        ``snapshot_at`` (at most one unrequested snapshot per gateway every 10 s).
        """
        if not isinstance(have, int):
            return False
        now = now_ms()
        with transaction(con) as cur:
            cur.execute("SELECT version, updated_at FROM bridge_whitelist WHERE gateway = %s", (gw,))
            row = cur.fetchone()
            if row is not None and (int(row[0]) == have or now - int(row[1]) < 5000):
                return False  # in step, or a delta just sent may still be on its way
            cur.execute(
                "UPDATE bridge_gateway_status SET snapshot_at = %s"
                " WHERE gateway = %s AND (snapshot_at IS NULL OR snapshot_at < %s)",
                (now, gw, now - 10_000),
            )
            return bool(cur.rowcount == 1)

    def _control(self) -> None:
        con = self._db()
        while not self.stop.is_set():
            try:
                m = self.control_q.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                con, _ = self._with_db(con, lambda c, m=m: self._control_one(c, m))
            except Exception:
                log.exception("message on %s failed", m.topic)
            self._ack(m)

    def _poll_once(self, con: Any, full: bool) -> None:
        now = int(time.time())
        for gw in self.cfg.gateways:
            delta = whitelist.poll_delta(con, self.cfg, gw, now, full)
            if delta is not None:
                self.publish(gw, "whitelist", delta)
                log.info("delta %d -> %d to %s: %d ops", delta["from"], delta["to"], gw, len(delta["ops"]))
        for gw, token in commands.claim_remote_opens(con, self.cfg, self.signer):
            self.client.publish(f"{self.cfg.root(gw)}/cmd", token, qos=1)
            log.info("remote open sent to %s", gw)

    def _poller(self) -> None:
        con = self._db()
        last_full = 0.0
        while not self.stop.wait(self.cfg.poll_s):
            full = time.monotonic() - last_full >= self.cfg.full_diff_s
            try:
                con, _ = self._with_db(con, lambda c, f=full: self._poll_once(c, f))
            except Exception:
                log.exception("poll failed")
            if full:
                last_full = time.monotonic()

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> Bridge:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600  # a restarted instance gets what it had not acked
        self.client.connect_async(
            self.cfg.mqtt.host, self.cfg.mqtt.port, 30, clean_start=False, properties=props
        )
        for fn in (self._ingest, self._control, self._poller):
            t = threading.Thread(target=fn, name=f"bridge-{fn.__name__.strip('_')}", daemon=True)
            t.start()
            self.threads.append(t)
        self.client.loop_start()
        return self

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(5)
        self.client.disconnect()
        self.client.loop_stop()
