"""A private Mosquitto for `edge demo`: so the demo can show the cloud side on one machine.

Only when a `mosquitto` binary is installed: its own config in the demo data dir, 127.0.0.1 on a
free port, no auth (loopback only), persistence in the data dir. Stopped when the demo ends.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

_FALLBACK = Path("/usr/sbin/mosquitto")  # Debian/Ubuntu install it outside a normal user's PATH


# No queue, in-flight or size limits (a 1M-entry snapshot and a drained backlog must fit), Nagle off
# (small QoS 1 messages), errors and warnings on stderr. Shared with the tests' broker.
BROKER_TUNING = (
    "max_queued_messages 0",
    "max_inflight_messages 0",
    "message_size_limit 0",
    "set_tcp_nodelay true",
    "log_dest stderr",
    "log_type error",
    "log_type warning",
)


def find_mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return str(_FALLBACK) if _FALLBACK.is_file() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DemoBroker:
    """``start()`` -> listening on 127.0.0.1:``port``; ``stop()`` terminates it (idempotent)."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.dir = workdir
        self.port = 0
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self.pid_file = workdir / "mosquitto.pid"
        self.proc: subprocess.Popen[bytes] | None = None

    def _write_conf(self) -> None:
        lines = [
            "# written by `edge demo` on every start; a private broker for the demo only",
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.dir}/",
            "autosave_interval 5",
            # When run as root, mosquitto would switch to user `mosquitto`, who cannot write here.
            f"user {getpass.getuser()}",
            *BROKER_TUNING,
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> DemoBroker:
        """Start; a port taken between choosing and binding is retried with another one."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._stop_leftover()
        last = ""
        for _ in range(3):
            self.port = free_port()
            self._write_conf()
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    [self.binary, "-c", str(self.conf)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    start_new_session=True,  # Ctrl-C goes to the demo, which stops the broker itself
                )
            self.pid_file.write_text(f"{self.proc.pid}\n")  # mosquitto writes one only as a daemon
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    last = self.log.read_text(errors="replace")[-500:].strip()
                    break
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                    return self
                time.sleep(0.05)
            else:
                self.stop()
                raise RuntimeError(f"mosquitto did not listen on 127.0.0.1:{self.port} within {timeout:g} s")
        self.proc = None
        raise RuntimeError(f"mosquitto exited at start: {last or 'no message'} (see {self.log})")

    def _stop_leftover(self) -> None:
        """A demo killed with -9 leaves its broker running on our persistence file: end that one."""
        try:
            pid = int(self.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return
        if str(self.conf).encode() not in cmdline:
            return  # the pid was reused by something else
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        self.pid_file.unlink(missing_ok=True)
        if proc.poll() is not None:
            return
        proc.terminate()  # SIGTERM: mosquitto saves its persistence file and exits
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def __enter__(self) -> DemoBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
