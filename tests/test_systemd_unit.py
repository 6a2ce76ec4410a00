"""systemd/edge-gateway.service: verified by systemd itself, its exposure as recorded in the docs, and its
command lines starting this checkout's daemon the way systemd would (Type=notify, WatchdogSec=)."""

from __future__ import annotations

import re
import shlex
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from edge.sim.relay_board import RelayBoardSim
from tests.support.gateway import Signer, gateway_config
from tests.support.modbus import eventually, free_port, tcp_board
from tests.support.ptys import PtyPair

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "edge-gateway.service"
DOCS = ROOT / "docs" / "operations.md"
INSTALLED_VENV = "/opt/gate-edge/.venv"
INSTALLED_CONFIG = "/etc/gate-edge/gateway.yaml"

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed"
)


def unit_settings() -> list[tuple[str, str, str]]:
    """(section, key, value) in file order; keys may repeat, as systemd allows."""
    out: list[tuple[str, str, str]] = []
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def setting(key: str) -> str:
    values = [v for s, k, v in unit_settings() if s == "Service" and k == key]
    assert len(values) == 1, f"{key}: {values}"
    return values[0]


def local_copy(tmp_path: Path) -> Path:
    """The unit with its install paths pointing at this checkout's venv (verify checks they exist)."""
    text = UNIT.read_text()
    assert INSTALLED_VENV in text
    path = tmp_path / UNIT.name
    path.write_text(text.replace(INSTALLED_VENV, str(ROOT / ".venv")))
    return path


@needs_systemd_analyze
def test_systemd_analyze_verify_has_nothing_to_say(tmp_path: Path) -> None:
    """verify exits 0 even for an unknown key (it only warns): any line it prints fails the test."""
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(local_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "" and proc.stderr.strip() == "", (
        proc.stdout + proc.stderr
    )


@needs_systemd_analyze
def test_security_exposure_is_at_most_2_0_and_as_documented() -> None:
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--threshold=20", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d) (\w+)", proc.stdout)
    assert found, proc.stdout + proc.stderr
    assert proc.returncode == 0, f"exposure {found[1]} above 2.0:\n{proc.stdout}"
    assert found[2] == "OK"
    documented = re.search(r"overall exposure \*\*(\d+\.\d) OK\*\*", DOCS.read_text())
    assert documented, "docs/operations.md records no exposure figure"
    assert documented[1] == found[1], f"docs say {documented[1]}, systemd-analyze says {found[1]}"


async def test_the_units_command_lines_run_a_notifying_daemon(tmp_path: Path) -> None:
    """ExecStartPre and ExecStart as written (install paths mapped to this checkout), started with the
    environment systemd gives a Type=notify service with WatchdogSec=; stopped with KillSignal= within
    TimeoutStopSec=."""
    assert setting("Type") == "notify" and setting("NotifyAccess") == "main"
    watchdog_s = float(setting("WatchdogSec"))
    stop_s = float(setting("TimeoutStopSec"))
    assert setting("KillSignal") == "SIGTERM"
    board = RelayBoardSim(device_ids=[1])
    port = free_port()
    async with tcp_board(board, port):
        with PtyPair(tmp_path, "card") as cards:
            cfg = gateway_config(
                tmp_path,
                signer=Signer(),
                bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": port, "timeout": 0.3, "retries": 0},
                readers={"card-north": {"type": "serial", "port": str(cards.b), "content": "card"}},
            )

            def argv(key: str) -> list[str]:
                line = setting(key).replace(INSTALLED_VENV, str(ROOT / ".venv"))
                return shlex.split(line.replace(INSTALLED_CONFIG, str(cfg)))

            pre = subprocess.run(argv("ExecStartPre"), capture_output=True, text=True, timeout=60)
            assert pre.returncode == 0, pre.stdout + pre.stderr

            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(str(tmp_path / "notify.sock"))
            sock.settimeout(0.1)
            got: list[str] = []
            halt = threading.Event()

            def pump() -> None:
                while not halt.is_set():
                    try:
                        got.extend(sock.recv(4096).decode().splitlines())
                    except TimeoutError:
                        continue

            reader = threading.Thread(target=pump, daemon=True)
            reader.start()
            env = {
                "PATH": "/usr/bin:/bin",
                "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
                "WATCHDOG_USEC": str(int(watchdog_s * 1e6)),
            }
            log_path = tmp_path / "journal.log"
            with log_path.open("wb") as journal:
                proc = subprocess.Popen(argv("ExecStart"), env=env, stdout=subprocess.DEVNULL, stderr=journal)
            try:
                assert await eventually(lambda: "READY=1" in got, timeout=30), got
                assert await eventually(lambda: "WATCHDOG=1" in got, timeout=watchdog_s), got
                # ExecReload: SIGHUP re-reads the config (edge/reload.py) and the gate runs on
                reload = setting("ExecReload").replace("$MAINPID", str(proc.pid))
                assert subprocess.run(shlex.split(reload), timeout=10).returncode == 0
                assert await eventually(lambda: "config_reloaded" in log_path.read_text(), timeout=10)
                assert proc.poll() is None
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(stop_s) == 0  # within TimeoutStopSec, else TimeoutExpired
                assert "STOPPING=1" in got, got
                # journald gets one JSON object per line (ExecStart asks for --log-format json)
                lines = [ln for ln in log_path.read_text().splitlines() if ln.strip()]
                assert lines and all(ln.startswith("{") for ln in lines), lines[:5]
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
                halt.set()
                reader.join(2)
                sock.close()
