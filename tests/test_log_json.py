"""The JSON log is one JSON object per line, always (issue 6.9): library logging included."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from edge.sim.relay_board import RelayBoardSim
from tests.support.gateway import Signer, free_port, gateway_config
from tests.support.ptys import PtyPair

ROOT = Path(__file__).resolve().parent.parent


async def test_every_stderr_line_is_json_while_a_unit_is_silent(tmp_path: Path) -> None:
    port = free_port()
    board = RelayBoardSim(device_ids=[7])  # unit 1 stays silent: pymodbus logs its frame dumps
    server = asyncio.create_task(board.serve_tcp("127.0.0.1", port))
    scanner = PtyPair(tmp_path, "qr").start()
    cfg = gateway_config(
        tmp_path,
        signer=Signer(),
        bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": port, "timeout": 0.2, "probe_min_s": 0.2},
        readers={"qr-north": {"type": "serial", "port": str(scanner.b), "content": "qr"}},
        door={"door_sensor_input": 0},
    )
    log_path = tmp_path / "stderr.log"
    env = {**os.environ, "PYTHONASYNCIODEBUG": "1", "PYTHONWARNINGS": "always"}
    try:
        await asyncio.sleep(0.2)
        with open(log_path, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-X", "dev", "-m", "edge.cli", "run", "-c", str(cfg), "--log-level", "debug"],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=env,
            )
        try:
            await asyncio.sleep(4)
            fd = os.open(scanner.a, os.O_RDWR | os.O_NOCTTY)
            os.write(fd, b"\x00\xffgarbage\r")
            os.close(fd)
            await asyncio.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        scanner.stop()
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
    lines = log_path.read_bytes().decode("utf-8").splitlines()
    bad = []
    records = []
    for ln in lines:
        try:
            rec = json.loads(ln)
        except json.JSONDecodeError:
            bad.append(ln)
            continue
        if not isinstance(rec, dict):
            bad.append(ln)
        records.append(rec)
    assert not bad, f"{len(bad)} of {len(lines)} stderr lines are not JSON objects: {bad[:5]}"
    loggers = {r.get("logger") for r in records if isinstance(r, dict)}
    assert any(str(name).startswith("pymodbus") for name in loggers), "pymodbus errors did not reach the log"
    assert any(r.get("event") == "modbus_device_offline" for r in records if isinstance(r, dict))


def test_a_traceback_in_the_json_log_carries_no_local_values() -> None:
    """A failure on the decision path logs its traceback; structlog's default dict traceback prints every
    frame's locals, which there hold the raw token, card number or plate. Tracebacks name frames only."""
    import subprocess
    import sys

    code = (
        "import os, structlog\n"
        "from edge.logs import setup_logging\n"
        "setup_logging('info', 'json', fd=1)\n"
        "def decide(card_number):\n"
        "    raise ValueError('boom')\n"
        "try:\n"
        "    decide('04A1B2C3D4E5F6')\n"
        "except ValueError:\n"
        "    structlog.get_logger('t').exception('presentation_failed')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    line = json.loads(out.stdout.strip().splitlines()[-1])
    assert line["event"] == "presentation_failed" and "exception" in line
    assert "04A1B2C3D4E5F6" not in out.stdout, "a local variable's value reached the log"
