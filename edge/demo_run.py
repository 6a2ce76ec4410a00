"""The scripted `edge demo`: a door opens for a demo visitor code and refuses bad ones, a resident's card
enables their floor in the lift, a visitor's car passes the barrier, a fire releases everything and
clears (edge/sim/demo_story.py checks each on the board's own writes); no hardware needed.

With Mosquitto installed (and no --no-broker) it also plays the cloud on a private local broker:
the whitelist arrives as a snapshot, a signed remote open opens the door, every decision reaches
the cloud as an event. Without one it runs offline, as a gate does when the network is down.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from edge.config import Config, MqttSection
from edge.model import Event
from edge.runner import load_config_or_exit, read_entries
from edge.sim.demo_cloud import DemoCloud
from edge.sim.demo_story import Story, eventually
from edge.sim.hardware import DEMO_WHITELIST, SimHardware, mint_demo_code
from edge.sim.prompt import HELP, stdin_lines

if TYPE_CHECKING:
    from edge.app import Gateway
    from edge.sim.demo_broker import DemoBroker

Say = Callable[[str], None]

SCRIPT: list[tuple[str, str, str]] = [
    # (what a person does, line for the scanner, expected "result/reason")
    ("A visitor shows the QR code a resident sent them", "{code}", "granted/ok"),
    ("Someone edits the code to stay valid for a year (same signature)", "{forged}", "denied/bad_signature"),
    ("The scanner reads garbage", "hello, gate!", "denied/malformed"),
    ("A resident taps card 04A1B2C3", "card:04A1B2C3", "granted/ok"),
    ("A blocked card 0BADCAFE", "card:0BADCAFE", "denied/blocked"),
    ("An unknown card DEADBEEF", "card:DEADBEEF", "denied/unknown_credential"),
]
REMOTE_BY = "staff:7"  # who asks for the remote open on the platform (the event's subject)


def _forge(code: str) -> str:
    """What a forger can do without the key: edit the claims (a year longer), keep the signature."""
    head, body, sig = code.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["exp"] += 365 * 86400
    forged = base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode()).rstrip(b"=")
    return ".".join((head, forged.decode(), sig))


async def run_demo(cfg: Config, once: bool, say: Say = print, cloud: DemoCloud | None = None) -> bool:
    """Plays SCRIPT (and the cloud's part when ``cloud`` is given); True if all went as expected."""
    from edge.app import Gateway
    from edge.store import entry_from_wire

    def import_file() -> None:
        gw.store.import_entries([entry_from_wire(e) for e in read_entries(str(DEMO_WHITELIST))])
        say(f"imported the demo whitelist ({gw.store.count()} entries) from {DEMO_WHITELIST.name}")

    hw = SimHardware(cfg, say)
    await hw.start()
    if cloud is not None:
        try:
            await cloud.connect()  # subscribed before the gateway connects: it sees everything
        except (OSError, TimeoutError) as exc:
            say(f"  [cloud] cannot connect to the demo broker: {exc}")
            await hw.stop()
            return False
    gw = Gateway(cfg)
    demo_entries = [entry_from_wire(e) for e in read_entries(str(DEMO_WHITELIST))]
    if cloud is None and any(gw.store.lookup(e.kind, e.value) != e for e in demo_entries):
        import_file()  # an empty data dir, or one filled from an older demo list
    events: asyncio.Queue[Event] = asyncio.Queue()
    seen: list[Event] = []

    def show(ev: Event) -> None:
        mark = "GRANTED" if ev.result == "granted" else ev.result.upper()
        who = f" {ev.subject}" if ev.subject else ""
        how = " by remote command" if ev.method == "remote" else ""
        lat = f" in {ev.latency_ms:.2f} ms" if ev.latency_ms is not None and not how else ""
        say(f"  [gateway] {ev.device}: {mark}{who}{how} (reason {ev.reason}){lat}")
        seen.append(ev)
        events.put_nowait(ev)

    async def expect(what: str, want: str, device: str | None = None) -> bool:
        try:
            ev = await asyncio.wait_for(events.get(), 5)
        except TimeoutError:
            say(f"  (no {what} within 5 s: is the {what.split()[0]} path up?)")
            return False
        if f"{ev.result}/{ev.reason}" != want or (device is not None and ev.device != device):
            say(
                f"  unexpected: wanted {device + ' ' if device else ''}{want}, got {ev.device} {ev.result}/{ev.reason}"
            )
            return False
        return True

    gw.event_listeners.append(show)
    await gw.start()
    ok = True
    try:
        await eventually(
            lambda: all(d.online for d in gw.devices.values()) and all(r.online for r in gw.readers.values()),
            5,
        )
        if cloud is not None:
            ok = await _take_cloud_list(gw, cloud, say, import_file)
        code = mint_demo_code(cfg)
        say(f"\ndemo visitor code (DEMO key, valid 1 h, 5 uses):\n  {code}\n")
        for what, line, want in SCRIPT:
            say(f"> {what}")
            hw.type_line(line.format(code=code, forged=_forge(code)))
            ok = await expect("reader decision", want) and ok
            await asyncio.sleep(0.4)
        story = Story(hw, say, expect)
        ok = await story.lift_begins() and ok  # its grant runs out while the car passes
        ok = await story.car_passes() and ok
        if cloud is not None:
            door = next(iter(cfg.doors))
            say(f"> On the property platform, {REMOTE_BY} opens {door} remotely")
            res = await cloud.remote_open(door, REMOTE_BY)
            ok = await expect("remote open decision", "granted/ok") and ok
            if res is None:
                say("  [cloud] no R/cmd/result from the gateway")
                ok = False
            else:
                say(
                    f"  [cloud] R/cmd/result: {'ok' if res.get('ok') else 'FAILED, error ' + str(res.get('error'))}"
                )
                ok = ok and res.get("ok") is True
            await asyncio.sleep(0.4)
        ok = await story.lift_ends() and ok
        ok = await story.fire() and ok
        if cloud is not None:
            say("> What reached the cloud")
            ok = await cloud.check_events(list(seen)) and ok
        tail = ", and the cloud got them all" if cloud is not None else ""
        say("\nscripted demo " + (f"done: every decision as expected{tail}" if ok else "FAILED: see above"))
        if not once and sys.stdin.isatty():
            if cloud is not None:
                cloud.show_live_events(asyncio.get_running_loop())
                m = cfg.mqtt
                assert m is not None
                say(
                    f"\nthe demo broker is at {m.host}:{m.port}; in another terminal:\n"
                    f"  edge cloud watch --host {m.host} --port {m.port} --site {cfg.gateway.site}"
                )
            say(f"\nnow type a code (`edge demo-code -c ...` mints more) or a command; Ctrl-D quits\n{HELP}")
            await stdin_lines(hw)
        else:
            await asyncio.sleep(0.5)
    finally:
        await gw.stop()
        await hw.stop()
        if cloud is not None:
            with contextlib.suppress(Exception):
                await cloud.close()
    return ok


async def _take_cloud_list(gw: Gateway, cloud: DemoCloud, say: Say, import_file: Callable[[], None]) -> bool:
    """The gateway's whitelist comes from the cloud's snapshot; the file only if that fails."""
    version = await cloud.serve_whitelist(DEMO_WHITELIST)
    if version is not None and await eventually(lambda: gw.store.version == version, 10):
        say(f"  [gateway] whitelist v{version} from the cloud is active: {gw.store.count()} entries")
        return True
    say("  [gateway] did not take the cloud's whitelist: see the log above")
    if gw.store.count() == 0:
        import_file()
    return False


def _start_broker(cfg: Config, no_broker: bool) -> tuple[DemoBroker | None, Config]:
    """(running DemoBroker or None, config to run). The YAML stays offline; only this run gets mqtt."""
    from edge.sim.demo_broker import DemoBroker, find_mosquitto

    if cfg.mqtt is not None:
        print(f"this config has its own mqtt section ({cfg.mqtt.host}:{cfg.mqtt.port}): no demo broker")
        return None, cfg
    if no_broker:
        print("--no-broker: running offline (the gate works without a network)")
        return None, cfg
    binary = find_mosquitto()
    if binary is None:
        print("no Mosquitto installed: running offline; install mosquitto to see the cloud part too")
        return None, cfg
    broker = DemoBroker(binary, cfg.gateway.data_dir / "mosquitto")
    try:
        broker.start()
    except (OSError, RuntimeError) as exc:
        print(f"could not start Mosquitto ({exc}): running offline")
        return None, cfg
    print(f"started a private Mosquitto on 127.0.0.1:{broker.port} to play the cloud (DEMO key)")
    return broker, cfg.model_copy(update={"mqtt": MqttSection(host="127.0.0.1", port=broker.port)})


def cmd_demo(args: argparse.Namespace) -> int:
    from edge.logs import setup_logging

    cfg = load_config_or_exit(args.config)
    cfg.gateway.data_dir.mkdir(parents=True, exist_ok=True)
    setup_logging("warning", "console")
    broker, run_cfg = _start_broker(cfg, getattr(args, "no_broker", False))
    ok = False
    try:
        cloud = DemoCloud(run_cfg) if broker is not None else None
        with contextlib.suppress(KeyboardInterrupt):
            ok = asyncio.run(run_demo(run_cfg, args.once, cloud=cloud))
    finally:
        if broker is not None:
            broker.stop()
    return 0 if ok else 1
