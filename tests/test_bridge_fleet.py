"""Two `edge-bridge run` instances share the fleet's event stream (MQTT v5 shared subscription);
one is killed with SIGKILL mid-stream and restarted with its client id. Every event id the
simulated gateways sent lands in ``bridge_event`` exactly once and every granted door event in
``ejyy_iot_entrance_log`` once: nothing lost (the broker redelivers what was not PUBACKed after
COMMIT), nothing twice (the event-id table makes the redelivered batch a no-op).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.bench_bridge import SITE, BridgeProc, bridge_yaml, count, seed, wait_rows
from bridge.config import DbConfig
from bridge.db import connect
from bridge.fleet_sim import Fleet, gateway_names
from tests.support.broker import Broker
from tests.support.mariadb import ejyy_database, server

GATEWAYS = 30


@pytest.fixture
def db() -> Iterator[DbConfig]:
    with server() as srv, ejyy_database(srv) as cfg:
        yield cfg


def test_kill9_one_of_two_instances_loses_nothing_writes_nothing_twice(db: DbConfig, tmp_path: Path) -> None:
    names = gateway_names(GATEWAYS)
    seed(db, community=1, devices=GATEWAYS, residents=50)
    with Broker(tmp_path / "broker") as broker:
        cfg = bridge_yaml(tmp_path, db, broker.port, names, batch_max=20)
        a = BridgeProc(tmp_path, cfg, "fleet-a").start()
        b = BridgeProc(tmp_path, cfg, "fleet-b").start()
        fleet = Fleet("127.0.0.1", broker.port, SITE, names, events_per_s=1500, batch_s=0.2,
                      shards=2, residents=50, record=True)  # fmt: skip
        try:
            fleet.start()
            fleet.produce()
            time.sleep(2.0)
            before = count(db, "SELECT COUNT(*) FROM bridge_event")
            a.kill9()  # mid-stream: batches received, some written, none of the in-flight ones acked
            time.sleep(1.5)
            # same client id: its session's unacked and queued messages come back. Required:
            # Mosquitto keeps dispatching to a dead member's persistent session (docs/scale.md)
            a.start()
            time.sleep(2.0)
            assert fleet.drain(30), f"{fleet.unacked()} events never PUBACKed by the broker"
            sent = fleet.stats.sent
            got = wait_rows(db, sent, 60)
            time.sleep(1.0)  # a late duplicate would show up here
        finally:
            fleet.close()
            a.stop()
            b.stop()
    assert before > 0, "nothing was written before the kill: not mid-stream"
    ids = fleet.stats.ids
    assert len(ids) == len(set(ids)) == sent
    con = connect(db)
    try:
        with con.cursor() as cur:
            cur.execute("SELECT event_id FROM bridge_event")
            written = [r[0] for r in cur.fetchall()]
            cur.execute("SELECT COUNT(*) FROM ejyy_iot_entrance_log")
            logs = int(cur.fetchone()[0])
    finally:
        con.close()
    missing = set(ids) - set(written)
    assert not missing, f"{len(missing)} of {sent} events lost (got {got})"
    assert len(written) == len(set(written)) == sent  # nothing foreign, nothing twice
    assert logs == fleet.stats.door_logs, f"{logs} log rows for {fleet.stats.door_logs} granted door events"
