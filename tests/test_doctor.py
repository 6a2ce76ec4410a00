"""`edge doctor` as the installer runs it: a real subprocess against real boards, ptys, a real broker
and a real `edge run`; assertions on the JSON or table it prints and its exit code."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import sys
from pathlib import Path
from typing import Any

import pytest
import serial

from edge.sim.relay_board import RelayBoardSim
from tests.support.broker import Broker, make_tls_files
from tests.support.daemon import ROOT, Daemon
from tests.support.gateway import Signer, gateway_config
from tests.support.modbus import eventually, free_port, rtu_board, tcp_board
from tests.support.ptys import PtyPair

pytestmark = pytest.mark.timeout(90)


async def doctor(cfg: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`edge doctor` as a child process; the test's loop keeps serving the simulated boards meanwhile."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge.cli", "doctor", "-c", str(cfg), *args,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def doctor_json(cfg: Path, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    rc, out, err = await doctor(cfg, "--json", env=env)
    assert "Traceback" not in err, err
    return rc, json.loads(out)


def check(report: dict[str, Any], name: str) -> dict[str, Any]:
    found = [c for c in report["checks"] if c["name"] == name]
    assert found, f"no check {name!r} in {[c['name'] for c in report['checks']]}"
    return found[0]


def two_doors(port: int, readers: dict[str, dict[str, Any]], tmp_path: Path, **kw: Any) -> Path:
    """Door north-gate on unit 1 (served) and door side-gate on unit 2 of the same TCP bus."""
    doors = {
        "north-gate": {"bus": "b1", "device_id": 1, "zone": "north-gate", "readers": list(readers)},
        "side-gate": {"bus": "b1", "device_id": 2, "zone": "side-gate"},
    }
    bus = {"type": "modbus_tcp", "host": "127.0.0.1", "port": port, "timeout": 0.3}
    return gateway_config(tmp_path, signer=Signer(), bus=bus, readers=readers, extra={"doors": doors}, **kw)


async def test_without_daemon_probes_units_readers_and_data(tmp_path: Path) -> None:
    port = free_port()
    sim = RelayBoardSim(device_ids=(1,))  # unit 2 is wired in the config but silent
    with PtyPair(tmp_path, "qr") as pty:
        readers = {
            "qr1": {"type": "serial", "port": str(pty.a), "content": "qr"},
            "nfc1": {"type": "nfc", "device": "usb:ffff:ffff"},
            "cam1": {"type": "camera", "source": str(tmp_path / "no-such.avi")},
        }
        cfg = two_doors(port, readers, tmp_path)
        entries = tmp_path / "wl.json"
        entries.write_text(
            json.dumps([{"kind": "card", "value": "04A1B2", "subject": "r:1", "zones": ["*"]}])
        )
        imp = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edge.cli", "whitelist", "import", "-c", str(cfg), str(entries),
            "--version", "7", cwd=ROOT, stdout=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert await imp.wait() == 0
        async with tcp_board(sim, port):
            rc, rep = await doctor_json(cfg)
            table_rc, table, _ = await doctor(cfg)
    assert rc == 1 and table_rc == 1
    assert rep["mode"] == "probe" and rep["ok"] is False
    assert check(rep, "daemon")["status"] == "warn"
    u1, u2 = check(rep, "modbus b1 unit 1"), check(rep, "modbus b1 unit 2")
    assert u1["status"] == "ok" and isinstance(u1["rtt_ms"], float) and "north-gate" in u1["detail"]
    assert u2["status"] == "fail" and "no answer" in u2["detail"] and "side-gate" in u2["detail"]
    assert check(rep, "port of reader qr1")["status"] == "ok"
    assert check(rep, "reader qr1 (serial)")["status"] == "ok"
    nfc = check(rep, "reader nfc1 (nfc)")
    assert nfc["status"] == "fail" and "usb:ffff:ffff" in nfc["detail"]
    cam = check(rep, "reader cam1 (camera)")
    assert cam["status"] == "fail" and "no-such.avi" in cam["detail"]
    wl = check(rep, "whitelist")
    assert wl["status"] == "ok" and (wl["version"], wl["entries"]) == (7, 1)
    assert check(rep, "cloud broker")["status"] == "ok"  # no mqtt section: offline mode is a choice
    assert check(rep, "disk")["free_bytes"] > 0
    from edge.clock import kernel_clock_synced

    clock = check(rep, "clock")  # the test config sets require_clock_sync false: unsynced only warns
    assert clock["synced"] == kernel_clock_synced() and clock["status"] == (
        "ok" if clock["synced"] else "warn"
    )
    # the table says the same to a person
    lines = table.splitlines()
    assert lines[0].split() == ["CHECK", "STATUS", "DETAIL"]
    assert any(ln.startswith("modbus b1 unit 2") and " FAIL " in ln for ln in lines)
    assert any(ln.startswith("modbus b1 unit 1") and " ok " in ln for ln in lines)
    assert lines[-1].endswith(f"{rep['summary']['fail']} fail")


async def test_camera_frame_and_nfc_reader_found(tmp_path: Path) -> None:
    from edge.sim.video import blank_frame, write_video

    port = free_port()
    video = write_video(tmp_path / "cam.avi", [blank_frame()] * 5, 10)
    readers = {
        "cam1": {"type": "camera", "source": str(video)},
        "nfc1": {"type": "nfc", "device": "udp:127.0.0.1:0"},
    }
    cfg = two_doors(port, readers, tmp_path)
    sim = RelayBoardSim(device_ids=(1, 2))
    async with tcp_board(sim, port):
        rc, rep = await doctor_json(cfg)
    cam = check(rep, "reader cam1 (camera)")
    assert cam["status"] == "ok" and (cam["width"], cam["height"]) == (640, 480)
    assert check(rep, "reader nfc1 (nfc)")["status"] == "ok"
    assert check(rep, "modbus b1 unit 2")["status"] == "ok"
    # all hardware answers: only the whitelist (none yet) and the daemon (not running) may warn
    assert rc == 0, [c for c in rep["checks"] if c["status"] == "fail"]


async def test_with_daemon_asks_it_and_never_opens_its_rtu_port(tmp_path: Path) -> None:
    sim = RelayBoardSim(device_ids=(1,))
    with PtyPair(tmp_path, "rs485") as line, PtyPair(tmp_path, "qr") as qr:
        bus = {
            "type": "modbus_rtu",
            "port": str(line.b),
            "timeout": 0.3,
            "keepalive_s": 0.3,
            "offline_after": 1,
        }
        readers = {"qr1": {"type": "serial", "port": str(qr.a), "content": "qr"}}
        cfg = gateway_config(tmp_path, signer=Signer(), bus=bus, readers=readers)
        async with rtu_board(sim, str(line.a)):
            d = Daemon(cfg)
            try:
                await d.wait_for("gateway_started")
                rc, rep = await doctor_json(cfg)
                assert rep["mode"] == "daemon", rep
                assert check(rep, "daemon")["status"] == "ok"
                unit = check(rep, "modbus b1 unit 1")
                assert unit["status"] == "ok" and unit["rtt_ms"] > 0 and "(daemon)" in unit["detail"]
                assert check(rep, "reader qr1 (serial)")["status"] == "ok"
                assert check(rep, "port of bus b1")["status"] == "ok"  # stat only: the daemon holds it
                assert rc == 0, [c for c in rep["checks"] if c["status"] == "fail"]
                # the daemon still owns the line: doctor did not take or break it
                assert not d.seen("modbus_device_offline")
                sim.remove_device(1)
                await d.wait_for("modbus_device_offline", device_id=1)
                rc, rep = await doctor_json(cfg)
                unit = check(rep, "modbus b1 unit 1")
                assert rc == 1 and unit["status"] == "fail" and "offline" in unit["detail"]
            finally:
                d.finish()
        # no daemon, but someone else holds the RS-485 port: doctor reports it and leaves it alone
        with serial.Serial(str(line.b), exclusive=True):
            rc, rep = await doctor_json(cfg)
    assert rep["mode"] == "probe"
    unit = check(rep, "modbus b1 unit 1")
    assert rc == 1 and unit["status"] == "fail" and "held by another process" in unit["detail"]


async def test_service_user_without_access_to_the_port(tmp_path: Path) -> None:
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody here")
    port = free_port()
    with PtyPair(tmp_path, "qr") as pty:
        os.chmod(os.path.realpath(pty.a), 0o600)  # as a fresh ttyUSB without a udev rule
        cfg = two_doors(port, {"qr1": {"type": "serial", "port": str(pty.a), "content": "qr"}}, tmp_path)
        async with tcp_board(RelayBoardSim(device_ids=(1, 2)), port):
            rc, rep = await doctor_json(cfg, env={"EDGE_SERVICE_USER": "nobody"})
            _, ok_rep = await doctor_json(cfg, env={"EDGE_SERVICE_USER": "no-such-user-here"})
    port_check = check(rep, "port of reader qr1")
    assert rc == 1 and port_check["status"] == "fail"
    assert "NOT read-write for nobody" in port_check["detail"] and "MODE=0660" in port_check["detail"]
    assert check(ok_rep, "port of reader qr1")["status"] == "ok"  # only this user counts then


async def test_missing_port_fails(tmp_path: Path) -> None:
    bus = {"type": "modbus_rtu", "port": str(tmp_path / "ttyUSB9")}
    cfg = gateway_config(tmp_path, signer=Signer(), bus=bus, readers={})
    rc, rep = await doctor_json(cfg)
    assert rc == 1
    assert (
        check(rep, "port of bus b1")["status"] == "fail"
        and "missing" in check(rep, "port of bus b1")["detail"]
    )
    assert check(rep, "modbus b1 unit 1")["status"] == "fail"


async def test_broker_tls_and_login(tmp_path: Path) -> None:
    certs = make_tls_files(tmp_path / "certs")
    port = free_port()
    with Broker(tmp_path / "b", tls=certs, passwords={"gw": "right"}) as broker:

        def cfg_with(password: str, ca: Path, sub: str) -> Path:
            d = tmp_path / sub
            d.mkdir()
            mqtt = {"host": "127.0.0.1", "port": broker.port, "username": "gw", "password": password,
                    "tls": {"ca": str(ca)}, "connect_timeout_s": 3}  # fmt: skip
            return two_doors(port, {}, d, mqtt=mqtt)

        async with tcp_board(RelayBoardSim(device_ids=(1, 2)), port):
            _, good = await doctor_json(cfg_with("right", certs.ca, "good"))
            rc_bad, bad = await doctor_json(cfg_with("wrong", certs.ca, "bad"))
            rc_ca, wrong_ca = await doctor_json(cfg_with("right", certs.other_ca, "ca"))
        broker_port = broker.port
    ok = check(good, "cloud broker")
    assert ok["status"] == "ok" and "TLS" in ok["detail"] and "logged in as gw" in ok["detail"]
    assert rc_bad == 1 and "mqtt.username" in check(bad, "cloud broker")["detail"]
    assert rc_ca == 1 and "mqtt.tls.ca" in check(wrong_ca, "cloud broker")["detail"]
    _, gone = await doctor_json(tmp_path / "good" / "gateway.yaml")  # the broker has stopped
    assert check(gone, "cloud broker")["status"] == "fail"
    assert f"127.0.0.1:{broker_port}" in check(gone, "cloud broker")["detail"]


async def test_bad_config_exit_2_with_a_clear_answer(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("gateway:\n  site: c42\n  id: gw\n  nonsense: 1\n")
    rc, out, err = await doctor(bad)
    assert rc == 2 and "Traceback" not in err
    assert "bad.yaml:4: gateway.nonsense: unknown key" in out
    rc, rep = await doctor_json(tmp_path / "absent.yaml")
    assert rc == 2 and rep["ok"] is False and check(rep, "config")["status"] == "fail"
    assert "cannot read" in check(rep, "config")["detail"]


async def test_outbox_depth_is_reported(tmp_path: Path) -> None:
    from edge.outbox import Outbox

    port = free_port()
    cfg = two_doors(port, {}, tmp_path)
    (tmp_path / "data").mkdir()
    ob = Outbox(tmp_path / "data" / "outbox.db")
    for i in range(3):
        ob.append(Outbox.make_event("north-gate", "remote", f"c{i}", "granted", "ok"))
    ob.close()
    async with tcp_board(RelayBoardSim(device_ids=(1, 2)), port):
        assert await eventually(lambda: True)
        _, rep = await doctor_json(cfg)
    box = check(rep, "outbox")
    assert box["events"] == 3 and box["oldest_age_s"] is not None and "3 events waiting" in box["detail"]
