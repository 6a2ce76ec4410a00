"""scripts/install.sh (issue 9): the real installer run into a temporary root, and the lock files.

The installer runs with `--root DIR --no-venv` (seconds): everything is written but the virtualenv.
`GATE_EDGE_REAL_INSTALL=1 .venv/bin/pytest tests/test_install.py -k real_venv` also builds the
virtualenv from the locks (network, a few minutes): not part of ./scripts/test.sh.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parent.parent
REQ = CHECKOUT / "requirements"
EXTRAS = ("camera", "nfc", "lpr")
# commands the installer must never run under --root: shims that record the call and fail
FORBIDDEN = ("systemctl", "useradd", "usermod", "userdel", "groupadd", "groupdel", "apt-get", "dpkg-query")


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the checkout's installed parts: others editing the checkout do not move the test."""
    dest = tmp_path_factory.mktemp("checkout")
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for d in ("scripts", "edge", "drivers", "config", "docs", "requirements", "systemd"):
        shutil.copytree(CHECKOUT / d, dest / d, ignore=skip)
    for f in ("README.md", "pyproject.toml"):
        shutil.copy2(CHECKOUT / f, dest / f)
    return dest


@pytest.fixture
def install_sh(src: Path) -> Path:
    return src / "scripts" / "install.sh"


@pytest.fixture
def shims(tmp_path: Path) -> Path:
    d = tmp_path / "shims"
    d.mkdir()
    log = tmp_path / "forbidden.log"
    for name in FORBIDDEN:
        p = d / name
        p.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\nexit 97\n')
        p.chmod(0o755)
    return d


@pytest.fixture
def run(install_sh: Path):
    return lambda root, shims, *args, check=True: _run(install_sh, root, shims, *args, check=check)


def _run(install_sh: Path, root: Path, shims: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": f"{shims}:{os.environ['PATH']}",
        # the interpreter the config is read with under --no-venv: this checkout's (pydantic, PyYAML)
        "PYTHON": sys.executable,
    }
    env.pop("DESTDIR", None)
    out = subprocess.run(
        ["bash", str(install_sh), "--root", str(root), "--no-venv", *args],
        capture_output=True, text=True, env=env, timeout=60,
    )
    forbidden = shims.parent / "forbidden.log"
    assert not forbidden.exists(), f"ran outside the root: {forbidden.read_text()}"
    if check:
        assert out.returncode == 0, out.stdout + out.stderr
    return out


def tree(root: Path) -> dict[str, tuple[int, int, int, int, bytes | None]]:
    """path -> (mode, uid, gid, mtime_ns, content) of everything under root."""
    found = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        found[str(p.relative_to(root))] = (
            stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns,
            p.read_bytes() if p.is_file() else None,
        )
    return found


def manifest(root: Path) -> dict[str, str]:
    text = (root / "opt/gate-edge/install.env").read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_install_writes_the_unit_config_data_dir_and_code_under_the_root(tmp_path: Path, shims: Path, run, src: Path) -> None:
    root = tmp_path / "root"
    out = run(root, shims)
    unit = root / "etc/systemd/system/edge-gateway.service"
    assert unit.read_bytes() == (src / "systemd/edge-gateway.service").read_bytes()
    assert mode(unit) == 0o644
    cfg = root / "etc/gate-edge/gateway.yaml"
    # no config yet: the example RS-485 installation, readable by root and the gateway's group only
    assert cfg.read_bytes() == (src / "config/example-rtu.yaml").read_bytes()
    assert mode(cfg) == 0o640 and mode(cfg.parent) == 0o750
    assert "edit it" in out.stdout
    data = root / "var/lib/gate-edge"
    assert data.is_dir() and mode(data) == 0o750 and list(data.iterdir()) == []
    opt = root / "opt/gate-edge"
    assert (opt / "src/edge/config.py").read_bytes() == (src / "edge/config.py").read_bytes()
    assert (opt / "src/pyproject.toml").read_bytes() == (src / "pyproject.toml").read_bytes()
    assert (opt / "requirements/base.lock").read_bytes() == (REQ / "base.lock").read_bytes()
    assert (opt / "examples/example-camera.yaml").is_file()
    assert not list(opt.rglob("__pycache__"))
    assert "u gate-edge - " in (root / "usr/lib/sysusers.d/gate-edge.conf").read_text()
    assert "d /var/lib/gate-edge 0750 gate-edge gate-edge" in (root / "usr/lib/tmpfiles.d/gate-edge.conf").read_text()
    # the example reads serial scanners only: no extra, base lock only
    m = manifest(root)
    assert m["EXTRAS"] == "" and m["LOCKS"] == "build base"
    assert m["EXTRAS_FROM"] == "/etc/gate-edge/gateway.yaml, read by edge.config"
    assert "-r /opt/gate-edge/requirements/base.lock" in m["VENV"]
    assert "camera.lock" not in m["VENV"]
    assert not (opt / ".venv").exists()
    # no owner without a user database in the root: left to the target's sysusers/tmpfiles
    assert cfg.stat().st_gid == os.getgid()
    # everything it wrote is under the root (the shims above saw no systemctl, useradd, apt-get)
    assert sorted(p.name for p in root.iterdir()) == ["etc", "opt", "usr", "var"]


