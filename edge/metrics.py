"""Prometheus metrics (`metrics.listen`, off by default), served from a daemon thread.

The hot path only increments counters and observes a histogram (no I/O, no allocation past the first
sample of a label set); everything else is read at scrape time, in the HTTP thread, from the
gateway's public state (outbox, whitelist, device health, the cloud link). The registry is private
to one gateway. Labels are bounded: methods, result and reason codes (a code that is not one, or one
past ``MAX_LABEL_SETS``, counts as ``other``), device and reader ids from the config. No credential
or subject ever becomes a label.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, get_args

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edge.model import Method

if TYPE_CHECKING:
    from edge.app import Gateway

log = structlog.get_logger(__name__)

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
SNAPSHOT_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
MAX_LABEL_SETS = 200  # per metric: far more than the reason codes of the spec
_METHODS = frozenset(get_args(Method))
_CODE = re.compile(r"[a-z][a-z0-9_]{0,47}")
_RESULTS = frozenset({"granted", "denied", "alarm", "info"})


def _code(value: str, known: int) -> str:
    return value if known < MAX_LABEL_SETS and _CODE.fullmatch(value) else "other"


def _cached(cache: dict[Any, Any], key: Any, child: Any) -> Any:
    """Remember a label child under the raw key, up to MAX_LABEL_SETS keys (then looked up each time)."""
    if len(cache) < MAX_LABEL_SETS:
        cache[key] = child
    return child


class Metrics:
    """One gateway's metrics: ``decided`` / ``rejected`` / ``snapshot_applied`` from the loop,
    ``start`` / ``stop`` the endpoint."""

    def __init__(self, gw: Gateway) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._latency = Histogram(
            "gate_decision_latency_seconds", "Presentation (last byte) to decision recorded, by method",
            ["method"], registry=self.registry, buckets=LATENCY_BUCKETS_S,
        )  # fmt: skip
        self._decisions = Counter(
            "gate_decisions", "Decisions recorded as events, by result and reason code",
            ["result", "reason"], registry=self.registry,
        )  # fmt: skip
        self._rejects = Counter(
            "gate_reader_rejects", "Lines a reader rejected (scanner noise), by reader and reason code",
            ["reader", "reason"], registry=self.registry,
        )  # fmt: skip
        self._snapshot = Histogram(
            "gate_whitelist_snapshot_apply_seconds", "Parsing, staging and swapping one whitelist snapshot",
            registry=self.registry, buckets=SNAPSHOT_BUCKETS_S,
        )  # fmt: skip
        self._decision_of: dict[tuple[str, str], Any] = {}  # label children, cached off the hot path
        self._latency_of: dict[str, Any] = {}
        self._reject_of: dict[tuple[str, str], Any] = {}
        self._readers = frozenset(gw.readers)
        self.collector = GatewayCollector(gw)
        self.registry.register(self.collector)
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None  # the bound port while serving

    # --- from the loop: counters only -----------------------------------------------------------
    def decided(self, method: str, result: str, reason: str, latency_ms: float | None) -> None:
        """One recorded decision; ``latency_ms`` None for events that are no fresh decision."""
        child = self._decision_of.get((result, reason))
        if child is None:
            labels = (result if result in _RESULTS else "other", _code(reason, len(self._decision_of)))
            child = _cached(self._decision_of, (result, reason), self._decisions.labels(*labels))
        child.inc()
        if latency_ms is not None:
            hist = self._latency_of.get(method)
            if hist is None:
                label = method if method in _METHODS else "other"
                hist = self._latency_of[method] = self._latency.labels(label)
            hist.observe(latency_ms / 1000)

    def rejected(self, reader: str, reason: str) -> None:
        child = self._reject_of.get((reader, reason))
        if child is None:
            labels = (reader if reader in self._readers else "other", _code(reason, len(self._reject_of)))
            child = _cached(self._reject_of, (reader, reason), self._rejects.labels(*labels))
        child.inc()

    def snapshot_applied(self, seconds: float) -> None:
        self._snapshot.observe(seconds)

    # --- the endpoint ---------------------------------------------------------------------------
    def start(self, host: str, port: int) -> bool:
        """Serve on host:port; a port that cannot be bound is logged and the gate runs on without."""
        try:
            self._server, self._thread = start_http_server(port, host, registry=self.registry)
        except OSError as exc:
            log.error("metrics_listen_failed", listen=f"{host}:{port}", error=exc.strerror or str(exc))
            return False
        self.port = int(self._server.server_port)
        log.info("metrics_listening", listen=f"{host}:{self.port}")
        return True

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await asyncio.to_thread(server.shutdown)  # waits for the serve loop's poll (<= 0.5 s)
            server.server_close()
            if self._thread is not None:
                self._thread.join(5)
        self.port = None
        self.collector.close()


class GatewayCollector(Collector):
    """Gauges read at scrape time (HTTP thread): plain attribute reads, plus one indexed SELECT of the
    oldest outbox row on a read-only connection of its own (never the loop's)."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self._con: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        gw = self.gw
        depth = gw.outbox.count()
        yield _gauge("gate_outbox_events", "Events waiting in the outbox", depth)
        age = self._oldest_age(depth)
        if age is not None:
            yield _gauge("gate_outbox_oldest_age_seconds", "Age of the oldest outbox event (0: empty)", age)
        online = GaugeMetricFamily("gate_device_online", "1 if a device or reader answers", labels=["device"])
        for dev, state in gw.device_health().items():
            online.add_metric([dev], 1.0 if state.get("online") else 0.0)
        yield online
        if gw.cfg.mqtt is not None:
            link = gw.cloud
            up = bool(getattr(link, "connected", False))
            yield _gauge("gate_mqtt_connected", "1 while the MQTT link to the cloud is connected", up)
        yield _gauge("gate_whitelist_version", "Local whitelist version (0: never synced)", gw.store.version)
        yield _gauge("gate_whitelist_entries", "Entries in the active whitelist", gw.store.count())

    def _oldest_age(self, depth: int) -> float | None:
        if depth <= 0:
            return 0.0
        with self._lock:
            try:
                if self._con is None:
                    uri = f"{self.gw.outbox.path.resolve().as_uri()}?mode=ro"
                    self._con = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=1.0)
                row = self._con.execute("SELECT body FROM events ORDER BY seq LIMIT 1").fetchone()
            except sqlite3.Error as exc:
                log.warning("metrics_outbox_read_failed", error=str(exc))
                self._close()
                return None
        if row is None:
            return 0.0
        try:
            ts = int(json.loads(row[0])["ts"])
        except (ValueError, KeyError, TypeError):
            return None
        return max(0.0, time.time() - ts / 1000)

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=float(value))
