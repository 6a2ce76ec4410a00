"""What the simulated relay boards did, in words: driven by the writes each board recorded.

The lines come from the board's side (RelayBoardSim.on_write), never from asking the product, so
the demo shows what a real board would have done. Only changes are told (a safe-state write of a
coil already off is no news), the end of a short pulse is left out, and the coils one request
switched for one device are told in one line (an elevator's FC15 of several floors).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from edge.sim.relay_board import FLASH_OFF_BASE, FLASH_ON_BASE, CoilWrite
from edge.sim.wiring import Coil, Output

PULSE_SLACK_S = 0.3  # a contact released within its device's pulse_ms plus this was a pulse: not told

# config key of a relay -> (said when it switches on, said when it switches off)
CONTACTS: dict[str, tuple[str, str]] = {
    "lock_coil": ("lock released", "locked"),
    "open_coil": ("OPEN contact: arm goes UP", "OPEN contact released"),
    "close_coil": ("CLOSE contact: arm goes DOWN", "CLOSE contact released"),
    "stop_coil": ("STOP contact on", "STOP contact off"),
    "select_outputs": ("button pressed for floor {f}", "button released"),
    "hall_call_outputs": ("hall call at floor {f}", "hall call released"),
}


class BoardNarrator:
    """Turns one bus's coil writes into lines for ``say``; ``outputs`` names the device of each relay."""

    def __init__(self, bus_id: str, outputs: dict[Coil, Output], say: Callable[[str], None]) -> None:
        self.bus_id = bus_id
        self.outputs = outputs
        self.say = say
        self._state: dict[tuple[int, int], tuple[bool, float]] = {}  # (unit, coil) -> (on, since)
        self._floors: dict[tuple[str, bool], list[int]] = {}  # (device, enabled) -> floors, this tick
        self._flush: asyncio.Handle | None = None

    def write(self, w: CoilWrite) -> None:
        base, n = w.address & 0xFF00, w.address & 0x00FF
        out = self.outputs.get((self.bus_id, w.device_id, n))
        who = out.device if out is not None else f"unit {w.device_id}"
        if base in (FLASH_ON_BASE, FLASH_OFF_BASE):
            what = "lock RELEASED" if out is not None and out.key == "lock_coil" else f"coil {n} ON"
            if base == FLASH_OFF_BASE:
                what = f"coil {n} OFF"
            self._state[(w.device_id, n)] = (base == FLASH_OFF_BASE, w.t)  # where the flash ends
            self.say(f"  [relay board] {who}: {what} for {w.value * 0.1:.1f} s (flash pulse)")
            return
        was, since = self._state.get((w.device_id, n), (False, w.t))
        self._state[(w.device_id, n)] = (w.on, w.t if w.on != was else since)
        if w.on == was:
            return
        key = out.key if out is not None else None
        if isinstance(key, tuple) and key[0] == "floor_outputs":
            enabled = w.on != (getattr(out.model, "enable_when", "energised") == "de-energised")
            self._floors.setdefault((who, enabled), []).append(key[1])
            if self._flush is None:
                self._flush = asyncio.get_running_loop().call_soon(self._say_floors)
            return
        name, floor = (key[0], key[1]) if isinstance(key, tuple) else (key, None)
        on_text, off_text = CONTACTS.get(str(name), (f"coil {n} ON", f"coil {n} OFF"))
        pulse_s = float(getattr(out.model, "pulse_ms", 0) if out is not None else 0) / 1000
        if not w.on and name != "lock_coil" and w.t - since <= pulse_s + PULSE_SLACK_S:
            return  # the end of a pulse
        self.say(f"  [relay board] {who}: {(on_text if w.on else off_text).format(f=floor)}")

    def _say_floors(self) -> None:
        self._flush = None
        for (who, enabled), floors in sorted(self._floors.items()):
            s = "s" if len(floors) > 1 else ""
            listed = ", ".join(str(f) for f in sorted(floors))
            self.say(f"  [relay board] {who}: floor{s} {listed} {'ENABLED' if enabled else 'disabled'}")
        self._floors.clear()


def coils_on(writes: list[CoilWrite], unit: int, coil: int, after: float = 0.0) -> list[float]:
    """Times the coil was switched on at or after ``after`` (FC05 on, FC15 bit, or a flash-on)."""
    return [
        w.t
        for w in writes
        if w.device_id == unit and w.t >= after
        and ((w.address == coil and w.on) or w.address == FLASH_ON_BASE + coil)
    ]  # fmt: skip


def coils_off(writes: list[CoilWrite], unit: int, coil: int, after: float = 0.0) -> list[float]:
    """Times the coil was switched off at or after ``after`` (FC05 off or FC15 bit)."""
    return [w.t for w in writes if w.device_id == unit and w.t >= after and w.address == coil and not w.on]


def now() -> float:
    """The boards' clock (CoilWrite.t)."""
    return time.monotonic()


def describe_state(board: Any, units: list[int], channels: int = 8) -> list[str]:
    """One line per unit: which coils are on and which inputs are active, for the prompt's `boards`."""
    lines = []
    for u in units:
        on = [str(c) for c in range(channels) if board.coil(u, c)]
        ins = [str(i) for i in range(channels) if board.input(u, i)]
        lines.append(f"  unit {u}: coils on [{', '.join(on)}], inputs on [{', '.join(ins)}]")
    return lines
