"""Never lose an event: broker killed, broker frozen, gateway process killed -9 mid-drain.

A persistent-session QoS 1 subscriber (the cloud) must end up with every recorded event, oldest
first, each id at least once (duplicates are allowed: the cloud de-duplicates by id).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.outbox import Outbox
from edge.sim.cloud_client import CloudClient
from tests.support.broker import Broker
from tests.support.cloud import GW, SITE, LinkHarness, access_event, make_config, running_link, until

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with Broker(tmp_path / "broker") as b:
        yield b


@pytest.fixture
def cloud(broker: Broker) -> Iterator[CloudClient]:
    with CloudClient("127.0.0.1", broker.port, SITE, GW) as c:
        yield c


def first_seen_order(cloud: CloudClient) -> list[str]:
    seen: dict[str, None] = {}
    for e in cloud.events():
        seen.setdefault(str(e["id"]), None)
    return list(seen)


def assert_all_delivered_in_order(cloud: CloudClient, ids: list[str]) -> None:
    order = first_seen_order(cloud)
    assert set(order) == set(ids), (
        f"missing {len(set(ids) - set(order))}, unexpected {len(set(order) - set(ids))}"
    )
    assert order == ids  # oldest first


async def produce(h: LinkHarness, ids: list[str], n: int, gap_s: float) -> None:
    for i in range(n):
        ev = access_event(i)
        h.gate.record(ev)
        ids.append(ev.id)
        await asyncio.sleep(gap_s)


async def test_each_event_sent_once_per_connection_in_batches(
    tmp_path: Path, broker: Broker, cloud: CloudClient
):
    cfg = make_config(tmp_path / "gw", broker.port, {}, inflight=3)
    ids: list[str] = []
    async with running_link(cfg) as h:
        await h.link.stop()  # offline: a backlog builds up on disk
        for i in range(1700):
            ev = access_event(i)
            h.gate.record(ev)
            ids.append(ev.id)
    async with running_link(cfg) as h:
        await produce(h, ids, 300, 0.001)  # and more while draining
        assert await until(lambda: h.outbox.count() == 0, 20)
        assert await until(lambda: len(list(cloud.events())) >= len(ids))
    got = [str(e["id"]) for e in cloud.events()]
    assert got == ids  # exactly once each, oldest first
    sizes = [len(r.json()["events"]) for r in cloud.on("events")]
    assert max(sizes) == 500 and min(sizes) >= 1


async def test_broker_killed_and_restarted_while_events_flow(
    tmp_path: Path, broker: Broker, cloud: CloudClient
):
    cfg = make_config(tmp_path / "gw", broker.port, {})
    ids: list[str] = []
    async with running_link(cfg) as h:
        producer = asyncio.create_task(produce(h, ids, 800, 0.004))
        await asyncio.sleep(0.8)
        broker.kill()
        assert await until(lambda: not h.link.connected)
        await asyncio.sleep(1.0)
        assert h.outbox.count() > 0  # recorded while the broker was away: kept on disk
        broker.start()
        await producer
        assert await until(lambda: len(set(first_seen_order(cloud))) >= len(ids), 30)
        assert await until(lambda: h.outbox.count() == 0)
    assert_all_delivered_in_order(cloud, ids)


async def test_broker_frozen_then_killed_and_restarted(tmp_path: Path, broker: Broker, cloud: CloudClient):
    cfg = make_config(tmp_path / "gw", broker.port, {})
    ids: list[str] = []
    async with running_link(cfg) as h:
        producer = asyncio.create_task(produce(h, ids, 400, 0.08))  # ~32 s of events
        await asyncio.sleep(1.0)
        broker.freeze()
        assert await until(lambda: not h.link.connected, 15)  # keepalive notices a frozen broker
        assert h.link.last_error
        await asyncio.sleep(29.0)
        broker.kill()
        broker.start()
        await producer
        assert await until(lambda: len(set(first_seen_order(cloud))) >= len(ids), 40)
        assert await until(lambda: h.outbox.count() == 0)
    assert_all_delivered_in_order(cloud, ids)


def _runner(data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.cloud_runner", str(data_dir), str(port), "--inflight", "1"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=open(log, "ab"),
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        },
    )


async def test_gateway_killed_mid_drain_loses_nothing(tmp_path: Path, broker: Broker, cloud: CloudClient):
    data = tmp_path / "gw"
    data.mkdir()
    outbox = Outbox(data / "outbox.db")
    ids = []
    for i in range(30_000):
        ev = access_event(i)
        outbox.append(ev)
        ids.append(ev.id)
    outbox.close()
    log = tmp_path / "runner.log"
    proc = _runner(data, broker.port, log)
    try:
        assert await until(lambda: len(cloud.on("events")) >= 2, 30), log.read_text()[-3000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # the broker publishes the Last Will: retained offline status
        assert await until(lambda: cloud.on("status")[-1].json() == {"online": False}, 15)
        ob = Outbox(data / "outbox.db")
        left = ob.count()
        ob.close()
        assert 0 < left < len(ids)  # really killed in the middle of the backlog
        proc = _runner(data, broker.port, log)
        assert await until(lambda: len(set(first_seen_order(cloud))) >= len(ids), 60), log.read_text()[-3000:]
        assert cloud.on("status")[-1].json()["online"] is True
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert_all_delivered_in_order(cloud, ids)
    ob = Outbox(data / "outbox.db")
    try:
        # rows go only after PUBACK: whatever is left was in flight at the last kill, and delivered
        assert ob.count() <= 500
    finally:
        ob.close()


async def test_events_refused_by_the_broker_stay_on_disk(tmp_path: Path):
    acl = tmp_path / "acl"
    root = f"edge/v1/{SITE}/{GW}"
    acl.write_text(
        "".join(f"topic readwrite {root}/{t}\n" for t in ("status", "sync/request", "health", "cmd/result"))
        + f"topic read {root}/whitelist\ntopic read {root}/cmd\ntopic read edge/v1/#\n"
    )
    with Broker(tmp_path / "b", extra=f"acl_file {acl}\n") as broker:
        with CloudClient("127.0.0.1", broker.port, SITE, GW) as cloud:
            cfg = make_config(tmp_path / "gw", broker.port, {})
            async with running_link(cfg) as h:
                for i in range(3):
                    h.gate.record(access_event(i))
                # refused PUBACK (not authorised) -> nothing deleted, the link reconnects to send again
                assert await until(lambda: len(cloud.on("status")) >= 3, 20)
                assert h.outbox.count() == 3
                assert list(cloud.events()) == []
