"""CloudLink: the gateway's MQTT side of shared/spec/mqtt.md.

Per connection: retained R/status online, subscribe R/whitelist and R/cmd, R/sync/request, R/health,
then drain the outbox until the connection ends; reconnect forever with capped, jittered backoff.
Everything runs on the asyncio loop; the transport hands paho's callbacks over.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable

import structlog

from edge.cloud.commands import CommandContext, handle_command
from edge.cloud.comms import Communicator
from edge.cloud.drain import Drainer
from edge.cloud.health import health_payload
from edge.cloud.mqtt import MqttTransport
from edge.cloud.replay import ReplayStore
from edge.cloud.sync import WhitelistSync
from edge.config import Config
from edge.datafiles import report
from edge.outbox import Outbox
from edge.ports import GateControl
from edge.runtime import tune_for_latency
from edge.store import WhitelistStore
from edge.supervise import spawn as spawn_supervised
from edge.trust import build_policy

log = structlog.get_logger(__name__)

_STABLE_S = 10.0  # a connection that lived this long resets the backoff
_STOP_ACK_S = 2.0


def root_topic(site: str, gateway: str) -> str:
    return f"edge/v1/{site}/{gateway}"


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class CloudLink:
    def __init__(
        self,
        cfg: Config,
        store: WhitelistStore,
        outbox: Outbox,
        gate: GateControl,
        *,
        version: str,
        transport: Callable[[CloudLink], Communicator] | None = None,
        on_snapshot: Callable[[float], None] | None = None,
    ) -> None:
        if cfg.mqtt is None:
            raise ValueError("CloudLink needs an mqtt section in the config")
        self.cfg = cfg
        self.mqtt = cfg.mqtt
        self.store = store
        self.outbox = outbox
        self.gate = gate
        self.version = version
        self.root = root_topic(cfg.gateway.site, cfg.gateway.id)
        self.started_at = int(time.time() * 1000)
        will = (f"{self.root}/status", _json({"online": False}))
        self._t: Communicator = (
            transport(self) if transport else MqttTransport(self.mqtt, cfg.gateway.id, self, will)
        )
        self._policy = build_policy(cfg, store)
        self._replay = ReplayStore(cfg.gateway.data_dir / "replay.db")
        if self._replay.recovery is not None:  # damaged: moved aside, the cloud told by an alarm
            report(outbox, self._replay.recovery)
        self._sync = WhitelistSync(store, self.request_sync, self._keys_changed, on_snapshot)
        self._cmd = CommandContext(
            cfg.gateway.id,
            gate,
            self._replay,
            lambda: self._policy,
            cfg.trust.require_clock_sync,
            self.request_sync,
            self._publish_result,
        )
        self._drainer: Drainer | None = None
        self._pending: dict[int, asyncio.Future[bool]] = {}  # mids someone awaits (status at stop)
        self._tasks: set[asyncio.Task[object]] = set()
        self._health_now = asyncio.Event()
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        outbox.add_listener(self._outbox_appended)
        gate.on_device_change(self._device_changed)

    # --- public ------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._t.connected

    @property
    def last_error(self) -> str | None:
        return self._t.last_error

    async def run(self) -> None:
        tune_for_latency()  # snapshot staging and paho run in threads beside the decision loop
        self._loop = asyncio.get_running_loop()
        workers = [  # supervised: a dead whitelist applier would leave the gate on a stale list unseen
            spawn_supervised("cloud-whitelist", self._sync.run),
            spawn_supervised("cloud-health", self._health_loop),
        ]
        backoff = 1.0
        try:
            while not self._stopping:
                if not await self._t.connect():
                    await self._sleep_backoff(backoff)
                    backoff = min(backoff * 2, self.mqtt.reconnect_max_s)
                    continue
                up_at = time.monotonic()
                reason = await self._session()
                if self._stopping:
                    break
                log.warning("mqtt_connection_lost", reason=reason, backlog=self.outbox.count())
                if time.monotonic() - up_at > _STABLE_S:
                    backoff = 1.0
                await self._sleep_backoff(backoff)
                backoff = min(backoff * 2, self.mqtt.reconnect_max_s)
        finally:
            for t in workers:
                t.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            if not self._stopping:
                await self._t.close(clean=False)

    async def stop(self) -> None:
        """Retained {"online": false} (a clean DISCONNECT suppresses the Will), then disconnect."""
        self._stopping = True
        if self._t.connected:
            mid = self._t.publish(f"{self.root}/status", _json({"online": False}), qos=1, retain=True)
            if mid is not None:
                fut = asyncio.get_running_loop().create_future()
                self._pending[mid] = fut
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(fut, _STOP_ACK_S)
        await self._t.close(clean=True)
        for t in list(self._tasks):
            t.cancel()
        self._replay.close()

    def request_sync(self) -> None:
        """R/sync/request {"have": N}: after every connect, on a delta gap, on a `sync` command."""
        have = self.store.version
        if self._t.publish(f"{self.root}/sync/request", _json({"have": have}), qos=1) is not None:
            log.info("sync_requested", have=have)

    # --- one connection ----------------------------------------------------------------------
    async def _session(self) -> str:
        status = {
            "online": True,
            "version": self.version,
            "started_at": self.started_at,
            "whitelist_version": self.store.version,
        }
        self._t.publish(f"{self.root}/status", _json(status), qos=1, retain=True)
        self._t.subscribe([(f"{self.root}/whitelist", 1), (f"{self.root}/cmd", 1)])
        self.request_sync()
        self._publish_health()
        inflight = max(1, min(self.mqtt.inflight, self._t.max_inflight - 4))
        drainer = Drainer(self.outbox, self._publish_events, inflight, self._events_refused)
        self._drainer = drainer
        task = asyncio.create_task(drainer.run(), name="cloud-drain")
        try:
            return await self._t.wait_closed()
        finally:
            self._drainer = None
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_result(False)
            self._pending.clear()

    def _publish_events(self, payload: bytes) -> int | None:
        return self._t.publish(f"{self.root}/events", payload, qos=1)

    def _events_refused(self, reason: str) -> None:
        """The broker refused an events message: reconnect so its rows are sent again (not stuck)."""
        self._spawn(self._t.close(clean=False))

    def _publish_result(self, result: dict[str, object]) -> None:
        if self._t.publish(f"{self.root}/cmd/result", _json(result), qos=1) is None:
            log.warning("command_result_not_sent", jti=result.get("jti"), reason="offline")

    def _publish_health(self) -> None:
        try:
            payload = health_payload(self.gate, self.outbox, self.store)
        except Exception:
            log.exception("health_failed")
            return
        self._t.publish(f"{self.root}/health", _json(payload), qos=0, retain=True)

    async def _health_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.mqtt.health_interval_s):  # not wait_for: it can eat a cancel
                    await self._health_now.wait()
            self._health_now.clear()
            if self._t.connected:
                self._publish_health()

    async def _sleep_backoff(self, base: float) -> None:
        delay = base * random.uniform(0.8, 1.2)
        log.info("mqtt_reconnect_wait", seconds=round(delay, 2), last_error=self._t.last_error)
        await asyncio.sleep(delay)

    # --- LinkHandler (called on the loop by the transport) -----------------------------------
    def on_message(self, topic: str, payload: bytes, ack: Callable[[], None]) -> None:
        if topic == f"{self.root}/whitelist":
            self._sync.submit(payload, ack)
        elif topic == f"{self.root}/cmd":
            self._spawn(self._command(payload, ack))
        else:
            log.warning("mqtt_unexpected_topic", topic=topic)
            ack()

    async def _command(self, payload: bytes, ack: Callable[[], None]) -> None:
        try:
            await handle_command(self._cmd, payload)
        finally:
            ack()

    def on_published(self, mid: int, ok: bool, reason: str) -> None:
        fut = self._pending.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(ok)
        d = self._drainer
        if d is not None and d.owns(mid):
            d.on_acked(mid, ok, reason)

    def on_lost(self, reason: str) -> None:
        log.debug("mqtt_lost", reason=reason)

    # --- hooks from the gateway side ---------------------------------------------------------
    def _outbox_appended(self) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake_drainer()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self._wake_drainer)

    def _wake_drainer(self) -> None:
        if self._drainer is not None:
            self._drainer.wake()

    def _device_changed(self, device: str, online: bool, error: str | None) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._health_now.set)

    def _keys_changed(self) -> None:
        """A `key` op changed the trusted keys: rebuild ours and the gateway's at once."""
        try:
            self._policy = build_policy(self.cfg, self.store)
        except ValueError as exc:
            log.error("trust_rebuild_failed", error=str(exc))
        try:
            self.gate.reload_trust()
        except Exception:
            log.exception("gate_reload_trust_failed")

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
