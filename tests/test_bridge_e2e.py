"""The bridge end to end: a real MariaDB with ejyy's tables, a real Mosquitto, a real `edge run`
gateway (pty readers, a Modbus relay board) and `edge-bridge run` as a child process.

A car registered in ejyy lifts the barrier; a visitor row opens the barrier (its car) and the door
(its minted code) until it expires; each event lands once in ejyy's log tables; a remote-open row
opens the door once; device `online` columns follow the gateway and its Last Will."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge import codes, commands
from bridge.config import DbConfig
from bridge.db import connect
from edge.sim.relay_board import RelayBoardSim
from tests.support.broker import Broker
from tests.support.daemon import ROOT, Daemon
from tests.support.gateway import Signer, free_port, gateway_config
from tests.support.mariadb import Ejyy, ejyy_database, server
from tests.support.ptys import PtyPair
from tests.test_bridge_db import bridge_cfg, write_key

FLASH = 0x0200  # the door's vendor "flash" coil (pulse_mode flash)


async def until(pred: Callable[[], bool], timeout: float = 15.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        await asyncio.sleep(0.05)
    return pred()


class BridgeProc:
    """`edge-bridge run` as a child process (log to a file)."""

    def __init__(self, cfg_path: Path, log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "run", "-c", str(cfg_path)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(log, "ab"),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def finish(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@dataclass
class Rig:
    e: Ejyy
    board: RelayBoardSim
    gw: Daemon
    bridge: BridgeProc
    fds: dict[str, int]
    cfg_path: Path
    db: DbConfig
    signer: Signer

    def scan(self, reader: str, line: str) -> None:
        os.write(self.fds[reader], line.encode() + b"\r")

    def door_flashes(self) -> int:
        return sum(1 for w in self.board.writes if w.device_id == 1 and w.address == FLASH)

    def barrier_opens(self) -> int:
        return sum(1 for w in self.board.writes_to(2, 0) if w.on)


def bridge_yaml(tmp_path: Path, db: DbConfig, key: Path, mqtt_port: int, **extra: Any) -> Path:
    cfg = bridge_cfg(db, key, mqtt_port=mqtt_port, **extra)
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True), allow_unicode=True))
    return path


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    signer = Signer()
    with contextlib.ExitStack() as stack:
        srv = stack.enter_context(server())
        db = stack.enter_context(ejyy_database(srv))
        broker = stack.enter_context(Broker(tmp_path / "broker"))
        e = Ejyy(db)
        stack.callback(e.close)
        e.community()
        e.devices()
        home = e.building(bid=3, number="301")
        port_ = e.building(bid=10, type_=2, number="P-7")
        e.bind(e.user(1042), home)
        e.car(1042, port_, "沪A12345")
        cfg_path = bridge_yaml(tmp_path, db, write_key(tmp_path, signer), broker.port)
        board = RelayBoardSim(device_ids=[1, 2])
        mb_port = free_port()
        server_task = asyncio.create_task(board.serve_tcp("127.0.0.1", mb_port))
        qr = stack.enter_context(PtyPair(tmp_path, "qr"))
        plate = stack.enter_context(PtyPair(tmp_path, "plate"))
        gw_cfg = gateway_config(
            tmp_path,
            signer=signer,
            bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": mb_port, "timeout": 0.5, "retries": 2},
            readers={
                "qr-north": {"type": "serial", "port": str(qr.b), "content": "qr"},
                "plate-in": {"type": "serial", "port": str(plate.b), "content": "plate"},
            },
            door={"readers": ["qr-north"]},
            mqtt={"host": "127.0.0.1", "port": broker.port, "keepalive_s": 2, "reconnect_max_s": 1.0,
                  "health_interval_s": 1.0},
            extra={"barriers": {"car-in": {
                "bus": "b1", "device_id": 2, "zone": "car-north", "direction": "in", "open_coil": 0,
                "close_coil": 1, "pulse_ms": 200, "loop_input": 0, "close_delay_s": 0.2,
                "close_timeout_s": 1.0, "travel_s": 0.3, "readers": ["plate-in"]}}},
        )  # fmt: skip
        await asyncio.sleep(0.2)
        bridge = BridgeProc(cfg_path, tmp_path / "bridge.log")
        stack.callback(bridge.finish)
        gw = Daemon(gw_cfg)
        stack.callback(gw.finish)
        fds = {
            "qr": os.open(qr.a, os.O_RDWR | os.O_NOCTTY),
            "plate": os.open(plate.a, os.O_RDWR | os.O_NOCTTY),
        }
        for fd in fds.values():
            stack.callback(os.close, fd)
        try:
            await gw.wait_for("whitelist_snapshot_applied", timeout=30)
        except AssertionError:
            raise AssertionError(f"no snapshot; bridge log:\n{bridge.text()[-3000:]}") from None
        await gw.wait_for("device_status", device="plate-in", online=True)
        try:
            yield Rig(e, board, gw, bridge, fds, cfg_path, db, signer)
        finally:
            gw.finish()
            bridge.finish()
            server_task.cancel()
            await asyncio.gather(server_task, return_exceptions=True)


def count(e: Ejyy, sql: str, *args: object) -> int:
    return int(e.q(sql, args)[0][0])  # type: ignore[arg-type]


async def test_registered_car_lifts_the_barrier_and_is_logged_once(rig: Rig) -> None:
    assert rig.gw.seen("whitelist_snapshot_applied", entries=1)
    rig.scan("plate", "沪A12345")
    assert await until(lambda: rig.barrier_opens() == 1)
    assert await until(lambda: count(rig.e, "SELECT COUNT(*) FROM ejyy_iot_park_log") == 1)
    assert rig.e.q("SELECT park_id, car_number, gate, is_leave FROM ejyy_iot_park_log") == [
        (1, "沪A12345", "north-in", 0)
    ]
    # the device status made it to ejyy's online columns
    assert await until(lambda: count(rig.e, "SELECT online FROM ejyy_iot_park WHERE id = 1") == 1)
    # an unknown car does not lift it, and a denial is not a passage
    rig.scan("plate", "沪Z99999")
    await rig.gw.wait_for("decision", result="denied")
    assert await until(lambda: count(rig.e, "SELECT COUNT(*) FROM bridge_event") == 2)
    await asyncio.sleep(0.5)
    assert rig.barrier_opens() == 1 and count(rig.e, "SELECT COUNT(*) FROM ejyy_iot_park_log") == 1


async def test_visitor_row_opens_until_it_expires(rig: Rig) -> None:
    vid = rig.e.visitor(3, expire_s=6, car="苏E77777")  # a 6 s booking with a car
    await rig.gw.wait_for("whitelist_delta_applied", timeout=15)
    cfg_con = connect(rig.db)
    try:
        from bridge.config import load_config

        cfg = load_config(rig.cfg_path)
        code = codes.visitor_code(cfg, cfg_con, commands.Signer(cfg.signing_key), vid)
    finally:
        cfg_con.close()
    rig.scan("plate", "苏E77777")
    assert await until(lambda: rig.barrier_opens() == 1)
    rig.scan("qr", code["token"])
    assert await until(lambda: rig.door_flashes() == 1)
    assert await until(
        lambda: count(rig.e, "SELECT COUNT(*) FROM ejyy_iot_entrance_log WHERE vistor_id = %s", vid) == 1
    )
    assert await until(
        lambda: count(rig.e, "SELECT COUNT(*) FROM ejyy_iot_park_log WHERE car_number = '苏E77777'") == 1
    )
    await asyncio.sleep(max(0.0, code["exp"] - time.time()) + 6.5)  # past expiry and the gateway's leeway
    n = len(rig.gw.lines)
    rig.scan("plate", "苏E77777")
    rig.scan("qr", code["token"])
    assert await until(lambda: sum(1 for ln in rig.gw.lines[n:] if ln.get("event") == "decision") >= 2)
    assert {ln.get("reason") for ln in rig.gw.lines[n:] if ln.get("event") == "decision"} <= {
        "expired",
        "unknown_credential",
    }
    await asyncio.sleep(0.5)
    assert rig.barrier_opens() == 1 and rig.door_flashes() == 1
    assert count(rig.e, "SELECT COUNT(*) FROM ejyy_iot_entrance_log") == 1


async def test_remote_open_row_opens_the_door_once(rig: Rig) -> None:
    rid = rig.e.insert(
        "ejyy_community_remote_open_door_log", door_id=1, community_id=1, wechat_mp_user_id=1042
    )
    assert await until(lambda: rig.door_flashes() == 1)
    assert await until(
        lambda: (
            count(rig.e, "SELECT success FROM ejyy_community_remote_open_door_log WHERE id = %s", rid) == 1
        )
    )
    assert rig.e.q("SELECT act, target, by_whom, ok FROM bridge_command") == [
        ("open", "north-gate", "resident:1042", 1)
    ]
    await asyncio.sleep(2.0)  # several poll rounds later: still once
    assert rig.door_flashes() == 1
    # the operator's command line
    # (not subprocess.run: the relay board is served by this test's event loop)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge.cli", "open", "-c", str(rig.cfg_path), "gw-test", "north-gate",
        "--by", "staff:7", cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, (out, err)
    assert await until(lambda: rig.door_flashes() == 2)
    assert count(rig.e, "SELECT COUNT(*) FROM bridge_command WHERE by_whom = 'staff:7' AND ok = 1") == 1


async def test_last_will_sets_devices_offline(rig: Rig) -> None:
    assert await until(lambda: count(rig.e, "SELECT online FROM ejyy_iot_entrance WHERE id = 1") == 1)
    rig.gw.proc.kill()  # no clean goodbye: the broker publishes the Last Will
    assert await until(lambda: count(rig.e, "SELECT online FROM ejyy_iot_entrance WHERE id = 1") == 0, 20)
    assert count(rig.e, "SELECT online FROM ejyy_iot_park WHERE id = 1") == 0
