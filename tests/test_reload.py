"""Live reload (issue 9) against a real `edge run`: SIGHUP and `edge reload` rebuild what changed only,
refuse a bad file with its line while the old config keeps deciding, and never touch whitelist or outbox."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from edge.sim.relay_board import RelayBoardSim
from tests.support.daemon import ROOT, Daemon
from tests.support.gateway import Signer, free_port, gateway_config
from tests.support.ptys import PtyPair


def _events(data: Path) -> int:
    con = sqlite3.connect(data / "outbox.db")
    try:
        return con.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        con.close()


def _edit(path: Path, change: Any) -> None:
    cfg = yaml.safe_load(path.read_text())
    change(cfg)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def _edge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


async def _opened(board: RelayBoardSim, unit: int, coil: int, after: float) -> bool:
    for _ in range(200):
        if any(w.t >= after and w.value == 0xFF00 for w in board.writes_to(unit, coil)):
            return True
        await asyncio.sleep(0.05)
    return False


async def _relocked(board: RelayBoardSim, unit: int, coil: int) -> bool:
    for _ in range(200):
        if not board.coil(unit, coil):
            return True
        await asyncio.sleep(0.05)
    return False


async def test_reload_rebuilds_only_what_changed_and_refuses_bad_files(tmp_path: Path) -> None:
    signer = Signer()
    port = free_port()
    board = RelayBoardSim(device_ids=[1, 2])
    server = asyncio.create_task(board.serve_tcp("127.0.0.1", port))
    north, south = PtyPair(tmp_path, "north").start(), PtyPair(tmp_path, "south").start()
    cfg = gateway_config(
        tmp_path,
        signer=signer,
        bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": port, "timeout": 0.3, "retries": 0},
        readers={"qr-north": {"type": "serial", "port": str(north.b), "content": "qr"}},
        door={"pulse_ms": 200, "pulse_mode": "coil"},
    )

    def add_south(c: dict[str, Any]) -> None:
        c["doors"]["south-gate"] = {"bus": "b1", "device_id": 2, "zone": "south-gate", "lock_coil": 0,
                                    "pulse_ms": 200, "pulse_mode": "coil", "readers": ["qr-south"]}  # fmt: skip
        c["readers"]["qr-south"] = {"type": "serial", "port": str(south.b), "content": "qr"}

    _edit(cfg, add_south)
    fd_n = os.open(north.a, os.O_RDWR | os.O_NOCTTY)
    fd_s = os.open(south.a, os.O_RDWR | os.O_NOCTTY)
    gw = Daemon(cfg)
    try:
        await gw.wait_for("device_status", device="qr-north", online=True)
        await gw.wait_for("device_status", device="qr-south", online=True)
        t = board.writes[-1].t
        os.write(fd_n, signer.code("before", zones=["north-gate"]).encode() + b"\r")
        assert await _opened(board, 1, 0, t), "the north door did not open before any reload"
        await gw.wait_for("decision", credential="before")
        events_before = _events(tmp_path / "data")

        # 1. the north door moves to coil 3: only north-gate is rebuilt; south and both readers run on
        _edit(cfg, lambda c: c["doors"]["north-gate"].update(lock_coil=3))
        mark = len(gw.lines)
        gw.proc.send_signal(signal.SIGHUP)
        await gw.wait_for("config_reloaded")
        done = next(ln for ln in gw.lines[mark:] if ln.get("event") == "config_reloaded")
        assert done["changed"] == {"devices": ["north-gate"], "readers": [], "sections": []}, done
        after = gw.lines[mark:]
        started = [ln.get("door") or ln.get("device") for ln in after if ln.get("event") == "door_started"]
        assert started == ["north-gate"], started  # south-gate kept running, never restarted
        assert not [ln for ln in after if ln.get("event") in ("reader_online", "reader_stopped")]
        t = board.writes[-1].t
        os.write(fd_n, signer.code("moved", zones=["north-gate"]).encode() + b"\r")
        assert await _opened(board, 1, 3, t), "the rebuilt door did not drive its new coil"
        assert not any(w.t >= t and w.value == 0xFF00 for w in board.writes_to(1, 0)), "old coil driven"
        os.write(fd_s, signer.code("south", zones=["south-gate"]).encode() + b"\r")
        assert await _opened(board, 2, 0, t), "the untouched door stopped working"
        await gw.wait_for("decision", credential="south")
        assert _events(tmp_path / "data") >= events_before + 2  # the outbox kept what it had

        # 2. a typo: refused with file and line, the running config keeps deciding
        good = cfg.read_text()
        cfg.write_text(good.replace("pulse_ms: 200", "pulse_msx: 200", 1))
        mark = len(gw.lines)
        gw.proc.send_signal(signal.SIGHUP)
        await gw.wait_for("config_reload_refused")
        refused = next(ln for ln in gw.lines[mark:] if ln.get("event") == "config_reload_refused")
        assert refused["error"] == "config_invalid" and "pulse_msx" in str(refused["detail"]), refused
        assert re.search(rf"{re.escape(str(cfg))}:\d+: doors.north-gate.pulse_msx", refused["detail"]), refused
        assert await _relocked(board, 1, 3)  # a grant on a released lock only moves its relock time
        t = board.writes[-1].t
        os.write(fd_n, signer.code("still", zones=["north-gate"]).encode() + b"\r")
        assert await _opened(board, 1, 3, t), "a refused reload broke the running config"

        # 3. `edge reload` through the control socket: a reader moves to a new port, then a restart-only change
        cfg.write_text(good)
        moved = PtyPair(tmp_path, "north2").start()
        try:
            _edit(cfg, lambda c: c["readers"]["qr-north"].update(port=str(moved.b)))
            r = await asyncio.to_thread(_edge, "reload", "-c", str(cfg))
            assert r.returncode == 0, r.stderr
            assert r.stdout.startswith("reloaded in ") and "readers qr-north" in r.stdout, r.stdout
            await gw.wait_for("reader_online", reader="qr-north", port=str(moved.b))
            fd_m = os.open(moved.a, os.O_RDWR | os.O_NOCTTY)
            try:
                assert await _relocked(board, 1, 3)
                t = board.writes[-1].t
                os.write(fd_m, signer.code("newport", zones=["north-gate"]).encode() + b"\r")
                assert await _opened(board, 1, 3, t), "the rebuilt reader does not present"
            finally:
                os.close(fd_m)
            _edit(cfg, lambda c: c.setdefault("outbox", {}).update(max_events=5000))
            r = await asyncio.to_thread(_edge, "reload", "-c", str(cfg))
            assert r.returncode == 1 and "restart_required" in r.stderr and "outbox" in r.stderr, r
            assert "keeps running with its previous config" in r.stderr
        finally:
            moved.stop()
        gw.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(gw.proc.wait, 20) == 0
        assert not [ln for ln in gw.lines if "Traceback" in str(ln)]
    finally:
        gw.finish()
        os.close(fd_n)
        os.close(fd_s)
        north.stop()
        south.stop()
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)


async def test_rebuilt_devices_leave_no_bus_status_listener_behind(tmp_path: Path) -> None:
    """A door, a barrier and a lift rebuilt by reloads take their bus listeners with them: before, each
    rebuild left the old device subscribed (guarded, so harmless, but a leak on every reload)."""
    from edge.app import Gateway
    from edge.config import load_config
    from edge.reload import reload
    from tests.support.modbus import eventually, tcp_board

    board = RelayBoardSim(device_ids=[1, 2, 3])
    port = free_port()
    barrier = {"bus": "b1", "device_id": 2, "zone": "car", "direction": "in", "open_coil": 0, "close_coil": 1,
               "loop_input": 0}  # fmt: skip
    lift = {"zone": "tower", "floor_outputs": {1: {"bus": "b1", "device_id": 3, "coil": 0}}}
    async with tcp_board(board, port):
        cfg = gateway_config(
            tmp_path, signer=Signer(), readers={}, door={"pulse_ms": 200, "pulse_mode": "coil"},
            bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": port, "timeout": 0.3, "retries": 0},
            extra={"barriers": {"car-in": barrier}, "elevators": {"tower-1": lift}},
        )  # fmt: skip
        gw = Gateway(load_config(cfg))
        await gw.start()
        try:
            bus = gw.buses["b1"]
            listeners = len(bus._listeners)
            for n in range(1, 4):

                def change(c: dict[str, Any], n: int = n) -> None:
                    c["doors"]["north-gate"]["lock_coil"] = n
                    c["barriers"]["car-in"]["pulse_ms"] = 300 + n
                    c["elevators"]["tower-1"]["grant_s"] = 10 + n

                _edit(cfg, change)
                result = await reload(gw, cfg)
                assert result["ok"], result
                assert result["changed"]["devices"] == ["car-in", "north-gate", "tower-1"], result
            assert len(bus._listeners) == listeners
            assert await eventually(lambda: all(d.online for d in gw.devices.values()))
        finally:
            await gw.stop()
