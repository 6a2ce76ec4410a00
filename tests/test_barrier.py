"""Barrier driver against a simulated relay board (a real pymodbus server over TCP): what the board saw."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from drivers.barrier import Barrier, BarrierConfig
from drivers.device import Grant
from drivers.modbus import ModbusTcpBusConfig
from drivers.modbus_bus import DeviceUnavailable, ModbusBus
from edge.app import Gateway
from edge.config import load_config
from edge.model import Decision
from edge.sim.relay_board import RelayBoardSim
from tests.support.devices import TestEnv as DevEnv
from tests.support.devices import env_for
from tests.support.gateway import SITE, Signer, gateway_config
from tests.support.modbus import eventually, free_port, tcp_board
from tests.support.ptys import PtyPair
from tests.test_gateway_e2e import outbox_rows

UNIT, OPEN, CLOSE, LOOP, UP, DOWN = 2, 0, 1, 0, 1, 2
FAST = {"timeout": 0.15, "retries": 1, "offline_after": 2, "probe_min_s": 0.1, "probe_max_s": 0.4,
        "poll_interval_s": 0.03}  # fmt: skip


def cfg(**kw: Any) -> BarrierConfig:
    base: dict[str, Any] = {"bus": "b0", "device_id": UNIT, "zone": "car", "direction": "in",
                            "open_coil": OPEN, "close_coil": CLOSE, "pulse_ms": 100, "loop_input": LOOP,
                            "close_delay_s": 0.3, "close_timeout_s": 1.0, "travel_s": 0.5}  # fmt: skip
    return BarrierConfig.model_validate({**base, **kw})


def on_writes(sim: RelayBoardSim, coil: int) -> list[float]:
    """Times the board saw ``coil`` switched on."""
    return [w.t for w in sim.writes_to(UNIT, coil) if w.on]


def grant(key: str | None = "card:04A1B2C3") -> Grant:
    return Grant(Decision("granted", "ok"), "nfc", key=key)


@pytest.fixture
async def rig() -> AsyncIterator[tuple[RelayBoardSim, ModbusBus, DevEnv]]:
    sim = RelayBoardSim([UNIT])
    port = free_port()
    async with tcp_board(sim, port):
        bus = ModbusBus("b0", ModbusTcpBusConfig.model_validate(
            {"type": "modbus_tcp", "host": "127.0.0.1", "port": port, **FAST}))  # fmt: skip
        await bus.start()
        try:
            yield sim, bus, env_for(bus)
        finally:
            await bus.stop()


async def started(env: DevEnv, **kw: Any) -> Barrier:
    barrier = Barrier("car-in", cfg(**kw), env)
    await barrier.start()
    assert await eventually(lambda: barrier.logic.loop is not None)  # the loop has been read once
    return barrier


async def vehicle(sim: RelayBoardSim, barrier: Barrier, present: bool) -> float:
    """Put a vehicle on the loop (or take it off) and wait until the barrier has seen it."""
    t = time.monotonic()
    sim.set_input(UNIT, LOOP, present)
    assert await eventually(lambda: barrier.logic.loop is present)
    return t


def test_config_outputs_and_checks() -> None:
    c = cfg(stop_coil=3)
    assert c.outputs() == [("b0", UNIT, 0, "open_coil"), ("b0", UNIT, 1, "close_coil"), ("b0", UNIT, 3, "stop_coil")]
    assert cfg(close_coil=None).outputs() == [("b0", UNIT, 0, "open_coil")]
    with pytest.raises(ValueError, match="different relays"):
        cfg(close_coil=0)
    with pytest.raises(ValueError, match="different inputs"):
        cfg(up_limit_input=LOOP)
    with pytest.raises(ValueError):
        cfg(direction="sideways")


async def test_grant_opens_and_closes_only_after_the_vehicle_left(rig: Any) -> None:
    sim, bus, env = rig
    barrier = await started(env)
    try:
        await barrier.grant(grant())
        assert len(on_writes(sim, OPEN)) == 1 and sim.coil(UNIT, OPEN)
        assert await eventually(lambda: not sim.coil(UNIT, OPEN))  # a pulse, not a hold
        t_in = await vehicle(sim, barrier, True)
        await asyncio.sleep(1.5)  # past close_timeout_s: a vehicle on the loop holds the arm up
        assert on_writes(sim, CLOSE) == []
        t_out = await vehicle(sim, barrier, False)
        assert await eventually(lambda: len(on_writes(sim, CLOSE)) == 1)
        t_close = on_writes(sim, CLOSE)[0]
        assert t_close > t_out + 0.3  # close_delay_s after the loop cleared
        assert t_close > t_in
        assert await eventually(lambda: not sim.coil(UNIT, CLOSE))
        assert await eventually(lambda: barrier.logic.arm == "down")
    finally:
        await barrier.stop()


async def test_no_vehicle_closes_after_close_timeout(rig: Any) -> None:
    sim, bus, env = rig
    barrier = await started(env)
    try:
        t0 = time.monotonic()
        await barrier.grant(grant())
        assert await eventually(lambda: len(on_writes(sim, CLOSE)) == 1, timeout=5)
        assert on_writes(sim, CLOSE)[0] - t0 >= 1.0
        assert len(on_writes(sim, OPEN)) == 1
    finally:
        await barrier.stop()


async def test_vehicle_under_a_falling_arm_raises_it_at_once(rig: Any) -> None:
    sim, bus, env = rig
    barrier = await started(env, pulse_ms=400, travel_s=1.5)
    try:
        await barrier.grant(grant())
        await vehicle(sim, barrier, True)
        await vehicle(sim, barrier, False)
        assert await eventually(lambda: len(on_writes(sim, CLOSE)) == 1)
        assert barrier.logic.arm == "falling"
        await vehicle(sim, barrier, True)  # while the close pulse is still held
        assert barrier.logic.arm == "rising"  # the open was commanded in the very step that saw the car
        assert await eventually(lambda: len(on_writes(sim, OPEN)) == 2)
        # the close contact was released before the open one was made
        close_off = [w.t for w in sim.writes_to(UNIT, CLOSE) if not w.on and w.t > on_writes(sim, CLOSE)[0]]
        assert close_off and close_off[0] <= on_writes(sim, OPEN)[1]
        assert barrier.logic.arm == "rising"
        assert [e.reason for e in env.events] == ["tailgating"]  # nobody granted this one
        await asyncio.sleep(1.2)
        assert len(on_writes(sim, CLOSE)) == 1  # still on the loop: no second close
    finally:
        await barrier.stop()


async def test_second_vehicle_is_tailgating_and_keeps_the_arm_up(rig: Any) -> None:
    sim, bus, env = rig
    barrier = await started(env, close_delay_s=3.0)  # room for the second car even on a loaded box
    try:
        await barrier.grant(grant())
        await vehicle(sim, barrier, True)
        await vehicle(sim, barrier, False)
        await vehicle(sim, barrier, True)  # a second car before the arm is down
        assert [(e.result, e.reason, e.direction, e.device) for e in env.events] == [
            ("alarm", "tailgating", "in", "car-in")
        ]
        await asyncio.sleep(1.2)
        assert on_writes(sim, CLOSE) == []
        t_out = await vehicle(sim, barrier, False)
        assert await eventually(lambda: len(on_writes(sim, CLOSE)) == 1)
        assert on_writes(sim, CLOSE)[0] > t_out
    finally:
        await barrier.stop()


async def test_a_second_grant_admits_a_second_vehicle_and_a_reread_does_not(rig: Any) -> None:
    sim, bus, env = rig
    barrier = await started(env, close_delay_s=0.6)
    try:
        await barrier.grant(grant("plate:A1"))
        await barrier.grant(grant("plate:A1"))  # the camera read the same plate again: one vehicle
        await barrier.grant(grant("plate:B2"))
        assert len(on_writes(sim, OPEN)) == 1  # up already: no write per grant
        for _ in range(2):
            await vehicle(sim, barrier, True)
            await vehicle(sim, barrier, False)
        assert env.events == []
        await vehicle(sim, barrier, True)  # a third: no grant left
        assert [e.reason for e in env.events] == ["tailgating"]
    finally:
        await barrier.stop()


async def test_fire_raises_and_keeps_it_up_then_closes_once_clear(rig: Any) -> None:
    sim, bus, env = rig
    barrier = await started(env)
    try:
        await barrier.fire(True)
        assert sim.coil(UNIT, OPEN)
        await vehicle(sim, barrier, True)
        await vehicle(sim, barrier, False)
        await asyncio.sleep(1.4)  # past close_delay_s and close_timeout_s
        assert on_writes(sim, CLOSE) == [] and sim.coil(UNIT, OPEN)  # held, not pulsed
        await barrier.grant(grant())  # a grant under fire changes nothing
        assert len(on_writes(sim, OPEN)) == 1
        await vehicle(sim, barrier, True)
        t_cleared = time.monotonic()
        await barrier.fire(False)
        assert not sim.coil(UNIT, OPEN)
        await asyncio.sleep(0.6)
        assert on_writes(sim, CLOSE) == []  # a vehicle is still on the loop
        await vehicle(sim, barrier, False)
        assert await eventually(lambda: len(on_writes(sim, CLOSE)) == 1)
        assert on_writes(sim, CLOSE)[0] > t_cleared + 0.6
        assert [e.reason for e in env.events] == []  # no tailgating alarm during an evacuation
    finally:
        await barrier.stop()


async def test_start_writes_nothing_on_and_stop_never_sends_it_down(rig: Any) -> None:
    sim, bus, env = rig
    sim.set_coil(UNIT, OPEN, True)  # left on by a previous run
    barrier = Barrier("car-in", cfg(stop_coil=3), env)
    await barrier.start()
    assert not any(w.on for w in sim.writes)
    assert {w.address for w in sim.writes} == {OPEN, CLOSE, 3} and not sim.coil(UNIT, OPEN)
    await barrier.grant(grant())
    n = len(sim.writes)
    await barrier.stop()  # the arm is up: shutdown leaves it up
    assert all(not w.on for w in sim.writes[n:]) and len(sim.writes) > n
    await asyncio.sleep(1.3)  # past close_timeout_s: no timer survives stop()
    assert on_writes(sim, CLOSE) == []


async def test_start_under_fire_holds_it_up(rig: Any) -> None:
    sim, bus, env = rig
    barrier = Barrier("car-in", cfg(), env)
    await barrier.start(fire=True)
    try:
        assert sim.coil(UNIT, OPEN) and on_writes(sim, CLOSE) == []
        await asyncio.sleep(1.3)
        assert sim.coil(UNIT, OPEN) and on_writes(sim, CLOSE) == []
    finally:
        await barrier.stop()
    assert not sim.coil(UNIT, OPEN)


async def test_self_closing_controller_is_tracked_and_reopened(rig: Any) -> None:
    sim, bus, env = rig
    barrier = await started(env, close_coil=None, close_delay_s=0.1, travel_s=1.0)
    try:
        assert await barrier.act("open", {}) is None  # a remote open is a grant with no credential
        await vehicle(sim, barrier, True)
        await vehicle(sim, barrier, False)
        assert await eventually(lambda: barrier.logic.arm == "falling")
        await vehicle(sim, barrier, True)
        assert len(on_writes(sim, OPEN)) == 2
        assert {w.address for w in sim.writes} == {OPEN}  # the close relay is not ours to drive
    finally:
        await barrier.stop()


async def test_limit_switches_win_over_travel_time(rig: Any) -> None:
    sim, bus, env = rig
    barrier = await started(env, up_limit_input=UP, down_limit_input=DOWN, travel_s=0.2, close_delay_s=0.1)
    try:
        await barrier.grant(grant())
        await asyncio.sleep(0.4)
        assert barrier.logic.arm == "rising"  # past travel_s, but the up limit has not said so
        sim.set_input(UNIT, UP, True)
        assert await eventually(lambda: barrier.logic.arm == "up")
        await vehicle(sim, barrier, True)
        await vehicle(sim, barrier, False)
        assert await eventually(lambda: len(on_writes(sim, CLOSE)) == 1)
        sim.set_input(UNIT, UP, False)
        await asyncio.sleep(0.4)
        assert barrier.logic.arm == "falling"  # no down limit yet: still on its way down
        await vehicle(sim, barrier, True)
        assert len(on_writes(sim, OPEN)) == 2  # re-raised long after travel_s
        await vehicle(sim, barrier, False)
        sim.set_input(UNIT, DOWN, True)
        assert await eventually(lambda: barrier.logic.arm == "down")
    finally:
        await barrier.stop()


async def test_offline_board_fails_the_grant(rig: Any) -> None:
    sim, bus, env = rig
    barrier = await started(env)
    try:
        sim.remove_device(UNIT)
        assert await eventually(lambda: not barrier.online)
        with pytest.raises(DeviceUnavailable):
            await barrier.grant(grant())
        assert await barrier.act("open", {}) == "device_unavailable"
        assert barrier.logic.loop is None  # unknown: nothing will close on it
        sim.add_device(UNIT)
        assert await eventually(lambda: barrier.online, timeout=5)
        await barrier.grant(grant())
        assert sim.coil(UNIT, OPEN)
    finally:
        await barrier.stop()


async def test_an_unexpected_error_in_a_coil_write_fails_that_grant_only(rig: Any) -> None:
    sim, bus, env = rig
    barrier = await started(env)
    real = bus.write_coil
    calls = 0

    async def buggy(unit: int, coil: int, on: bool, **kw: Any) -> None:  # the first open: not a DeviceUnavailable
        nonlocal calls
        calls += coil == OPEN and on
        if calls == 1 and coil == OPEN and on:
            raise RuntimeError("bug")
        await real(unit, coil, on, **kw)

    bus.write_coil = buggy  # type: ignore[method-assign]
    try:
        with pytest.raises(DeviceUnavailable, match="bug"):
            await asyncio.wait_for(barrier.grant(grant()), 5)
        # The coil worker still runs, and the failed open is not taken for an arm on its way up: the
        # next grant writes open again (no silent grant with nothing switched).
        await asyncio.wait_for(barrier.grant(grant("card:04A1B2C4")), 5)
        assert len(on_writes(sim, OPEN)) == 1
    finally:
        await barrier.stop()


# --- anti-passback through the real gateway: card reader ptys, whitelist, outbox on disk ----------------

CARD = "04A1B2C3"


def _barrier(unit: int, direction: str, reader: str, passback: str) -> dict[str, Any]:
    return {"bus": "b1", "device_id": unit, "zone": "car-north", "direction": direction, "open_coil": 0,
            "close_coil": 1, "pulse_ms": 100, "loop_input": 0, "close_delay_s": 0.2, "close_timeout_s": 5,
            "travel_s": 0.3, "passback": passback, "passback_group": "main", "readers": [reader]}  # fmt: skip


@contextlib.asynccontextmanager
async def car_park(tmp_path: Path, passback: str) -> AsyncIterator[Any]:
    """A door and two barriers (car-in on unit 2, car-out on unit 3) of one passback group; yields
    ``(board, start_gateway, swipe, rows)``; gateways started are stopped at the end."""
    board = RelayBoardSim([1, 2, 3])
    port = free_port()
    gateways: list[Gateway] = []
    async with tcp_board(board, port):
        with PtyPair(tmp_path, "in") as p_in, PtyPair(tmp_path, "out") as p_out:
            path = gateway_config(
                tmp_path, signer=Signer(), door={"readers": []},
                bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": port, **FAST},
                readers={"card-in": {"type": "serial", "port": str(p_in.b), "content": "card"},
                         "card-out": {"type": "serial", "port": str(p_out.b), "content": "card"}},
                extra={"barriers": {"car-in": _barrier(2, "in", "card-in", passback),
                                    "car-out": _barrier(3, "out", "card-out", passback)}},
            )  # fmt: skip
            fds = {r: os.open(p.a, os.O_RDWR | os.O_NOCTTY) for r, p in (("in", p_in), ("out", p_out))}

            async def start_gateway() -> Gateway:
                gw = Gateway(load_config(path))
                gateways.append(gw)
                await gw.start()
                assert await eventually(lambda: all(r.online for r in gw.readers.values()))
                assert await eventually(lambda: all(d.online for d in gw.devices.values()))
                return gw

            def rows() -> list[dict[str, Any]]:
                return [r for r in outbox_rows(tmp_path / "data") if r["device"] in ("car-in", "car-out")]

            async def swipe(where: str, n: int) -> dict[str, Any]:
                """Present the card at car-in/out; returns the n-th barrier event (1-based) once it is on disk."""
                os.write(fds[where], CARD.encode() + b"\r")
                assert await eventually(lambda: len(rows()) >= n)
                return rows()[n - 1]

            try:
                yield board, start_gateway, swipe, rows
            finally:
                for gw in gateways:
                    await gw.stop()
                for fd in fds.values():
                    os.close(fd)


async def drive_through(board: RelayBoardSim, gw: Gateway, barrier: str) -> None:
    dev = gw.devices[barrier]
    assert isinstance(dev, Barrier)
    unit = dev.cfg.device_id
    for present in (True, False):
        board.set_input(unit, 0, present)
        assert await eventually(lambda present=present: dev.logic.loop is present)  # type: ignore[misc]


def card_entry() -> Any:
    from edge.store import entry_from_wire

    return entry_from_wire({"kind": "card", "value": CARD, "subject": "resident:7", "zones": ["car-north"]})


async def test_hard_passback_survives_a_restart_and_a_whitelist_put_clears_it(tmp_path: Path) -> None:
    async with car_park(tmp_path, "hard") as (board, start_gateway, swipe, rows):
        gw = await start_gateway()
        gw.store.import_entries([card_entry()])
        ev = await swipe("in", 1)
        assert (ev["result"], ev["reason"], ev["direction"]) == ("granted", "ok", "in")
        assert await eventually(lambda: len([w for w in board.writes_to(2, 0) if w.on]) == 1)
        await drive_through(board, gw, "car-in")
        ev = await swipe("in", 2)  # in again without having gone out
        assert (ev["result"], ev["reason"], ev["direction"]) == ("denied", "passback", "in")

        await gw.stop()
        gw = await start_gateway()  # the passage is on disk
        ev = await swipe("in", 3)
        assert (ev["result"], ev["reason"]) == ("denied", "passback")
        ev = await swipe("out", 4)
        assert (ev["result"], ev["reason"], ev["direction"]) == ("granted", "ok", "out")
        await drive_through(board, gw, "car-out")
        ev = await swipe("in", 5)
        assert (ev["result"], ev["reason"]) == ("granted", "ok")
        await drive_through(board, gw, "car-in")
        assert (await swipe("in", 6))["reason"] == "passback"

        from edge.store import entry_to_wire

        put = {"op": "put", "entry": entry_to_wire(card_entry())}
        assert await gw.store.apply_delta({"type": "delta", "from": 0, "to": 1, "ops": [put]})
        assert await eventually(lambda: gw.devices["car-in"].status()["arm"] == "down")
        ev = await swipe("in", 7)  # the cloud re-issued the card: its old passages no longer count
        assert (ev["result"], ev["reason"]) == ("granted", "ok")
        # a pulse per grant, none per denial (the last one follows its event: wait for the write)
        assert await eventually(lambda: len([w for w in board.writes_to(2, 0) if w.on]) == 3)
        assert all(r["method"] == "nfc" for r in rows())


async def test_soft_passback_grants_and_raises_an_alarm(tmp_path: Path) -> None:
    async with car_park(tmp_path, "soft") as (board, start_gateway, swipe, rows):
        gw = await start_gateway()
        gw.store.import_entries([card_entry()])
        await swipe("in", 1)
        await drive_through(board, gw, "car-in")
        assert await eventually(lambda: gw.devices["car-in"].status()["arm"] == "down")
        await swipe("in", 2)
        assert await eventually(lambda: len(rows()) == 3)
        assert [(r["result"], r["reason"], r["direction"]) for r in rows()] == [
            ("granted", "ok", "in"), ("granted", "ok", "in"), ("alarm", "passback", "in")]  # fmt: skip
        assert await eventually(lambda: len([w for w in board.writes_to(2, 0) if w.on]) == 2)


# --- the passback file ------------------------------------------------------------------------------


async def test_passback_file_damaged_or_edited_by_the_cloud(tmp_path: Path) -> None:
    from drivers.passback import FILE, PassbackStore
    from edge.store import WhitelistStore, entry_to_wire

    (tmp_path / FILE).write_bytes(b"SQLite format 3\x00" + b"\xff" * 5000)  # a damaged file
    env = DevEnv({}, None, lambda e: None, state_dir=tmp_path)  # type: ignore[arg-type]
    store = PassbackStore.for_env(env)
    assert store.problem is not None and "moved to" in store.problem
    assert any(p.name.startswith(f"{FILE}.damaged-") for p in tmp_path.iterdir())
    store.record("card:04a1b2c3", "main", "in")
    store.record("plate:京A12345", "main", "out")
    store.record("plate:京A12345", "east", "in")
    assert store.last("card:04A1B2C3", "main") == "in" and store.last("card:04A1B2C3", "east") is None
    wl = WhitelistStore(tmp_path / "whitelist.db")
    try:
        put = {"op": "put", "entry": entry_to_wire(card_entry())}
        dele = {"op": "del", "kind": "plate", "value": "京A12345"}
        assert await wl.apply_delta({"type": "delta", "from": 0, "to": 1, "ops": [put, dele]})
    finally:
        wl.close()
    assert store.count() == 0
    store.record("card:04A1B2C3", "main", "out")
    store.release()
    reopened = PassbackStore(tmp_path)  # a restart reads it back
    assert reopened.last("card:04A1B2C3", "main") == "out" and reopened.problem is None
    reopened.close()


def test_example_config_and_the_output_overlap_check(tmp_path: Path) -> None:
    from edge.config import ConfigError

    root = Path(__file__).resolve().parent.parent
    cfg_ok = load_config(root / "config" / "example-barrier.yaml")
    assert {d for _s, d, _c in cfg_ok.devices()} >= {"car-in", "car-out", "north-gate"}
    text = (root / "config" / "example-barrier.yaml").read_text(encoding="utf-8")
    clash = tmp_path / "clash.yaml"  # the exit barrier's open relay on the door's board and coil
    clash.write_text(text.replace("    device_id: 3\n", "    device_id: 1\n"), encoding="utf-8")
    # Reported at the later line, naming the earlier: the same whatever order the drivers registered in.
    msg = r"barriers\.car-out\.open_coil: relay bus 'relays' unit 1 coil 0 is already driven by doors\.north-gate"
    with pytest.raises(ConfigError, match=msg):
        load_config(clash)


async def test_a_remote_or_local_open_at_a_barrier_says_which_way(tmp_path: Path) -> None:
    """A remote open (R/cmd through the command layer) and `edge open` raise the arm and their events
    carry the barrier's direction, like a card's (mqtt.md: optional on barrier events)."""
    from edge.cloud.commands import CommandContext, handle_command
    from edge.cloud.replay import ReplayStore
    from edge.control import _handle
    from edge.sim.cloud_client import command_claims
    from edge.tokens import mint_token

    async with car_park(tmp_path, "none") as (board, start_gateway, _swipe, rows):
        gw = await start_gateway()
        signer = Signer()
        gw.policy = dataclasses.replace(gw.policy, keys={signer.kid: signer.key.public_key()})
        replay = ReplayStore(tmp_path / "replay.db")
        results: list[dict[str, object]] = []
        ctx = CommandContext("gw-test", gw, replay, lambda: gw.policy, False, lambda: None, results.append)
        claims = command_claims(SITE, "gw-test", "open", "car-out", by="staff:3")
        jti, outcome = await handle_command(ctx, mint_token(signer.key, signer.kid, claims).encode())
        assert (jti, outcome) == (claims["jti"], "ok") and results[0]["ok"] is True
        assert await eventually(lambda: len([w for w in board.writes_to(3, 0) if w.on]) == 1)
        ev = rows()[-1]
        assert (ev["device"], ev["method"], ev["result"], ev["direction"]) == ("car-out", "remote", "granted", "out")

        assert await _handle(gw, {"cmd": "open", "door": "car-in", "by": "installer"}) == {"ok": True, "error": None}
        assert await eventually(lambda: len([w for w in board.writes_to(2, 0) if w.on]) == 1)
        ev = rows()[-1]
        assert (ev["device"], ev["subject"], ev["direction"]) == ("car-in", "local:installer", "in")
        replay.close()


async def test_status_shows_each_watched_input_by_role(tmp_path: Path) -> None:
    """Device.inputs() is what a barrier watches (its loop here) and `edge status` shows its value, so
    an installer sees the loop detector change without a card."""
    async with car_park(tmp_path, "none") as (board, start_gateway, _swipe, _rows):
        gw = await start_gateway()
        assert gw.devices["car-in"].inputs() == {"loop": ("b1", 2, 0)}
        clear = {"car-in": {"loop": False}, "car-out": {"loop": False}}  # None until debounced
        assert await eventually(lambda: gw.status()["inputs"] == clear)
        board.set_input(2, 0, True)
        assert await eventually(lambda: gw.status()["inputs"]["car-in"] == {"loop": True})
        assert gw.devices["car-in"].status()["vehicle"] is True  # the watch registered from inputs()
        board.set_input(2, 0, False)
        assert await eventually(lambda: gw.status()["inputs"]["car-in"] == {"loop": False})
