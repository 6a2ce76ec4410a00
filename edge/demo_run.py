"""The scripted `edge demo`: a door opens for a demo visitor code and refuses bad ones, no hardware needed."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from edge.config import Config
from edge.demo import DEMO_WHITELIST, SimHardware, _stdin_lines, mint_demo_code
from edge.model import Event

SCRIPT: list[tuple[str, str, str]] = [
    # (what a person does, line for the scanner, expected "result/reason")
    ("A visitor shows the QR code a resident sent them", "{code}", "granted/ok"),
    ("Someone shows a forged copy (one character changed)", "{forged}", "denied/bad_signature"),
    ("The scanner reads garbage", "hello, gate!", "denied/malformed"),
    ("A resident taps card 04A1B2C3", "card:04A1B2C3", "granted/ok"),
    ("A blocked card 0BADCAFE", "card:0BADCAFE", "denied/blocked"),
    ("An unknown card DEADBEEF", "card:DEADBEEF", "denied/unknown_credential"),
]


def _forge(code: str) -> str:
    head, body, sig = code.split(".")
    i = len(body) // 2
    body = body[:i] + ("A" if body[i] != "A" else "B") + body[i + 1 :]
    return ".".join((head, body, sig))


async def run_demo(cfg: Config, once: bool, say=print) -> bool:  # type: ignore[no-untyped-def]
    from edge.app import Gateway
    from edge.cli import _read_entries
    from edge.store import entry_from_wire

    hw = SimHardware(cfg, say)
    await hw.start()
    gw = Gateway(cfg)
    if gw.store.count() == 0:
        gw.store.import_entries([entry_from_wire(e) for e in _read_entries(str(DEMO_WHITELIST))])
        say(f"imported the demo whitelist ({gw.store.count()} entries) from {DEMO_WHITELIST.name}")
    events: asyncio.Queue[Event] = asyncio.Queue()

    def show(ev: Event) -> None:
        mark = "GRANTED" if ev.result == "granted" else ev.result.upper()
        who = f" {ev.subject}" if ev.subject else ""
        lat = f" in {ev.latency_ms:.2f} ms" if ev.latency_ms is not None else ""
        say(f"  [gateway] {ev.device}: {mark}{who} (reason {ev.reason}){lat}")
        events.put_nowait(ev)

    gw.event_listeners.append(show)
    await gw.start()
    ok = True
    try:
        for _ in range(50):  # wait until the doors and readers are up
            if all(d.online for d in gw.doors.values()) and all(r.online for r in gw.readers.values()):
                break
            await asyncio.sleep(0.1)
        code = mint_demo_code(cfg)
        say(f"\ndemo visitor code (DEMO key, valid 1 h, 5 uses):\n  {code}\n")
        for what, line, expect in SCRIPT:
            say(f"> {what}")
            hw.type_line(line.format(code=code, forged=_forge(code)))
            try:
                ev = await asyncio.wait_for(events.get(), 5)
            except TimeoutError:
                say("  (no decision within 5 s: is the reader up?)")
                ok = False
                continue
            if f"{ev.result}/{ev.reason}" != expect:
                say(f"  unexpected: wanted {expect}")
                ok = False
            await asyncio.sleep(0.4)
        say("\nscripted demo " + ("done: every decision as expected" if ok else "FAILED: see above"))
        if not once and sys.stdin.isatty():
            say("\nnow type a code and Enter (or card:HEX); `edge demo-code -c ...` mints more; Ctrl-D quits")
            await _stdin_lines(hw)
        else:
            await asyncio.sleep(0.5)
    finally:
        await gw.stop()
        await hw.stop()
    return ok


def cmd_demo(args: argparse.Namespace) -> int:
    from edge.cli import _load
    from edge.logs import setup_logging

    cfg = _load(args.config)
    cfg.gateway.data_dir.mkdir(parents=True, exist_ok=True)
    setup_logging("warning", "console")
    ok = False
    with contextlib.suppress(KeyboardInterrupt):
        ok = asyncio.run(run_demo(cfg, args.once))
    return 0 if ok else 1
