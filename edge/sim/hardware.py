"""The simulated hardware of a config (relay boards, pty scanners, the world's inputs) and DEMO-key codes.

Shared by `edge sim` and the scripted `edge demo`; it imports only the product and other simulators.
The boards get every unit the config's models name (edge/sim/wiring.py) and boot in a quiet site's
state: door contacts closed, loops clear, fire contacts clear. What they do is told from their own
recorded writes (edge/sim/board_view.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.config import Config
from edge.sim.demo_key import DEMO_KID, demo_private_key
from edge.sim.wiring import WorldInput, board_units, outputs, readers_of, world_inputs

DEMO_WHITELIST = Path(__file__).resolve().parents[2] / "config" / "demo-whitelist.json"
DEMO_CAR_PLATE = "沪B7C316"  # a visitor's car in the demo whitelist


def mint_demo_code(
    cfg: Config,
    kind: str = "visitor",
    sub: str = "visitor:88",
    ttl: int = 3600,
    uses: int | None = 5,
    zones: list[str] | None = None,
    floors: list[int] | None = None,
) -> str:
    """A code signed with the public DEMO key; only a config trusting kid demo-only-2026 accepts it."""
    from edge.ids import new_event_id
    from edge.tokens import mint_token

    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": cfg.gateway.site,
        "sub": sub,
        "kind": kind,
        "jti": "demo-" + new_event_id(),
        "nbf": now - 5,
        "exp": now + ttl,
        "zones": zones or sorted({d.zone for d in cfg.doors.values()}) or ["*"],
    }
    if uses is not None:
        claims["uses"] = uses
    if floors:
        claims["floors"] = floors
    return mint_token(demo_private_key(), DEMO_KID, claims)


def first_device(cfg: Config, field: str) -> str | None:
    """The first device whose config has ``field`` (``lock_coil``: a door, ``loop_input``: a barrier,
    ``floor_outputs``: a lift): the one the prompt's commands act on."""
    return next((dev_id for _s, dev_id, m in cfg.devices() if hasattr(m, field)), None)


class SimHardware:
    """Relay boards and scanners for every simulated-able device of a config, and the world's inputs."""

    def __init__(self, cfg: Config, say: Callable[[str], None] = print) -> None:
        from edge.sim.board_view import BoardNarrator
        from edge.sim.relay_board import RelayBoardSim
        from edge.sim.scanner import SimScanner

        self.cfg = cfg
        self.say = say
        self.boards: dict[str, Any] = {}
        self.scanners: dict[str, Any] = {}
        self.inputs = world_inputs(cfg)
        self._tasks: list[asyncio.Task[None]] = []
        units, outs = board_units(cfg), outputs(cfg)
        for bid, bus in cfg.buses.items():
            if bus.type == "modbus_tcp":
                used = [c for b, _u, c in outs if b == bid] + [i.input for i in self.inputs if i.bus == bid]
                board = RelayBoardSim(
                    device_ids=sorted(units.get(bid, ())) or [1], channels=max([7, *used]) + 1
                )
                board.on_write(BoardNarrator(bid, outs, say).write)
                self.boards[bid] = board
        for wi in self.inputs:
            if wi.bus in self.boards:
                self.boards[wi.bus].set_input(wi.unit, wi.input, wi.resting)
        for rid, r in cfg.readers.items():
            if r.type == "serial":
                self.scanners[rid] = SimScanner(Path(r.port), terminator=b"\r")

    async def start(self) -> None:
        for bid, board in self.boards.items():
            bus = self.cfg.buses[bid]
            self._tasks.append(asyncio.create_task(board.serve_tcp(bus.host, bus.port)))  # type: ignore[union-attr]
        for sc in self.scanners.values():
            await sc.start()
        await asyncio.sleep(0.3)  # let the servers bind before the gateway connects

    async def stop(self) -> None:
        for sc in self.scanners.values():
            with contextlib.suppress(Exception):
                await sc.stop()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- readers ----------------------------------------------------------------------------
    def scanner_for(self, content: str, device: str | None = None) -> str | None:
        """Id of the simulated reader of ``content`` serving ``device`` (any device: the first one)."""
        if device is not None:
            rid = next((r for r, c in readers_of(self.cfg, device).items() if c == content), None)
            if rid in self.scanners:
                return rid
        return next((r for r in self.scanners if self.cfg.readers[r].content == content), None)

    def send(self, reader_id: str | None, text: str) -> bool:
        """A read at a simulated reader; False (and a line said) when there is no such reader."""
        sc = self.scanners.get(reader_id) if reader_id is not None else None
        if sc is None:
            self.say(f"  (no simulated reader {reader_id or 'of that kind'} in this config)")
            return False
        sc.send(text.strip())
        return True

    def type_line(self, line: str) -> bool:
        """At the first door: `card:XXXX` to its card reader, anything else to its QR scanner."""
        door = first_device(self.cfg, "lock_coil")
        if line.lower().startswith("card:"):
            return self.send(self.scanner_for("card", door), line[5:])
        return self.send(self.scanner_for("qr", door), line)

    def car_credential(self, barrier: str) -> tuple[str | None, str]:
        """(plate reader of ``barrier``, the demo car's plate)."""
        return self.scanner_for("plate", barrier), DEMO_CAR_PLATE

    # --- the world's inputs -----------------------------------------------------------------
    def world(self, field: str, owner: str | None = None) -> list[WorldInput]:
        """The simulated inputs of one kind (``loop_input``, ``input`` for fire, ``door_sensor_input``)."""
        return [i for i in self.inputs if i.field == field and i.bus in self.boards
                and (owner is None or i.owner == owner)]  # fmt: skip

    def is_active(self, wi: WorldInput) -> bool:
        return bool(self.boards[wi.bus].input(wi.unit, wi.input) == wi.active_value)

    def set_active(self, wi: WorldInput, active: bool) -> float:
        """Set a loop / door contact / fire contact; returns the board time it changed."""
        self.boards[wi.bus].set_input(wi.unit, wi.input, wi.active_value if active else not wi.active_value)
        text = {
            "loop_input": ("a car is on the loop of {}", "the loop of {} is clear"),
            "door_sensor_input": ("door {} closed", "door {} OPENED"),
            "input": ("FIRE signalled by {}", "fire contact {} clear"),
        }[wi.field][0 if active else 1]
        self.say(f"  [world] {text.format(wi.label)}")
        return time.monotonic()
