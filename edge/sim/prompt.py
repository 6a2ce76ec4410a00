"""The `edge sim` / `edge demo` prompt: typed lines drive the simulated world and its readers.

A code or `card:HEX` goes to the door's readers as before; the other commands move the world (a car on
a barrier's loop, the fire panel's contact, the door) or read at the lift. What follows is shown by the
boards' own writes (edge/sim/board_view.py), so the prompt never asks the product what it did.
"""

from __future__ import annotations

import asyncio
import sys

from edge.sim.board_view import describe_state
from edge.sim.hardware import SimHardware, first_device, mint_demo_code

HELP = """commands (anything else is a QR code at the door's scanner):
  card:HEX           a card at the door's card reader
  car [PLATE]        a car drives onto the barrier's loop and its plate (or tag) is read
  car-gone           the car leaves the loop (the arm closes after close_delay_s)
  loop               toggle the loop: a car with no read, or one leaving
  lift [CODE]        a QR code at the lift's scanner (no CODE: a fresh demo code for its top floor)
  lift-card HEX      a card at the lift's card reader (04A1B2C3: a resident of floor 3)
  fire / fire-clear  the fire panel's contact on / off: everything released / back to normal
  door               open or close the door (its contact): an open with no grant is door_forced
  read READER TEXT   any line at any simulated reader
  boards             coils and inputs of every simulated board
  help               this list"""


def handle(hw: SimHardware, line: str) -> None:
    """Carry out one typed line."""
    text = line.strip()
    word, _, rest = text.partition(" ")
    cmd, arg = word.lower(), rest.strip()
    if not text:
        return
    if cmd in ("help", "?"):
        hw.say(HELP)
    elif cmd in ("car", "car-gone", "loop"):
        _car(hw, cmd, arg)
    elif cmd in ("fire", "fire-clear"):
        contacts = hw.world("input")
        if not contacts:
            hw.say("  (no fire section with an input on a simulated board in this config)")
        for wi in contacts[:1]:
            hw.set_active(wi, cmd == "fire")
    elif cmd == "door":
        sensors = hw.world("door_sensor_input")
        if not sensors:
            hw.say("  (no door contact on a simulated board in this config)")
        for wi in sensors[:1]:
            hw.set_active(wi, not hw.is_active(wi))
    elif cmd in ("lift", "lift-card"):
        _lift(hw, cmd, arg)
    elif cmd == "read":
        rid, _, what = arg.partition(" ")
        hw.send(rid, what)
    elif cmd == "boards":
        for bid, board in hw.boards.items():
            hw.say(f"  board of bus {bid}:")
            for ln in describe_state(board, board.device_ids(), board.channels):
                hw.say(ln)
    else:
        hw.type_line(text)


def _car(hw: SimHardware, cmd: str, arg: str) -> None:
    barrier = first_device(hw.cfg, "loop_input")
    loops = hw.world("loop_input", barrier) if barrier is not None else []
    if barrier is None or not loops:
        hw.say("  (no barrier with a loop on a simulated board in this config)")
        return
    loop = loops[0]
    if cmd == "loop":
        hw.set_active(loop, not hw.is_active(loop))
    elif cmd == "car-gone":
        hw.set_active(loop, False)
    else:
        hw.set_active(loop, True)
        reader, cred = hw.car_credential(barrier)
        hw.send(reader, arg or cred)


def _lift(hw: SimHardware, cmd: str, arg: str) -> None:
    lift = first_device(hw.cfg, "floor_outputs")
    if lift is None:
        hw.say("  (no lift in this config)")
        return
    if cmd == "lift-card":
        hw.send(hw.scanner_for("card", lift), arg or "04A1B2C3")
        return
    if not arg:
        model = next(m for _s, d, m in hw.cfg.devices() if d == lift)
        top = max(model.floor_outputs)
        arg = mint_demo_code(hw.cfg, sub="visitor:501", zones=[model.zone], floors=[top])
        hw.say(f"  (a demo visitor code for {lift}, floor {top})")
    hw.send(hw.scanner_for("qr", lift), arg)


async def stdin_lines(hw: SimHardware) -> None:
    """Typed lines to the simulated world until end of input."""
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        handle(hw, line)