def test_a_second_run_changes_nothing(tmp_path: Path, shims: Path, run, src: Path) -> None:
    root = tmp_path / "root"
    run(root, shims, "--config", str(src / "config/example-nfc.yaml"))
    before = tree(root)
    out = run(root, shims, "--config", str(src / "config/example-nfc.yaml"))
    assert "nothing changed" in out.stdout
    assert tree(root) == before  # same files, modes, owners, contents and mtimes
    out = run(root, shims)
    assert "nothing changed" in out.stdout
    assert tree(root) == before


def test_an_existing_config_is_kept_and_picks_the_extras(tmp_path: Path, shims: Path, run, src: Path) -> None:
    root = tmp_path / "root"
    cfg = root / "etc/gate-edge/gateway.yaml"
    cfg.parent.mkdir(parents=True)
    own = (src / "config/example-lpr.yaml").read_text() + "# this gate's own edits\n"
    cfg.write_text(own)
    cfg.chmod(0o644)
    run(root, shims)
    assert cfg.read_text() == own
    assert mode(cfg) == 0o640
    assert manifest(root)["EXTRAS"] == "lpr"
    assert "lpr.lock" in manifest(root)["VENV"]
    # --config replaces it, keeping the previous one
    run(root, shims, "--config", str(src / "config/example-camera.yaml"))
    assert cfg.read_bytes() == (src / "config/example-camera.yaml").read_bytes()
    assert (cfg.parent / "gateway.yaml.old").read_text() == own
    assert manifest(root)["EXTRAS"] == "camera"
    assert manifest(root)["LOCKS"] == "build base camera"


@pytest.mark.parametrize(
    ("config", "extras"),
    [
        ("demo.yaml", ""),
        ("example-rtu.yaml", ""),
        ("example-camera.yaml", "camera"),
        ("example-nfc.yaml", "nfc"),
        ("example-lpr.yaml", "lpr"),
    ],
)
def test_extras_follow_the_readers_of_the_config(tmp_path: Path, shims: Path, run, src: Path, config: str, extras: str) -> None:
    run(tmp_path / "root", shims, "--config", str(src / "config" / config))
    assert manifest(tmp_path / "root")["EXTRAS"] == extras


def test_every_reader_family_in_one_config_and_the_yaml_fallback(tmp_path: Path, shims: Path, run, src: Path) -> None:
    cam = (src / "config/example-camera.yaml").read_text()
    nfc_readers = (
        "  nfc-1:\n    type: nfc\n    device: usb\n"
        "  plate-1:\n    type: lpr\n    serialno: ABC\n"
    )
    assert "\nreaders:\n" in cam
    all3 = tmp_path / "all.yaml"
    all3.write_text(cam.replace("\nreaders:\n", "\nreaders:\n" + nfc_readers, 1))
    run(tmp_path / "root", shims, "--config", str(all3))
    m = manifest(tmp_path / "root")
    assert m["EXTRAS"] == "camera,nfc,lpr", m
    # a config the loader refuses (an unknown key) is still scanned for its readers, with a warning
    bad = tmp_path / "bad.yaml"
    bad.write_text(cam.replace("gateway:\n", "gateway:\n  no_such_key: 1\n", 1))
    out = run(tmp_path / "root2", shims, "--config", str(bad))
    assert manifest(tmp_path / "root2")["EXTRAS"] == "camera"
    assert "refused" in out.stderr and "no_such_key" in out.stderr
    assert "YAML only" in manifest(tmp_path / "root2")["EXTRAS_FROM"]
    # explicit extras win over the config
    run(tmp_path / "root3", shims, "--config", str(all3), "--extras", "none")
    assert manifest(tmp_path / "root3")["EXTRAS"] == ""
    run(tmp_path / "root3", shims, "--extras", "lpr,camera")
    assert manifest(tmp_path / "root3")["EXTRAS"] == "camera,lpr"
    out = run(tmp_path / "root3", shims, "--extras", "gpu", check=False)
    assert out.returncode != 0 and "unknown extra" in out.stderr


