"""Config loading: good files explain themselves, bad ones name the key, the file and the line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent
GOOD = """\
gateway:
  site: c42
  id: gw-1
  timezone: Asia/Shanghai
  data_dir: ./data
trust:
  keys:
    k1: LuviwDTQSEiiEtEw2gwg0HLRDqNnJzToOQ41qmaSKZQ
buses:
  rtu:
    type: modbus_rtu
    port: /dev/ttyUSB0
    baud: 9600
    parity: E
  tcp: {type: modbus_tcp, host: 127.0.0.1, port: 5020}
doors:
  d1:
    bus: rtu
    device_id: 3
    zone: north-gate
    readers: [r1]
readers:
  r1: {type: serial, port: ./scanner, content: qr}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "gw.yaml"
    p.write_text(text)
    return p


def problems(tmp_path: Path, text: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, text))
    return exc.value.problems


def test_good_config_and_relative_paths(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.gateway.data_dir == tmp_path / "data"
    assert cfg.readers["r1"].port == str(tmp_path / "scanner")
    assert cfg.buses["rtu"].parity == "E"
    assert cfg.trust.max_lifetime_s.resident == 300 and cfg.trust.leeway_s == 5
    assert cfg.mqtt is None and cfg.reader_door() == {"r1": "d1"}


def test_errors_name_key_and_line(tmp_path: Path) -> None:
    bad = GOOD.replace("baud: 9600", "baud: fast").replace("timezone: Asia/Shanghai", "timezone: Mars/Base")
    got = {(line, key) for line, key, _ in problems(tmp_path, bad)}
    assert (4, "gateway.timezone") in got
    assert (13, "buses.rtu.baud") in got


def test_unknown_key_is_a_typo(tmp_path: Path) -> None:
    [(line, key, msg)] = problems(tmp_path, GOOD.replace("    zone: north-gate", "    zone: n\n    zonee: x"))
    assert (line, key) == (21, "doors.d1.zonee") and "unknown key" in msg


def test_bad_key_material(tmp_path: Path) -> None:
    [(line, key, msg)] = problems(
        tmp_path, GOOD.replace("LuviwDTQSEiiEtEw2gwg0HLRDqNnJzToOQ41qmaSKZQ", "abc")
    )
    assert (line, key) == (7, "trust.keys") and "32 bytes" in msg


def test_dangling_references(tmp_path: Path) -> None:
    [(line, key, msg)] = problems(tmp_path, GOOD.replace("bus: rtu", "bus: nope"))
    assert (line, key) == (18, "doors.d1.bus") and "nope" in msg
    [(line, key, msg)] = problems(tmp_path, GOOD.replace("readers: [r1]", "readers: [r1, r2]"))
    assert key == "doors.d1.readers[1]" and line == 21


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    [(line, key, msg)] = problems(tmp_path, GOOD.replace("  id: gw-1", "  id: [gw-1"))
    assert line is not None and "YAML" in msg


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")


def test_check_config_cli(tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "edge.cli", "check-config", str(ROOT / "config/demo.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert "door north-gate" in ok.stdout
    bad = write(tmp_path, GOOD.replace("device_id: 3", "device_id: 300"))
    out = subprocess.run(
        [sys.executable, "-m", "edge.cli", "check-config", "-c", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2
    assert f"{bad}:19: doors.d1.device_id:" in out.stderr


def test_serial_port_links_are_kept_not_resolved(tmp_path: Path) -> None:
    """A udev or simulator link (by-id names) must be reopened by name: its target moves on replug."""
    (tmp_path / "ttyA").touch()
    (tmp_path / "scanner").symlink_to(tmp_path / "ttyA")
    (tmp_path / "g.yaml").write_text(GOOD)
    cfg = load_config(tmp_path / "g.yaml")
    assert cfg.readers["r1"].port == str(tmp_path / "scanner")
