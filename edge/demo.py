"""`edge sim`, `edge demo` and `edge demo-code`: simulated hardware for demos and installer rehearsal.

`edge sim` plays the hardware of a config (relay boards on its Modbus TCP buses, pty scanners at
its serial readers' ports) for a separate `edge run`. `edge demo` runs hardware and gateway in one
process, plays a scripted story (a door, a car at the barrier, a lift, a fire), then takes typed
codes and commands that move the simulated world (edge/sim/prompt.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable
from typing import Any

from edge.config import Config
from edge.runner import load_config_or_exit
from edge.sim.demo_key import DEMO_KID
from edge.sim.hardware import SimHardware, mint_demo_code
from edge.sim.prompt import HELP, stdin_lines


async def run_sim(cfg: Config, interactive: bool) -> None:
    hw = SimHardware(cfg)
    await hw.start()
    for rid in hw.scanners:
        r = cfg.readers[rid]
        print(f"simulated {r.content} reader {rid} at {r.port}")
    for bid, board in hw.boards.items():
        bus = cfg.buses[bid]
        units = ", ".join(str(u) for u in board.device_ids())
        print(f"simulated relay board on {bus.host}:{bus.port} (bus {bid}, units {units})")  # type: ignore[union-attr]
    print(f"{HELP}\nCtrl-D or Ctrl-C to stop" if interactive else "running; Ctrl-C to stop")
    try:
        if interactive:
            await stdin_lines(hw)
        else:
            await asyncio.Event().wait()
    finally:
        await hw.stop()


def cmd_sim(args: argparse.Namespace) -> int:
    cfg = load_config_or_exit(args.config)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_sim(cfg, interactive=sys.stdin.isatty() and not args.no_input))
    return 0


def cmd_demo_code(args: argparse.Namespace) -> int:
    cfg = load_config_or_exit(args.config)
    if DEMO_KID not in cfg.trust.keys:
        print(
            f"this config does not trust the demo key {DEMO_KID!r}; codes would be refused", file=sys.stderr
        )
    code = mint_demo_code(
        cfg, args.kind, args.sub, args.ttl, args.uses, args.zone or None, args.floor or None
    )
    print(code)
    if args.png:
        import segno

        segno.make(code, error="m").save(args.png, scale=6)
        print(f"QR written to {args.png}", file=sys.stderr)
    return 0


def add_cli(sub: Any, with_config: Callable[..., argparse.ArgumentParser]) -> None:
    s = with_config(sub.add_parser("sim", help="simulated relay boards and scanners for a config"))
    s.add_argument("--no-input", action="store_true", help="do not read typed codes from stdin")
    s.set_defaults(func=cmd_sim)
    d = with_config(sub.add_parser("demo", help="simulated hardware + gateway: watch a door open"))
    d.add_argument(
        "--once", action="store_true", help="run the scripted demo and exit (status 0 = as expected)"
    )
    d.add_argument(
        "--no-broker", action="store_true", help="do not start a local Mosquitto even if installed"
    )
    d.set_defaults(func=_cmd_demo)
    c = with_config(sub.add_parser("demo-code", help="mint a DEMO-key code (only demo configs trust it)"))
    c.add_argument("--kind", default="visitor", choices=["visitor", "resident", "staff"])
    c.add_argument("--sub", default="visitor:88")
    c.add_argument("--ttl", type=int, default=3600)
    c.add_argument("--uses", type=int, default=5)
    c.add_argument("--zone", action="append")
    c.add_argument("--floor", type=int, action="append")
    c.add_argument("--png", help="also write the code as a QR PNG here")
    c.set_defaults(func=cmd_demo_code)


def _cmd_demo(args: argparse.Namespace) -> int:
    from edge.demo_run import cmd_demo

    return cmd_demo(args)
