"""The installer's commands, run as real processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.support.gateway import Signer, free_port, gateway_config

ROOT = Path(__file__).resolve().parent.parent


def edge(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def make_cfg(tmp_path: Path, signer: Signer) -> Path:
    return gateway_config(
        tmp_path,
        signer=signer,
        bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": free_port()},
        readers={"qr-north": {"type": "serial", "port": str(tmp_path / "none"), "content": "qr"}},
    )


def test_token_verify_explains(tmp_path: Path) -> None:
    signer = Signer()
    cfg = str(make_cfg(tmp_path, signer))
    code = signer.code("t-cli", kind="visitor", sub="visitor:88", floors=[3, 4])
    out = edge("token", "verify", "-c", cfg, code)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {
        "result": "granted",
        "reason": "ok",
        "subject": "visitor:88",
        "floors": [3, 4],
    }
    out = edge("token", "verify", "-c", cfg, "--zone", "south-gate", code)
    assert (out.returncode, json.loads(out.stdout)["reason"]) == (1, "zone_denied")
    out = edge("token", "verify", "-c", cfg, "--now", str(int(time.time()) + 10 * 86400), code)
    assert json.loads(out.stdout)["reason"] == "expired"
    out = edge("token", "verify", "-c", cfg, "not-a-token")
    assert json.loads(out.stdout) == {
        "result": "denied",
        "reason": "malformed",
        "subject": None,
        "floors": None,
    }


def test_whitelist_import_is_atomic(tmp_path: Path) -> None:
    cfg = str(make_cfg(tmp_path, Signer()))
    good = tmp_path / "good.ndjson"
    good.write_text(
        "\n".join(
            json.dumps(
                {"kind": "card", "value": f"0000{i:04X}", "subject": f"resident:{i}", "zones": ["north-gate"]}
            )
            for i in range(100)
        )
        + "\n"
    )
    out = edge("whitelist", "import", "-c", cfg, str(good))
    assert out.returncode == 0, out.stderr
    assert json.loads(edge("whitelist", "count", "-c", cfg).stdout)["entries"] == 100
    shown = edge("whitelist", "show", "-c", cfg, "card", "0000002a")
    assert json.loads(shown.stdout)["subject"] == "resident:42"
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            [
                {"kind": "card", "value": "AA01", "subject": "x", "zones": ["z"]},
                {"kind": "card", "value": "NOT HEX", "subject": "y", "zones": ["z"]},
            ]
        )
    )
    out = edge("whitelist", "import", "-c", cfg, str(bad))
    assert out.returncode == 2 and "entry 2" in out.stderr
    assert json.loads(edge("whitelist", "count", "-c", cfg).stdout)["entries"] == 100  # nothing changed
    assert edge("whitelist", "show", "-c", cfg, "card", "AA01").returncode == 1


def test_whitelist_import_refuses_a_version_past_64_bits(tmp_path: Path) -> None:
    """The installed `edge` script: one line and exit 2, never an OverflowError traceback from SQLite."""
    cfg = str(make_cfg(tmp_path, Signer()))
    entries = tmp_path / "one.json"
    entries.write_text(json.dumps([{"kind": "card", "value": "AA01", "subject": "r:1", "zones": ["z"]}]))
    script = str(Path(sys.executable).with_name("edge"))
    run = [script, "whitelist", "import", "-c", cfg, str(entries), "--version"]
    for version in ("99999999999999999999999", "-1"):
        out = subprocess.run([*run, version], capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode == 2 and out.stdout == "", out.stderr
        assert out.stderr.count("\n") == 1 and "version" in out.stderr and "Traceback" not in out.stderr
    assert json.loads(edge("whitelist", "count", "-c", cfg).stdout) == {"entries": 0, "version": 0}
    out = subprocess.run([*run, str(2**63 - 1)], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert json.loads(edge("whitelist", "count", "-c", cfg).stdout) == {"entries": 1, "version": 2**63 - 1}


def test_demo_runs_offline_and_shows_the_door(tmp_path: Path) -> None:
    import shutil

    shutil.copytree(ROOT / "config", tmp_path / "config")
    cfg = tmp_path / "config" / "demo.yaml"
    cfg.write_text(cfg.read_text().replace("port: 15020", f"port: {free_port()}"))
    out = edge("demo", "-c", str(cfg), "--once", "--no-broker", timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "GRANTED visitor:88" in out.stdout
    assert "lock RELEASED" in out.stdout
    assert "reason bad_signature" in out.stdout and "reason malformed" in out.stdout
    assert "car-in: GRANTED visitor:301 (reason ok)" in out.stdout  # the plate reader at the barrier
    assert "[relay board] car-in: CLOSE contact: arm goes DOWN" in out.stdout
    assert "[relay board] tower-1: floor 3 ENABLED" in out.stdout
    assert "gateway: ALARM (reason fire_alarm)" in out.stdout
    assert "[check] FAILED" not in out.stdout
    assert "every decision as expected" in out.stdout
