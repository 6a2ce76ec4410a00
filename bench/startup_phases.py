"""`edge run` with its start-up phases timed: imports, config, each database check, the stores, the
gateway start, READY. Used by `bench_startup.py --phases`; it wraps functions at run time and edits
nothing. Lines go to stderr as ``PHASE <s since spawn> <what>``; $SPAWN_T0 is the spawn's monotonic
time (the clock is system-wide).

    python bench/startup_phases.py -m edge.cli run -c CFG --log-format json
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable
from typing import Any

T0 = float(os.environ.get("SPAWN_T0", time.monotonic()))


def mark(what: str) -> None:
    print(f"PHASE {time.monotonic() - T0:.3f} {what}", file=sys.stderr, flush=True)


def timed(owner: Any, name: str, label: str, *, is_async: bool = False) -> None:
    f: Callable[..., Any] = getattr(owner, name)
    if is_async:

        @functools.wraps(f)
        async def ag(*a: Any, **k: Any) -> Any:
            t = time.monotonic()
            r = await f(*a, **k)
            mark(f"{label} took {time.monotonic() - t:.3f} s")
            return r

        setattr(owner, name, ag)
        return

    @functools.wraps(f)
    def g(*a: Any, **k: Any) -> Any:
        t = time.monotonic()
        r = f(*a, **k)
        mark(f"{label} took {time.monotonic() - t:.3f} s")
        return r

    setattr(owner, name, g)


def main() -> int:
    mark("interpreter and site up")
    import edge.cli as cli

    mark("edge.cli imported (config models, drivers)")
    import edge.app as app
    import edge.datafiles as datafiles
    import edge.notify as notify

    mark("edge.app imported")
    timed(cli, "_load", "load_config")
    timed(datafiles, "damage", "PRAGMA quick_check of one database")
    timed(app, "open_stores", "open_stores (checks + open)")
    timed(app.Gateway, "start", "Gateway.start", is_async=True)
    ready = notify.Systemd.ready

    def on_ready(self: Any) -> None:
        mark("READY=1 sent")
        ready(self)

    notify.Systemd.ready = on_ready  # type: ignore[method-assign]
    args = sys.argv[1:]
    if args[:2] == ["-m", "edge.cli"]:
        args = args[2:]
    return cli.main(args)


if __name__ == "__main__":
    raise SystemExit(main())