def test_owner_and_group_come_from_the_roots_own_user_database(tmp_path: Path, shims: Path, run, src: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("chown to another uid needs root")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\ngate-edge:x:4711:4712::/var/lib/gate-edge:/usr/sbin/nologin\n")
    (root / "etc/group").write_text("root:x:0:\ngate-edge:x:4712:\n")
    run(root, shims)
    data = (root / "var/lib/gate-edge").stat()
    assert (data.st_uid, data.st_gid) == (4711, 4712)
    cfg = (root / "etc/gate-edge/gateway.yaml").stat()
    assert (cfg.st_uid, cfg.st_gid) == (0, 4712)
    assert (root / "etc/gate-edge").stat().st_gid == 4712


def test_uninstall_keeps_config_and_data_purge_removes_them(tmp_path: Path, shims: Path, run, src: Path) -> None:
    root = tmp_path / "root"
    run(root, shims)
    (root / "var/lib/gate-edge/whitelist.db").write_bytes(b"entries")
    cfg = root / "etc/gate-edge/gateway.yaml"
    cfg.write_text(cfg.read_text() + "# edited\n")
    stale_code = root / "opt/gate-edge/src/edge/gone.py"
    stale_code.write_text("x = 1\n")
    run(root, shims)  # an upgrade drops files the checkout no longer has
    assert not stale_code.exists()

    out = run(root, shims, "--uninstall")
    assert "kept" in out.stdout
    assert not (root / "etc/systemd/system/edge-gateway.service").exists()
    assert not (root / "opt/gate-edge").exists()
    assert not (root / "usr/lib/sysusers.d/gate-edge.conf").exists()
    assert (root / "var/lib/gate-edge/whitelist.db").read_bytes() == b"entries"
    assert cfg.read_text().endswith("# edited\n")
    run(root, shims, "--uninstall")  # again: nothing left to remove, still fine

    run(root, shims)  # reinstall over kept data and config
    assert cfg.read_text().endswith("# edited\n")
    run(root, shims, "--purge")
    assert [p for p in root.rglob("*") if not p.is_dir()] == []


def test_help_explains_the_other_root_and_bad_usage_fails(tmp_path: Path, install_sh: Path) -> None:
    out = subprocess.run(["bash", str(install_sh), "--help"], capture_output=True, text=True, check=True)
    assert "--root DIR" in out.stdout and "DESTDIR" in out.stdout and "--purge" in out.stdout
    bad = subprocess.run(["bash", str(install_sh), "--bogus"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown option" in bad.stderr
    missing = subprocess.run(
        ["bash", str(install_sh), "--root", str(tmp_path), "--config", str(tmp_path / "nope.yaml")],
        capture_output=True, text=True,
    )
    assert missing.returncode == 1 and "no such file" in missing.stderr


def test_destdir_is_the_same_as_root(tmp_path: Path, shims: Path, install_sh: Path) -> None:
    env = {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}", "PYTHON": sys.executable,
           "DESTDIR": str(tmp_path / "dest")}
    subprocess.run(["bash", str(install_sh), "--no-venv"], check=True, capture_output=True, env=env, timeout=60)
    assert (tmp_path / "dest/etc/systemd/system/edge-gateway.service").is_file()
    assert not (shims.parent / "forbidden.log").exists()


# --- pyproject extras and the lock files ----------------------------------------------------------------

PYPROJECT = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["project"]
HEAVY = {"camera": {"opencv-python-headless", "zxing-cpp", "pyzbar"}, "nfc": {"nfcpy"}, "lpr": {"aiohttp"}}


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower().replace("_", "-")


def lock_entries(name: str) -> dict[str, list[str]]:
    """name==version(;marker) -> its hashes, for one lock file."""
    entries: dict[str, list[str]] = {}
    current = None
    for line in (REQ / f"{name}.lock").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if not line.startswith(" "):
            current = line.rstrip(" \\")
            assert re.match(r"^[a-z0-9][a-z0-9._-]*==[^ ;]+( ; .+)?$", current), f"{name}.lock: unpinned {line!r}"
            assert current not in entries, f"{name}.lock: {current} twice"
            entries[current] = []
        elif "--hash=sha256:" in line:
            entries[current].append(line.strip())
    return entries


def test_the_heavy_reader_libraries_are_extras_and_dev_brings_them_all() -> None:
    core = {_name(r) for r in PYPROJECT["dependencies"]}
    extras = PYPROJECT["optional-dependencies"]
    for extra, libs in HEAVY.items():
        assert libs.isdisjoint(core), f"{libs & core} still in the core dependencies"
        assert {_name(r) for r in extras[extra]} == libs
    assert "gate-edge[camera,nfc,lpr,bridge]" in extras["dev"]


def test_the_locks_pin_everything_with_hashes_and_layer_without_conflict() -> None:
    locks = {n: lock_entries(n) for n in ("build", "base", *EXTRAS)}
    for name, entries in locks.items():
        assert entries, f"{name}.lock is empty"
        assert all(hashes for hashes in entries.values()), f"{name}.lock: an entry without a hash"
    names = {n: {_name(e) for e in entries} for n, entries in locks.items()}
    # a box without a camera installs no OpenCV, numpy, nfcpy or aiohttp
    assert names["base"].isdisjoint({"opencv-python-headless", "numpy", "zxing-cpp", "pyzbar", "nfcpy", "aiohttp"})
    for extra, libs in HEAVY.items():
        assert libs <= names[extra], f"{extra}.lock lacks {libs - names[extra]}"
        assert names[extra].isdisjoint(names["base"]), f"{extra}.lock repeats base.lock"
    assert "numpy" in names["camera"]
    # one resolution: a package pinned in two files is pinned the same
    pins: dict[str, str] = {}
    for entries in locks.values():
        for e in entries:
            assert pins.setdefault(e, e) == e
    by_name: dict[tuple[str, str], set[str]] = {}
    for entries in locks.values():
        for e in entries:
            marker = e.split(" ; ", 1)[1] if " ; " in e else ""
            by_name.setdefault((_name(e), marker), set()).add(e)
    assert {k: v for k, v in by_name.items() if len(v) > 1} == {}
    assert {_name(e) for e in locks["build"]} == {"setuptools"}


def test_the_locks_were_refreshed_after_the_last_dependency_change() -> None:
    """Fails when pyproject.toml's dependencies change without ./scripts/lock.sh (the same hash as it)."""
    extras = {k: sorted(v) for k, v in PYPROJECT["optional-dependencies"].items() if k != "dev"}
    doc = {"dependencies": sorted(PYPROJECT["dependencies"]), "extras": extras,
           "requires-python": PYPROJECT.get("requires-python")}
    want = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
    for name in ("build", "base", *EXTRAS):
        header = (REQ / f"{name}.lock").read_text().split("\n", 6)
        assert f"# inputs-sha256: {want}" in header, f"{name}.lock is stale: run ./scripts/lock.sh"


@pytest.mark.skipif(not os.environ.get("GATE_EDGE_REAL_INSTALL"), reason="set GATE_EDGE_REAL_INSTALL=1 (network, minutes)")
def test_real_venv_install_from_the_locks(tmp_path: Path) -> None:
    """The full install under a root: the virtualenv from the locks, `edge` runs, extras follow the config."""
    root = tmp_path / "root"
    install_sh, src = CHECKOUT / "scripts/install.sh", CHECKOUT
    env = {**os.environ, "PYTHON": os.environ.get("GATE_EDGE_PYTHON", "python3")}
    env.pop("DESTDIR", None)

    def install(*args: str) -> None:
        subprocess.run(["bash", str(install_sh), "--root", str(root), *args], check=True, env=env, timeout=1200)

    py = root / "opt/gate-edge/.venv/bin/python"
    edge = root / "opt/gate-edge/.venv/bin/edge"
    cam = src / "config/example-camera.yaml"
    install("--config", str(cam))
    subprocess.run([str(edge), "check-config", str(cam)], check=True, capture_output=True)
    subprocess.run([str(py), "-c", "import cv2, zxingcpp, pyzbar.pyzbar, edge.cli"], check=True)
    freeze = subprocess.run([str(py), "-m", "pip", "freeze", "--all"], capture_output=True, text=True, check=True).stdout
    for e in (*lock_entries("base"), *lock_entries("camera")):
        if " ; " in e:  # the other Python's fork of numpy
            continue
        assert e.replace("_", "-").lower() in freeze.replace("_", "-").lower(), e
    # the camera leaves the config: OpenCV leaves the box
    install("--config", str(src / "config/example-rtu.yaml"))
    gone = subprocess.run([str(py), "-c", "import cv2"], capture_output=True)
    assert gone.returncode != 0
    subprocess.run([str(py), "-c", "import edge.app, edge.config"], check=True)
