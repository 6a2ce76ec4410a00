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
    assert "sent the whitelist as snapshot v1 (4 entries)" in out
    assert "[gateway] whitelist v1 from the cloud is active: 4 entries" in out
    # the signed remote open reaches the door and its result reaches the cloud
    assert "GRANTED staff:7 by remote command (reason ok)" in out
    assert "[cloud] R/cmd/result: ok" in out
    assert out.count("lock RELEASED") == 3  # visitor, resident card, remote open
    # 6 scanner decisions + the remote open, none from earlier runs
    assert "[cloud] received 7 events from this run\n" in out
    assert "[cloud] all 7 match the gateway's decisions" in out
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
    assert "imported the demo whitelist (4 entries)" in out
    assert "[cloud]" not in out
    assert not (tmp_path / "var" / "demo" / "mosquitto").exists()
    # next run with the broker: the 6 offline decisions were kept and now reach the cloud too
    out = demo(cfg).stdout
    assert_gate_lines(out)
    assert "asks for the whitelist (has v0)" in out  # a file import is not the cloud's list
    assert "sent the whitelist as snapshot v1 (4 entries)" in out
    assert "[cloud] received 7 events from this run (+6 older ones from the gateway's outbox)" in out
    assert "[cloud] all 7 match the gateway's decisions" in out


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
