"""socat pty pairs: a real serial line between the test and the code under test."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path


class PtyPair:
    """Two linked ptys at ``a`` and ``b`` (symlinks), like a null-modem cable. ``stop()`` models an unplug:
    the links vanish and the other side's reads fail; ``start()`` plugs it back in at the same paths."""

    def __init__(self, directory: Path, name: str = "tty") -> None:
        if shutil.which("socat") is None:
            raise RuntimeError("socat is not installed: run scripts/setup.sh")
        self.a = directory / f"{name}-a"
        self.b = directory / f"{name}-b"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 5.0) -> PtyPair:
        self.proc = subprocess.Popen(
            [
                "socat",
                "-d",
                f"pty,raw,echo=0,link={self.a}",
                f"pty,raw,echo=0,link={self.b}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not (self.a.exists() and self.b.exists()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("socat did not create the pty pair")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        for p in (self.a, self.b):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass

    def __enter__(self) -> PtyPair:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
