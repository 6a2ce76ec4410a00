"""Two `edge-bridge run` instances share the event stream (MQTT v5 shared subscription); one is
killed with SIGKILL mid-stream and started again with its client id: no event lost, none twice."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from bridge.config import DbConfig
from tests.support.broker import Broker
from tests.support.gateway import Signer
from tests.support.mariadb import Ejyy, ejyy_database, server
from tests.test_bridge_db import bridge_cfg, write_key
from tests.test_bridge_e2e import BridgeProc

MESSAGES, PER_MESSAGE = 400, 50  # 20,000 events


@pytest.fixture
def db() -> Iterator[DbConfig]:
    with server() as srv, ejyy_database(srv) as d:
        yield d


def instance_yaml(tmp_path: Path, db: DbConfig, key: Path, port: int, client_id: str) -> Path:
    cfg = bridge_cfg(db, key, mqtt_port=port)
    cfg.mqtt.client_id = client_id
    path = tmp_path / f"{client_id}.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True), allow_unicode=True))
    return path


def wait(pred, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return bool(pred())


def test_kill_one_instance_mid_stream(tmp_path: Path, db: DbConfig) -> None:
    e = Ejyy(db)
    e.community()
    e.devices()
    key = write_key(tmp_path, Signer())
    with Broker(tmp_path / "broker") as broker:
        cfgs = {n: instance_yaml(tmp_path, db, key, broker.port, n) for n in ("bridge-a", "bridge-b")}
        procs = {n: BridgeProc(p, tmp_path / f"{n}.log") for n, p in cfgs.items()}
        try:
            assert wait(lambda: all("mqtt connected" in p.text() for p in procs.values()), 20)
            time.sleep(0.5)  # SUBACKs
            gw = paho.Client(CallbackAPIVersion.VERSION2, client_id="fake-gw", protocol=paho.MQTTv5)
            gw.max_inflight_messages_set(100)
            gw.connect("127.0.0.1", broker.port)
            gw.loop_start()
            infos = []

            def rows() -> int:
                return int(e.q("SELECT COUNT(*) FROM bridge_event")[0][0])  # type: ignore[arg-type]

            def publish() -> None:
                now = int(time.time() * 1000)
                for m in range(MESSAGES):
                    evs = [{"id": f"E{m:04d}-{i:02d}", "ts": now + m, "device": "north-gate", "reader": "qr-north",
                            "method": "qr", "credential": "t", "subject": "resident:1042", "result": "granted",
                            "reason": "ok", "latency_ms": 1.0} for i in range(PER_MESSAGE)]  # fmt: skip
                    infos.append(gw.publish("edge/v1/c42/gw-test/events", json.dumps({"events": evs}), qos=1))
                    time.sleep(0.002)

            pub = threading.Thread(target=publish)
            t0 = time.monotonic()
            pub.start()
            assert wait(lambda: rows() >= MESSAGES * PER_MESSAGE // 4, 60)
            procs["bridge-a"].proc.kill()  # mid-stream, with whatever it had in flight
            procs["bridge-a"].proc.wait(10)
            at_kill = rows()
            pub.join(120)
            for i in infos:
                i.wait_for_publish(30)
            time.sleep(1.0)
            procs["bridge-a"] = BridgeProc(cfgs["bridge-a"], tmp_path / "bridge-a.log")  # same client id
            total = MESSAGES * PER_MESSAGE
            assert wait(lambda: rows() == total, 90), (rows(), at_kill)
            took = time.monotonic() - t0
            time.sleep(1.5)  # nothing more trickles in
            assert rows() == total
            assert e.q("SELECT COUNT(*), COUNT(DISTINCT event_id) FROM bridge_event") == [(total, total)]
            assert e.q("SELECT COUNT(*) FROM ejyy_iot_entrance_log") == [(total,)]
            redelivered = sum("redelivery" in p.text() for p in procs.values())
            print(f"{total} events, instance killed at {at_kill}, all written once in {took:.1f} s;"
                  f" instances that skipped redelivered events: {redelivered}")  # fmt: skip
            gw.disconnect()
            gw.loop_stop()
        finally:
            for p in procs.values():
                p.finish()
            e.close()
