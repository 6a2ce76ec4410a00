"""Prometheus metrics (issue 9), scraped over real HTTP from a real gateway: pty readers, a pymodbus
relay board, a real Mosquitto playing the cloud, and `edge run` as a child process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edge.app import Gateway
from edge.config import ConfigError, load_config
from edge.metrics import MAX_LABEL_SETS
from edge.model import Presentation
from edge.sim.cloud_client import CloudClient
from edge.sim.relay_board import RelayBoardSim
from tests.support.broker import Broker
from tests.support.cloud import GW, SITE
from tests.support.daemon import Daemon
from tests.support.gateway import Signer, free_port, gateway_config
from tests.support.ptys import PtyPair

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.status == 200
        return resp.read().decode()


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


class Scraper:
    """Scrapes from a worker thread (the gateway runs on this test's loop) and keeps the last text."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.text = ""

    async def __call__(self) -> Samples:
        self.text = await asyncio.to_thread(scrape_text, self.port)
        return parse(self.text)

    async def until(self, name: str, want: float, timeout: float = 15.0, **labels: str) -> Samples:
        samples: Samples = {}
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while loop.time() < end:
            samples = await self()
            if value(samples, name, **labels) == want:
                return samples
            await asyncio.sleep(0.05)
        raise AssertionError(f"{name}{labels} != {want}: {value(samples, name, **labels)}\n{self.text}")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with Broker(tmp_path / "broker") as b:
        yield b


def card_entry(value: str, subject: str) -> dict[str, object]:
    return {"kind": "card", "value": value, "subject": subject, "zones": ["north-gate"]}


async def test_scrape_after_snapshot_grant_denial_outage_and_device_offline(tmp_path: Path, broker: Broker):
    signer = Signer()
    bport, mport = free_port(), free_port()
    board = RelayBoardSim(device_ids=[1])
    server = asyncio.create_task(board.serve_tcp("127.0.0.1", bport))
    with contextlib.ExitStack() as stack:
        qr = stack.enter_context(PtyPair(tmp_path, "qr"))
        cards = stack.enter_context(PtyPair(tmp_path, "card"))
        cloud = stack.enter_context(CloudClient("127.0.0.1", broker.port, SITE, GW))
        cfg = gateway_config(
            tmp_path,
            signer=signer,
            bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": bport, "timeout": 0.3, "retries": 0},
            readers={
                "qr-north": {"type": "serial", "port": str(qr.b), "content": "qr"},
                "card-north": {"type": "serial", "port": str(cards.b), "content": "card"},
            },
            door={"exit_button_input": 0},  # polled: an outage is noticed without a write
            mqtt={"host": "127.0.0.1", "port": broker.port, "keepalive_s": 2, "reconnect_max_s": 1.0},
            extra={"metrics": {"listen": f"127.0.0.1:{mport}"}},
        )
        await asyncio.sleep(0.2)
        gw = Gateway(load_config(cfg))
        scrape = Scraper(mport)
        try:
            await gw.start()
            assert gw.metrics is not None and gw.metrics.port == mport
            qfd = os.open(qr.a, os.O_RDWR | os.O_NOCTTY)
            stack.callback(os.close, qfd)
            cfd = os.open(cards.a, os.O_RDWR | os.O_NOCTTY)
            stack.callback(os.close, cfd)

            s = await scrape.until("gate_mqtt_connected", 1)
            for dev in ("north-gate", "qr-north", "card-north"):
                s = await scrape.until("gate_device_online", 1, device=dev)
            assert value(s, "gate_whitelist_version") == 0 and value(s, "gate_whitelist_entries") == 0
            assert value(s, "gate_whitelist_snapshot_apply_seconds_count") == 0

            # a snapshot in two parts: one apply observed, version and size from the store
            entries = [card_entry(v, f"resident:{i}") for i, v in enumerate(("04A1B2C3", "11223344", "55667788"))]
            assert cloud.send_snapshot(entries, version=5, part_size=2) == 2
            s = await scrape.until("gate_whitelist_version", 5)
            assert value(s, "gate_whitelist_entries") == 3
            assert value(s, "gate_whitelist_snapshot_apply_seconds_count") == 1
            assert (value(s, "gate_whitelist_snapshot_apply_seconds_sum") or 0) > 0

            # a grant (QR), a denial (unknown card) and a garbage line
            token = signer.code("t-metrics-1", sub="visitor:77")
            os.write(qfd, token.encode() + b"\r")
            os.write(cfd, b"DEADBEEF\r")
            os.write(qfd, b"hello\r")
            s = await scrape.until("gate_decisions_total", 1, result="granted", reason="ok")
            s = await scrape.until("gate_decisions_total", 1, result="denied", reason="unknown_credential")
            assert value(s, "gate_decision_latency_seconds_count", method="qr") == 1
            assert value(s, "gate_decision_latency_seconds_count", method="nfc") == 1
            assert value(s, "gate_decision_latency_seconds_count", method="plate") is None
            s = await scrape.until("gate_reader_rejects_total", 1, reader="qr-north", reason="malformed")
            # the cloud took every event: nothing waits
            s = await scrape.until("gate_outbox_events", 0)
            assert value(s, "gate_outbox_oldest_age_seconds") == 0

            # the cloud goes away: the link says so, events wait in the outbox and age
            broker.kill()
            await scrape.until("gate_mqtt_connected", 0)
            os.write(cfd, b"04A1B2C3\r")
            s = await scrape.until("gate_decisions_total", 2, result="granted", reason="ok")
            assert value(s, "gate_outbox_events") == 1
            await asyncio.sleep(1.2)
            s = await scrape()
            assert (value(s, "gate_outbox_oldest_age_seconds") or 0) >= 1.0

            # the relay board stops answering: its door goes offline, the readers stay online
            server.cancel()
            await asyncio.gather(server, return_exceptions=True)
            s = await scrape.until("gate_device_online", 0, device="north-gate")
            assert value(s, "gate_device_online", device="qr-north") == 1
            assert value(s, "gate_decisions_total", result="alarm", reason="device_offline") is None  # not decided

            # no credential or subject anywhere in the scrape
            text = scrape.text
            for secret in (token, "t-metrics-1", "visitor:77", "resident:", "DEADBEEF", "BEEF", "04A1B2C3", "B2C3"):
                assert secret not in text, secret
        finally:
            await gw.stop()
            server.cancel()
            await asyncio.gather(server, return_exceptions=True)
    assert gw.metrics.port is None
    with pytest.raises(OSError):  # the endpoint is gone with the gateway
        scrape_text(mport)


def _config(tmp_path: Path, metrics: object = None) -> Path:
    extra = {} if metrics is None else {"metrics": metrics}
    bus = {"type": "modbus_tcp", "host": "127.0.0.1", "port": free_port(), "timeout": 0.1, "retries": 0}
    door = {"exit_button_input": 0}  # polled: a board that never answers is noticed
    return gateway_config(tmp_path, signer=Signer(), bus=bus, readers={}, door=door, extra=extra)


def test_off_unless_listen_is_set_and_listen_is_checked(tmp_path: Path) -> None:
    for metrics in (None, {}, {"listen": None}):
        cfg = load_config(_config(tmp_path, metrics))
        gw = Gateway(cfg)
        try:
            assert gw.metrics is None
        finally:
            gw.outbox.close()
            gw.store.close()
    for bad in ("9108", "127.0.0.1:", "127.0.0.1:99999", ":9108"):
        with pytest.raises(ConfigError, match=r"metrics\.listen: listen must be host:port"):
            load_config(_config(tmp_path, {"listen": bad}))


async def test_a_busy_port_is_logged_and_the_gate_keeps_deciding(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        gw = Gateway(load_config(_config(tmp_path, {"listen": f"127.0.0.1:{port}"})))
        try:
            await gw.start()
            assert gw.metrics is not None and gw.metrics.port is None
            gw.present(Presentation("card", "DEADBEEF", "nfc", None))
            assert gw.outbox.count() >= 1  # decided and recorded all the same
            text = generate_latest(gw.metrics.registry).decode()
            s = parse(text)
            assert value(s, "gate_decisions_total", result="denied", reason="device_unavailable") == 1
        finally:
            await gw.stop()


def test_labels_stay_bounded_and_carry_no_credential(tmp_path: Path) -> None:
    gw = Gateway(load_config(_config(tmp_path, {"listen": "127.0.0.1:9"})))  # never started
    try:
        m = gw.metrics
        assert m is not None
        m.decided("qr", "denied", "04A1B2C3", 1.0)  # not a reason code: never a label
        m.decided("camera-x", "weird", "ok", 1.0)
        for i in range(3 * MAX_LABEL_SETS):
            m.decided("nfc", "denied", f"reason_{i}", None)
        s = parse(generate_latest(m.registry).decode())
        decisions = [k for k in s if k[0] == "gate_decisions_total"]
        assert MAX_LABEL_SETS <= len(decisions) <= MAX_LABEL_SETS + 2
        assert sum(v for k, v in s.items() if k[0] == "gate_decisions_total") == 2 + 3 * MAX_LABEL_SETS
        assert value(s, "gate_decisions_total", result="denied", reason="other") == 2 * MAX_LABEL_SETS + 3
        assert value(s, "gate_decisions_total", result="other", reason="ok") == 1
        assert value(s, "gate_decision_latency_seconds_count", method="other") == 1
        assert "04A1B2C3" not in generate_latest(m.registry).decode()
    finally:
        gw.outbox.close()
        gw.store.close()


async def test_edge_run_serves_metrics(tmp_path: Path) -> None:
    port = free_port()
    daemon = Daemon(_config(tmp_path, {"listen": f"127.0.0.1:{port}"}))
    try:
        await daemon.wait_for("metrics_listening", listen=f"127.0.0.1:{port}")
        s = await Scraper(port).until("gate_device_online", 0, device="north-gate")  # no board answers
        assert value(s, "gate_outbox_events") is not None and value(s, "gate_mqtt_connected") is None
    finally:
        daemon.finish()
