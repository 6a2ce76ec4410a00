"""`edge run` as a real child process, with its JSON log lines collected for assertions."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


class Daemon:
    """`edge run` as a real child process; its JSON log lines are collected as they come."""

    def __init__(self, cfg: Path) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "run", "-c", str(cfg), "--log-format", "json"],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            env=env,
        )
        self.lines: list[dict[str, object]] = []
        self._t = threading.Thread(target=self._pump, daemon=True)
        self._t.start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            try:
                self.lines.append(json.loads(raw))
            except json.JSONDecodeError:
                self.lines.append({"event": "raw", "text": raw.decode(errors="replace")})

    def seen(self, event: str, **kw: object) -> bool:
        return any(
            ln.get("event") == event and all(ln.get(k) == v for k, v in kw.items()) for ln in list(self.lines)
        )

    async def wait_for(self, event: str, timeout: float = 20.0, **kw: object) -> None:
        for _ in range(int(timeout / 0.05)):
            if self.seen(event, **kw):
                return
            if self.proc.poll() is not None:
                break
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {event} {kw} in log: {self.lines[-10:]}")

    def finish(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._t.join(5)
