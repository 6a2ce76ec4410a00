"""MQTT transport on paho-mqtt 2.x (CallbackAPIVersion.VERSION2), MQTT 5, persistent session.

paho runs its network loop in its own thread (``loop_start``); every callback is handed to the
asyncio loop with ``call_soon_threadsafe``, so the link logic is single-threaded.

One paho ``Client`` per connection attempt, ``reconnect_on_failure=False``: the link owns retry and
backoff, and paho's private queue of unacknowledged publishes dies with its connection. The outbox
on disk is the only queue of events; after a reconnect the link re-sends from it (see docs/mqtt.md,
"Delivery"). Callbacks of an old client are ignored (generation check).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.cloud.comms import LinkHandler
from edge.config import MqttSection

log = structlog.get_logger(__name__)

# Reason codes below 0x80 are success (0x10 = accepted, no matching subscribers).
_FAILURE = 0x80


class MqttTransport:
    """A Communicator over paho. ``will`` = (topic, payload) retained QoS 1 Last Will."""

    def __init__(
        self, cfg: MqttSection, client_id: str, handler: LinkHandler, will: tuple[str, bytes]
    ) -> None:
        self._cfg = cfg
        self._client_id = client_id
        self._handler = handler
        self._will = will
        self._client: paho.Client | None = None
        self._gen = 0
        self._connected = False
        self._last_error: str | None = None
        self._max_inflight = 65535
        self._connack: asyncio.Future[tuple[bool, str, Any]] | None = None
        self._closed: asyncio.Future[str] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- properties ------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def last_error(self) -> str | None:
        return self._last_error

    @property
    def max_inflight(self) -> int:
        return self._max_inflight

    # --- connect ---------------------------------------------------------------------------
    def _new_client(self, gen: int) -> paho.Client:
        cfg = self._cfg
        c = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=paho.MQTTv5,
            reconnect_on_failure=False,
            manual_ack=True,
        )
        c.max_inflight_messages_set(0)  # the link bounds what it has in flight itself
        c.max_queued_messages_set(0)
        if cfg.username is not None:
            c.username_pw_set(cfg.username, cfg.password)
        if cfg.tls is not None:
            for name in ("ca", "cert", "key"):
                path = getattr(cfg.tls, name)
                if path is not None and not os.access(path, os.R_OK):
                    raise FileNotFoundError(f"mqtt.tls.{name} {path} is missing or unreadable")
            c.tls_set(
                ca_certs=str(cfg.tls.ca) if cfg.tls.ca else None,
                certfile=str(cfg.tls.cert) if cfg.tls.cert else None,
                keyfile=str(cfg.tls.key) if cfg.tls.key else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
            if cfg.tls.insecure_skip_hostname:
                c.tls_insecure_set(True)
        topic, payload = self._will
        c.will_set(topic, payload, qos=1, retain=True)
        c.on_connect = lambda _c, _u, flags, rc, props: self._post(gen, self._on_connect, flags, rc, props)
        c.on_disconnect = lambda _c, _u, _f, rc, _p: self._post(gen, self._on_disconnect, rc)
        c.on_message = lambda _c, _u, m: self._post(gen, self._on_message, m.topic, m.payload, m.mid, m.qos)
        c.on_publish = lambda _c, _u, mid, rc, _p: self._post(gen, self._on_publish, mid, rc)
        return c

    def _post(self, gen: int, fn: Callable[..., None], *args: Any) -> None:
        """paho thread -> loop thread; stale generations are dropped on arrival."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def run() -> None:
            if gen != self._gen:
                return
            try:
                fn(*args)
            except Exception:
                log.exception("mqtt_callback_failed", callback=getattr(fn, "__name__", "?"))

        with contextlib.suppress(RuntimeError):  # loop closed between the check and the call
            loop.call_soon_threadsafe(run)

    async def connect(self) -> bool:
        cfg = self._cfg
        self._loop = asyncio.get_running_loop()
        self._gen += 1
        gen = self._gen
        try:
            client = self._new_client(gen)
        except (OSError, ValueError) as exc:  # e.g. a CA / certificate / key file missing or unreadable
            self._last_error = f"cannot set up TLS: {exc}"
            log.error("mqtt_connect_failed", error=self._last_error)
            return False
        self._client = client
        self._connack = self._loop.create_future()
        self._closed = self._loop.create_future()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = cfg.session_expiry_s
        # paho applies connect_timeout to the TCP connect and the TLS handshake, so the thread ends
        # by itself; the outer guard only covers a resolver that hangs (the late socket is then shut).
        client.connect_timeout = cfg.connect_timeout_s
        attempt = asyncio.ensure_future(
            asyncio.to_thread(
                client.connect, cfg.host, cfg.port, cfg.keepalive_s, clean_start=False, properties=props
            )
        )
        try:
            await asyncio.wait_for(asyncio.shield(attempt), 2 * cfg.connect_timeout_s + 5)
        except TimeoutError:
            attempt.add_done_callback(lambda _f: _shut(client))
            return await self._fail(
                f"no TCP/TLS connection to {cfg.host}:{cfg.port} within {cfg.connect_timeout_s:g} s"
            )
        except ssl.SSLCertVerificationError as exc:
            return await self._fail(
                f"TLS certificate problem: {exc.verify_message or exc} (check mqtt.tls.ca)"
            )
        except ssl.SSLError as exc:
            return await self._fail(f"TLS handshake failed: {exc.reason or exc} (check mqtt.tls.*)")
        except socket.gaierror as exc:
            return await self._fail(f"cannot resolve {cfg.host!r}: {exc.strerror or exc}")
        except OSError as exc:
            return await self._fail(f"cannot connect to {cfg.host}:{cfg.port}: {exc.strerror or exc}")
        except ValueError as exc:  # paho: bad host/port
            return await self._fail(f"bad MQTT settings: {exc}")
        _no_delay(client)
        if gen != self._gen:  # closed (link stopping) while the socket was being set up
            await asyncio.to_thread(client.disconnect)
            return False
        client.loop_start()
        try:
            ok, why, props_in = await asyncio.wait_for(asyncio.shield(self._connack), cfg.connect_timeout_s)
        except TimeoutError:
            hint = self._tls_hint() if cfg.tls else "broker not answering (frozen, overloaded, or not MQTT?)"
            return await self._fail(f"no CONNACK within {cfg.connect_timeout_s:g} s: {hint}")
        if not ok:
            return await self._fail(why)
        rm = getattr(props_in, "ReceiveMaximum", None) if props_in is not None else None
        self._max_inflight = int(rm) if rm else 65535
        self._connected = True
        self._last_error = None
        return True

    def _tls_hint(self) -> str:
        tls = self._cfg.tls
        if tls is not None and tls.cert is None:
            return "TLS handshake failed: the broker may require a client certificate, mqtt.tls.cert/key are not set"
        return "TLS handshake failed or client certificate rejected?"

    async def _fail(self, why: str) -> bool:
        self._last_error = why
        log.error("mqtt_connect_failed", error=why, host=self._cfg.host, port=self._cfg.port)
        await self._teardown(clean=False)
        return False

    # --- paho callbacks (on the loop) ------------------------------------------------------
    def _on_connect(self, flags: Any, rc: Any, props: Any) -> None:
        fut = self._connack
        if fut is None or fut.done():
            return
        if rc.is_failure:
            hint = ""
            if rc.value in (0x86, 0x87, 0x8C):  # bad user name or password, not authorized, bad auth
                hint = " (check mqtt.username / mqtt.password)"
            fut.set_result(
                (False, f"broker refused the connection: {rc} (reason code {rc.value}){hint}", props)
            )
        else:
            log.info("mqtt_connected", session_present=bool(getattr(flags, "session_present", False)))
            fut.set_result((True, "", props))

    def _on_disconnect(self, rc: Any) -> None:
        why = f"disconnected: {rc}"
        if self._connack is not None and not self._connack.done():
            hint = f" ({self._tls_hint()})" if self._cfg.tls else ""
            self._connack.set_result((False, f"connection closed before CONNACK: {rc}{hint}", None))
            return
        was = self._connected
        self._connected = False
        self._last_error = why
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(why)
        if was:
            self._handler.on_lost(why)

    def _on_message(self, topic: str, payload: bytes, mid: int, qos: int) -> None:
        client = self._client

        def ack() -> None:
            if qos > 0 and client is not None and client is self._client and self._connected:
                client.ack(mid, qos)

        self._handler.on_message(topic, payload, ack)

    def _on_publish(self, mid: int, rc: Any) -> None:
        value = getattr(rc, "value", 0)
        self._handler.on_published(mid, value < _FAILURE, str(rc))

    # --- use -------------------------------------------------------------------------------
    def subscribe(self, topics: list[tuple[str, int]]) -> None:
        if self._client is not None and self._connected:
            self._client.subscribe(topics)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int | None:
        if self._client is None or not self._connected:
            return None
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            log.warning("mqtt_publish_failed", topic=topic, rc=paho.error_string(info.rc))
            return None
        return info.mid

    async def wait_closed(self) -> str:
        if self._closed is None:
            return "never connected"
        return await asyncio.shield(self._closed)

    async def close(self, *, clean: bool) -> None:
        await self._teardown(clean=clean)

    async def _teardown(self, *, clean: bool) -> None:
        client, self._client = self._client, None
        self._gen += 1  # anything paho still reports belongs to a dead connection
        self._connected = False
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(self._last_error or "closed")
        if client is None:
            return

        def stop() -> None:
            if clean:
                client.disconnect()
            else:
                _shut(client)
            client.loop_stop()

        try:
            await asyncio.wait_for(asyncio.to_thread(stop), 5.0)
        except TimeoutError:
            log.warning("mqtt_thread_stop_slow")  # the daemon thread ends with its socket


def _no_delay(client: paho.Client) -> None:
    """paho leaves Nagle on: a small PUBLISH (a command result, one event) would wait for the ACK
    of the previous small write, up to the peer's delayed-ACK time (40 ms on Linux)."""
    sock = client.socket()
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _shut(client: paho.Client) -> None:
    """Drop the connection without DISCONNECT (the broker then publishes the Will)."""
    sock = client.socket()
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
