"""`edge demo`, run as a person runs it: offline, and with a private Mosquitto playing the cloud."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from edge.config import load_config
from edge.model import Event
from edge.sim.demo_broker import find_mosquitto
from tests.support.broker import Broker
from tests.support.gateway import free_port

ROOT = Path(__file__).resolve().parent.parent
needs_mosquitto = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")


def demo_config(tmp_path: Path) -> Path:
    """config/ copied (paths stay relative to it, so data lands in tmp), relay board on a free port."""
    shutil.copytree(ROOT / "config", tmp_path / "config")
    cfg = tmp_path / "config" / "demo.yaml"
    text = cfg.read_text()
    assert "port: 15020" in text
    cfg.write_text(text.replace("port: 15020", f"port: {free_port()}"))
    return cfg


def demo(cfg: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, "-m", "edge.cli", "demo", "-c", str(cfg), "--once", *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def assert_gate_lines(stdout: str) -> None:
    assert "GRANTED visitor:88 (reason ok)" in stdout
    assert "lock RELEASED" in stdout
    assert "DENIED (reason bad_signature)" in stdout
    assert "DENIED (reason malformed)" in stdout
    assert "GRANTED resident:1042 (reason ok)" in stdout
    assert "DENIED resident:77 (reason blocked)" in stdout
    # the lift: the resident's floor enabled at the board, then disabled after grant_s
    assert "tower-1: GRANTED resident:1042 (reason ok)" in stdout
    assert "[relay board] tower-1: floor 3 ENABLED" in stdout
    assert "[relay board] tower-1: floor 3 disabled" in stdout
    # the car: the plate opens the arm, which closes only once the loop is clear
    assert "car-in: GRANTED visitor:301 (reason ok)" in stdout
    opened = stdout.index("[relay board] car-in: OPEN contact: arm goes UP")
    cleared = stdout.index("[world] the loop of car-in is clear")
    closed = stdout.index("[relay board] car-in: CLOSE contact: arm goes DOWN")
    assert opened < cleared < closed
    assert "CLOSE only 1." in stdout  # close_delay_s 1.0 after the loop cleared
    # the fire: everything released by the board, then back
    assert "gateway: ALARM (reason fire_alarm)" in stdout
    assert "[relay board] tower-1: floors 2, 3, 4, 5 ENABLED" in stdout
    assert "[relay board] north-gate: lock released" in stdout
    assert "gateway: INFO (reason fire_cleared)" in stdout
    assert "[relay board] tower-1: floors 2, 3, 4, 5 disabled" in stdout
    assert "[relay board] north-gate: locked" in stdout
    assert "FAILED" not in stdout
    assert stdout.count("[check] ") == 6
    assert "scripted demo done: every decision as expected" in stdout


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
    except OSError:
        return True
    return False


@needs_mosquitto
def test_demo_with_broker_plays_the_cloud(tmp_path: Path) -> None:
    cfg = demo_config(tmp_path)
    yaml_before = cfg.read_bytes()
    out = demo(cfg).stdout
    assert_gate_lines(out)
    port = int(re.search(r"started a private Mosquitto on 127\.0\.0\.1:(\d+)", out).group(1))  # type: ignore[union-attr]
    # the whitelist comes from the cloud, not from the file
    assert "imported the demo whitelist" not in out
    assert "sent the whitelist as snapshot v1 (5 entries)" in out
    assert "[gateway] whitelist v1 from the cloud is active: 5 entries" in out
    # the signed remote open reaches the door and its result reaches the cloud
    assert "GRANTED staff:7 by remote command (reason ok)" in out
    assert "[cloud] R/cmd/result: ok" in out
    assert out.count("lock RELEASED") == 3  # visitor, resident card, remote open
    # 6 door reader decisions, the lift, the car, the remote open, fire and fire cleared: none older
    assert "[cloud] received 11 events from this run\n" in out
    assert "[cloud] all 11 match the gateway's decisions" in out
    assert "the cloud got them all" in out
    # the broker was private to the run: gone afterwards, its state kept in the data dir
    assert refused(port)
    data = tmp_path / "var" / "demo" / "mosquitto"
    assert f"listener {port} 127.0.0.1" in (data / "mosquitto.conf").read_text()
    assert (data / "mosquitto.db").exists()
    assert cfg.read_bytes() == yaml_before  # the YAML stays offline


@needs_mosquitto
def test_offline_then_cloud_gets_the_backlog(tmp_path: Path) -> None:
    cfg = demo_config(tmp_path)
    out = demo(cfg, "--no-broker").stdout
    assert_gate_lines(out)
    assert "--no-broker: running offline" in out
    assert "imported the demo whitelist (5 entries)" in out
    assert "[cloud]" not in out
    assert not (tmp_path / "var" / "demo" / "mosquitto").exists()
    # next run with the broker: the 10 offline events were kept and now reach the cloud too
    out = demo(cfg).stdout
    assert_gate_lines(out)
    assert "asks for the whitelist (has v0)" in out  # a file import is not the cloud's list
    assert "sent the whitelist as snapshot v1 (5 entries)" in out
    assert "[cloud] received 11 events from this run (+10 older ones from the gateway's outbox)" in out
    assert "[cloud] all 11 match the gateway's decisions" in out


def test_no_mosquitto_means_offline(tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    import edge.sim.demo_broker
    from edge.demo_run import _start_broker

    monkeypatch.setattr(edge.sim.demo_broker, "find_mosquitto", lambda: None)
    cfg = load_config(demo_config(tmp_path))
    broker, run_cfg = _start_broker(cfg, no_broker=False)
    assert broker is None and run_cfg.mqtt is None
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["no Mosquitto installed: running offline; install mosquitto to see the cloud part too"]


@needs_mosquitto
def test_cloud_check_fails_when_an_event_is_missing(tmp_path: Path) -> None:
    """What makes `edge demo --once` exit 1 when a decision never reached the cloud."""
    from edge.config import MqttSection
    from edge.sim.demo_cloud import DemoCloud

    said: list[str] = []
    with Broker(tmp_path / "broker") as b:
        cfg = load_config(demo_config(tmp_path))
        cfg = cfg.model_copy(update={"mqtt": MqttSection(host="127.0.0.1", port=b.port)})
        cloud = DemoCloud(cfg, said.append)
        never_sent = Event("01TESTNEVERSENT", 0, "north-gate", None, "qr", "", None, "granted", "ok", None)

        async def check() -> bool:
            await cloud.connect()
            try:
                return await cloud.check_events([never_sent], timeout=1)
            finally:
                await cloud.close()

        assert asyncio.run(check()) is False
    assert "[cloud] MISMATCH: 1 missing, 0 different from the gateway's" in said[-1]


def test_arm_problem_reads_the_board_writes() -> None:
    """What makes the car act fail: a CLOSE while the car is still on the loop, or no OPEN at all."""
    from edge.sim.demo_story import arm_problem
    from edge.sim.relay_board import COIL_OFF, COIL_ON, CoilWrite

    def w(t: float, coil: int, on: bool) -> CoilWrite:
        return CoilWrite(t, 2, coil, COIL_ON if on else COIL_OFF)

    good = [w(1.0, 0, True), w(1.5, 0, False), w(3.1, 1, True), w(3.6, 1, False)]
    assert arm_problem(good, 2, 0, 1, car_on=0.5, car_off=2.0) is None
    early = [w(1.0, 0, True), w(1.5, 1, True), w(3.1, 1, True)]
    assert arm_problem(early, 2, 0, 1, car_on=0.5, car_off=2.0) == (
        "CLOSE pulsed 0.5 s before the car had left the loop"
    )
    assert arm_problem(good[2:], 2, 0, 1, car_on=0.5, car_off=2.0) == "no OPEN pulse reached the board"
    assert arm_problem(good[:2], 2, 0, 1, car_on=0.5, car_off=2.0) == (
        "the arm was never closed after the car left"
    )
    assert arm_problem(good, 3, 0, 1, car_on=0.5, car_off=2.0) == "no OPEN pulse reached the board"


def test_sim_boards_follow_the_config(tmp_path: Path) -> None:
    """Units from every model naming a board; a quiet site at boot: door closed, loop clear, no fire."""
    from edge.sim.hardware import SimHardware
    from edge.sim.wiring import board_units

    cfg = load_config(demo_config(tmp_path))
    assert board_units(cfg) == {"relays": {1, 2, 3}}  # door + fire input, barrier, lift
    board = SimHardware(cfg, lambda _line: None).boards["relays"]
    assert board.device_ids() == [1, 2, 3]
    assert board.input(1, 0) is True  # door_sensor_closed_when: true
    assert board.input(2, 0) is False  # loop_present_when: true, no car
    assert board.input(1, 7) is False  # fire-panel active_when: true, no fire


async def test_prompt_commands_drive_the_world(tmp_path: Path) -> None:
    """The `edge demo` prompt against the real gateway: each command moves the simulated world and the
    board's own writes (not the product's state) show the result."""
    from edge.app import Gateway
    from edge.runner import read_entries
    from edge.sim.demo_story import eventually
    from edge.sim.hardware import DEMO_WHITELIST, SimHardware
    from edge.sim.prompt import handle
    from edge.store import entry_from_wire

    cfg = load_config(demo_config(tmp_path))
    said: list[str] = []
    hw = SimHardware(cfg, said.append)
    board = hw.boards["relays"]
    await hw.start()
    gw = Gateway(cfg)
    gw.store.import_entries([entry_from_wire(e) for e in read_entries(str(DEMO_WHITELIST))])
    events: list[Event] = []
    gw.event_listeners.append(events.append)
    await gw.start()

    def got(device: str, reason: str) -> bool:
        return any(e.device == device and e.reason == reason for e in events)

    def switched(unit: int, coil: int, on: bool, after: float) -> bool:
        return any(w.t >= after and w.on == on for w in board.writes_to(unit, coil))

    try:
        assert await eventually(lambda: all(d.online for d in gw.devices.values()), 5)
        handle(hw, "help")
        assert any("car-gone" in line and "lift-card HEX" in line for line in said)

        t = board.writes[-1].t if board.writes else 0.0
        handle(hw, "car")
        assert await eventually(lambda: switched(2, 0, True, t), 5), said
        assert got("car-in", "ok") and "  [world] a car is on the loop of car-in" in said
        await asyncio.sleep(1.5)
        assert not switched(2, 1, True, t)  # the car is still on the loop: no CLOSE
        handle(hw, "car-gone")
        assert await eventually(lambda: switched(2, 1, True, t), 4), said
        assert "  [relay board] car-in: CLOSE contact: arm goes DOWN" in said

        handle(hw, "lift-card 04A1B2C3")
        assert await eventually(lambda: board.coil(3, 2), 5), said  # floor 3 of the resident
        assert "  [relay board] tower-1: floor 3 ENABLED" in said

        handle(hw, "door")  # opened with no grant: the contact read closed until now
        assert await eventually(lambda: got("north-gate", "door_forced"), 5), [e.reason for e in events]
        handle(hw, "door")
        assert "  [world] door north-gate OPENED" in said and "  [world] door north-gate closed" in said

        handle(hw, "fire")
        assert await eventually(lambda: board.coil(1, 0) and board.coil(2, 0) and board.coil(3, 4), 5), said
        assert got("gateway", "fire_alarm")
        handle(hw, "fire-clear")
        assert await eventually(lambda: not board.coil(1, 0) and not board.coil(2, 0), 5), said
        assert got("gateway", "fire_cleared")

        on = [c for c in range(5) if board.coil(3, c)]  # lobby, and floor 3 while its grant runs
        handle(hw, "boards")
        assert 0 in on and f"  unit 3: coils on {on}, inputs on []" in said
        handle(hw, "read nosuch X")
        assert said[-1] == "  (no simulated reader nosuch in this config)"
    finally:
        await gw.stop()
        await hw.stop()
