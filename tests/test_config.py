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
    assert cfg.mqtt is None and cfg.reader_device() == {"r1": "d1"}


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


def test_max_lifetime_has_an_upper_bound(tmp_path: Path) -> None:
    """A lifetime past 10 years (or past 64 bits) is a typo, not a policy: refused at its line."""
    text = GOOD.replace("trust:\n", "trust:\n  max_lifetime_s:\n    visitor: 99999999999999999999\n")
    [(line, key, msg)] = problems(tmp_path, text)
    assert (line, key) == (8, "trust.max_lifetime_s.visitor") and "less than or equal to" in msg
    ten_years = GOOD.replace("trust:\n", "trust:\n  max_lifetime_s: {staff: 315360000}\n")
    assert load_config(write(tmp_path, ten_years)).trust.max_lifetime_s.staff == 315_360_000


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
    assert "doors north-gate" in ok.stdout
    assert "  metrics: off" in ok.stdout and "  rate limit: 10 denials in 60 s -> 60 s" in ok.stdout
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


# --- files that crashed or exhausted the loader (issue 6, item 6) ------------------------------


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    """`edge check-config` as an operator runs it: the real console script in a subprocess."""
    return subprocess.run(
        [str(ROOT / ".venv/bin/edge"), "check-config", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def refused(out: subprocess.CompletedProcess[str]) -> str:
    """The one problem line of a refused config; a traceback or any other exit fails the test."""
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert lines[0] == "config error:" and len(lines) == 2, out.stderr
    return lines[1]


def test_non_utf8_file_names_line_and_byte(tmp_path: Path) -> None:
    p = tmp_path / "gw.yaml"
    p.write_bytes(GOOD.encode().replace(b"zone: north-gate", b"zone: north-\xe9gate"))
    line = refused(check_config(p))
    assert line.startswith(f"{p}:20: ") and "UTF-8" in line and "0xe9" in line


def test_file_past_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD + "# padding\n" * 40_000)
    line = refused(check_config(p))
    assert line.startswith(f"{p}: ") and "KiB" in line


@pytest.mark.parametrize(
    "nest",
    [
        "log:\n  x: " + "[" * 20_000 + "]" * 20_000 + "\n",
        "log:\n" + "".join("  " * i + f"  k{i}:\n" for i in range(200)) + "  " * 201 + "v\n",
    ],
    ids=["flow", "block"],
)
def test_deep_nesting_is_refused_with_a_line(tmp_path: Path, nest: str) -> None:
    p = write(tmp_path, GOOD + nest)
    line = refused(check_config(p))
    assert line.startswith(f"{p}:") and "deeper than 64" in line
    lineno = int(line.split(":")[1])
    assert 24 <= lineno <= 24 + 64  # where the 65th level opens, not the top or the end


def test_alias_bomb_is_refused_at_the_alias(tmp_path: Path) -> None:
    bomb = ROOT / "tests/data/config/alias-bomb.yaml"
    line = refused(check_config(bomb))
    assert line.startswith(f"{bomb}:7: log.e[") and "*d" in line and "nodes" in line


def test_aliases_past_the_bound_and_alias_cycles_are_refused(tmp_path: Path) -> None:
    many = GOOD + "log:\n  base: &z 1\n" + "".join(f"  k{i}: *z\n" for i in range(101))
    [(line, key, msg)] = problems(tmp_path, many)
    assert (line, key) == (126, "log.k100") and "100 aliases" in msg
    [(line, key, msg)] = problems(tmp_path, GOOD + "log:\n  loop: &l [1, *l]\n")
    assert (line, key) == (25, "log.loop[1]") and "*l" in msg and "cycle" in msg
    deep = "".join(f"  l{i}: &l{i} [" + (f"*l{i - 1}" if i else "0") + "]\n" for i in range(70))
    [(line, key, msg)] = problems(tmp_path, GOOD + "log:\n" + deep)
    assert line is not None and line > 24 and "deeper than 64" in msg


def test_control_characters_name_their_line(tmp_path: Path) -> None:
    [(line, _key, msg)] = problems(tmp_path, GOOD.replace("zone: north-gate", "zone: north\x00gate"))
    assert line == 20 and "#x0000" in msg


# --- mistakes that were accepted silently (issue 6, item 7) -------------------------------------


def test_duplicate_keys_name_both_lines(tmp_path: Path) -> None:
    dup = GOOD.replace("  timezone: Asia/Shanghai\n", "  timezone: Asia/Shanghai\n  site: c43\n")
    [(line, key, msg)] = problems(tmp_path, dup)
    assert (line, key) == (5, "gateway.site") and "duplicate key 'site' (first at line 2)" in msg
    dup = GOOD + "doors:\n  d9: {bus: tcp, device_id: 1, zone: z}\n"
    [(line, key, msg)] = problems(tmp_path, dup)
    assert (line, key) == (24, "doors") and "first at line 16" in msg


TWO_DOORS = GOOD.replace(
    "readers:\n  r1",
    "  d2:\n    bus: rtu\n    device_id: 3\n    zone: south\n    lock_coil: 0\nreaders:\n  r1",
)


def test_two_devices_on_one_relay_output_are_refused(tmp_path: Path) -> None:
    [(line, key, msg)] = problems(tmp_path, TWO_DOORS)
    assert (line, key) == (26, "doors.d2.lock_coil")
    assert msg == "relay bus 'rtu' unit 3 coil 0 is already driven by doors.d1.lock_coil (line 17)"
    cfg = load_config(write(tmp_path, TWO_DOORS.replace("lock_coil: 0", "lock_coil: 1")))
    assert [d.lock_coil for d in cfg.doors.values()] == [0, 1]
    other_bus = TWO_DOORS.replace("rtu\n    device_id: 3\n    zone: s", "tcp\n    device_id: 3\n    zone: s")
    cfg = load_config(write(tmp_path, other_bus))
    assert cfg.doors["d2"].bus == "tcp"


def test_merge_keys_share_settings_and_are_still_checked(tmp_path: Path) -> None:
    text = GOOD.replace("  d1:\n", "  d1: &door\n").replace(
        "readers:\n  r1", "  d2:\n    <<: *door\n    lock_coil: 1\n    readers: []\nreaders:\n  r1"
    )
    cfg = load_config(write(tmp_path, text))
    assert cfg.doors["d2"].device_id == 3 and cfg.doors["d2"].lock_coil == 1 and cfg.doors["d2"].readers == []
    [(line, key, msg)] = problems(tmp_path, text.replace("    lock_coil: 1\n", ""))
    assert (line, key) == (22, "doors.d2.lock_coil") and "doors.d1.lock_coil (line 17)" in msg
    twice = text.replace("lock_coil: 1\n", "lock_coil: 1\n    lock_coil: 2\n")
    [(line, key, msg)] = problems(tmp_path, twice)
    assert (line, key) == (25, "doors.d2.lock_coil") and "first at line 24" in msg


def test_shipped_configs_still_load() -> None:
    names = sorted(p.name for p in (ROOT / "config").glob("*.yaml") if p.name != "bridge.example.yaml")
    assert {"demo.yaml", "example-camera.yaml", "example-lpr.yaml", "example-barrier.yaml"} <= set(names)
    for name in names:  # every example a user may copy: the gateway's check-config accepts it
        out = check_config(ROOT / "config" / name)
        assert out.returncode == 0 and "Traceback" not in out.stderr, (name, out.stderr)


def test_a_section_naming_an_unknown_device_is_refused_with_its_line(tmp_path: Path) -> None:
    p = tmp_path / "gw.yaml"
    p.write_text(
        "gateway: {site: s, id: g}\n"
        "buses: {b: {type: modbus_tcp, host: 127.0.0.1}}\n"
        "doors: {d1: {bus: b, device_id: 1, zone: z}}\n"
        "fire:\n"
        "  inputs: [{bus: b, device_id: 1, input: 7}]\n"
        "  release: [d1, d-typo]\n"
    )
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert e.value.render() == f"{p}:6: fire.release[1]: no device 'd-typo' (devices: d1)"
