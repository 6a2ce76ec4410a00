"""Running the gateway from a config: shared by `edge run` (cli.py) and the simulated `edge demo`.

It lives apart from cli.py so that the demo can use it without importing the CLI that offers the
demo as a subcommand: the CLI depends on the demo, never the other way round.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import Any

from edge.config import Config, ConfigError, load_config


def load_config_or_exit(path: str) -> Config:
    """The config at ``path``; a bad one is printed with file:line and ends the command with status 2."""
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"config error:\n{exc.render()}", file=sys.stderr)
        raise SystemExit(2) from None


def read_entries(path: str) -> list[dict[str, Any]]:
    """Whitelist entries (wire form) from a JSON list or an NDJSON file."""
    text = Path(path).read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        data = json.loads(text)
        if not isinstance(data, list):
            raise ValueError("expected a JSON list of entries")
        return data
    return [json.loads(line) for line in text.splitlines() if line.strip()]


_hup_tasks: set[asyncio.Task[Any]] = set()


def _on_hup(gw: Any) -> None:
    from edge.reload import reload

    task = asyncio.get_running_loop().create_task(reload(gw, gw.config_path))
    _hup_tasks.add(task)  # keep a reference until done (the loop holds tasks weakly)
    task.add_done_callback(_hup_tasks.discard)


async def run_gateway(
    cfg: Config, stop_event: asyncio.Event | None = None, config_path: str | Path | None = None
) -> int:
    """Run until SIGTERM/SIGINT (exit code 0) or until a supervised loop gives up (1: systemd restarts
    the daemon rather than leave it half alive). Either way outputs go to their safe state first.

    Under systemd (Type=notify, edge/notify.py): READY=1 once the gateway can decide, WATCHDOG=1 while
    it still can, STOPPING=1 when the stop begins. SIGHUP re-reads ``config_path`` (edge/reload.py)."""
    from edge import control, supervise
    from edge.app import Gateway
    from edge.logs import loop_exception_handler
    from edge.notify import Systemd

    loop = asyncio.get_running_loop()
    loop.set_exception_handler(loop_exception_handler)
    gw = Gateway(cfg)
    gw.config_path = None if config_path is None else str(config_path)
    sd = Systemd()
    sd.watch(gw, loop)
    stop_event = stop_event or asyncio.Event()
    fatal = supervise.fatal_event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop_event.set)
    with contextlib.suppress(NotImplementedError, RuntimeError):
        # The unit's ExecReload sends SIGHUP (whose default action would end the process). A reload
        # still running when the next HUP comes is not started twice: reload() takes a lock.
        loop.add_signal_handler(signal.SIGHUP, lambda: _on_hup(gw))
    ctl: asyncio.Task[None] | None = None
    try:
        await gw.start()
        ctl = supervise.spawn("control", lambda: control.serve(gw))
        sd.ready()
        waiters = [asyncio.ensure_future(stop_event.wait()), asyncio.ensure_future(fatal.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
    finally:
        sd.stopping(
            supervise.fatal_reason()
            or ("stop requested" if stop_event.is_set() or ctl is not None else "start failed")
        )
        try:
            if ctl is not None:
                ctl.cancel()
                await asyncio.gather(ctl, return_exceptions=True)
            await gw.stop()
        finally:
            await sd.close()
    return 1 if fatal.is_set() else 0
