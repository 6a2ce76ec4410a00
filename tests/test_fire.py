"""Fire linkage (drivers/fire.py) with real parts: pymodbus relay boards whose discrete inputs play the
fire panel's contact, the in-process Gateway (or a real `edge run`), coils asserted at the board and
events as rows in the outbox on disk."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge.app import Gateway
from edge.config import ConfigError, load_config
from edge.sim.relay_board import RelayBoardSim
from tests.support.daemon import ROOT, Daemon
from tests.support.gateway import Signer, free_port, gateway_config
from tests.support.modbus import eventually, tcp_board
from tests.test_gateway_e2e import outbox_rows

FIRE_IN = 7  # discrete input of unit 1 wired to the fire panel
COILS = {"d-normal": 0, "d-hold": 1, "d-lock": 2}


def bus(port: int, **kw: Any) -> dict[str, Any]:
    return {"type": "modbus_tcp", "host": "127.0.0.1", "port": port, "timeout": 0.3, "retries": 0,
            "offline_after": 1, "probe_min_s": 0.1, "probe_max_s": 0.2, "poll_interval_s": 0.03,
            "debounce_ms": 20, **kw}  # fmt: skip


def doors(**extra: dict[str, Any]) -> dict[str, Any]:
    out = {d: {"bus": "b1", "device_id": 1, "zone": "north-gate", "lock_coil": c, "pulse_ms": 300,
               "pulse_mode": "coil"} for d, c in COILS.items()}  # fmt: skip
    out.update(extra)
    return out


def write_config(
    tmp_path: Path, port: int, fire: dict[str, Any], signer: Signer | None = None, **extra: Any
) -> Path:
    fire = {"inputs": [{"bus": "b1", "device_id": 1, "input": FIRE_IN}], **fire}
    return gateway_config(tmp_path, signer=signer or Signer(), bus=bus(port), readers={},
                          extra={"doors": doors(), "fire": fire, **extra})  # fmt: skip


@contextlib.asynccontextmanager
async def running(cfg_path: Path) -> AsyncIterator[Gateway]:
    gw = Gateway(load_config(cfg_path))
    try:
        await gw.start()
        yield gw
    finally:
        await gw.stop()


@contextlib.asynccontextmanager
async def board(*units: int) -> AsyncIterator[tuple[RelayBoardSim, int]]:
    sim = RelayBoardSim(units or (1,))
    port = free_port()
    async with tcp_board(sim, port):
        yield sim, port


def fire_rows(data: Path) -> list[tuple[str, str, str]]:
    return [(r["reason"], r["result"], r["device"]) for r in outbox_rows(data) if r["method"] == "fire"]


def locks(sim: RelayBoardSim) -> dict[str, bool]:
    return {d: sim.coil(1, c) for d, c in COILS.items()}


async def set_modes(gw: Gateway, sim: RelayBoardSim) -> None:
    assert await gw.act("d-hold", "hold_open", {}) is None
    assert await gw.act("d-lock", "lock", {}) is None
    assert locks(sim) == {"d-normal": False, "d-hold": True, "d-lock": False}


ALL_ON = dict.fromkeys(COILS, True)
MODES = {"d-normal": False, "d-hold": True, "d-lock": False}  # what the modes want without a fire


# --- config ------------------------------------------------------------------------------------


def test_config_words_bus_refs_and_refusals(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, 1502, {"reset": "manual", "on_input_lost": "release"}))
    fire = cfg.section("fire")
    assert (fire.release, fire.reset, fire.on_input_lost) == ("all", "manual", "release")
    assert fire.bus_refs() == [(("inputs", 0, "bus"), "b1")]
    bad = [
        ({"reset": True}, "fire.reset"),  # `reset: on` in YAML: a word is required
        ({"on_input_lost": "drop"}, "fire.on_input_lost"),
        ({"release": []}, "fire.release"),
        ({"inputs": []}, "fire.inputs"),
        ({"inputs": [{"bus": "nope", "device_id": 1, "input": 0}]}, "fire.inputs[0].bus: no bus 'nope'"),
        ({"inputs": [{"bus": "b1", "device_id": 1, "input": 0}] * 2}, "twice"),
    ]
    default_inputs = [{"bus": "b1", "device_id": 1, "input": FIRE_IN}]
    for fire_cfg, needle in bad:
        fire_cfg = {"inputs": default_inputs, **fire_cfg}
        path = gateway_config(tmp_path, signer=Signer(), bus=bus(1502), readers={},
                              extra={"doors": doors(), "fire": fire_cfg})  # fmt: skip
        with pytest.raises(ConfigError) as err:
            load_config(path)
        assert needle in str(err.value), (fire_cfg, str(err.value))


def test_release_names_an_unknown_device(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"fire.release\[1\]: no device 'd-typo'"):
        load_config(write_config(tmp_path, 1502, {"release": ["d-normal", "d-typo"]}))


# --- behaviour -----------------------------------------------------------------------------------


async def test_fire_releases_every_door_whatever_its_mode_and_auto_reset(tmp_path: Path) -> None:
    async with board() as (sim, port):
        cfg = write_config(tmp_path, port, {"reset": "auto"})
        data = tmp_path / "data"
        async with running(cfg) as gw:
            await set_modes(gw, sim)
            assert await gw.act("d-normal", "open", {}) is None  # a pulse running when the fire comes
            sim.set_input(1, FIRE_IN, True)
            assert await eventually(lambda: locks(sim) == ALL_ON)
            assert await eventually(lambda: fire_rows(data) == [("fire_alarm", "alarm", "gateway")])
            # held: the pulse's relock and a lock-mode door do not lock it again
            await asyncio.sleep(0.5)
            assert locks(sim) == ALL_ON
            assert await gw.act("d-lock", "lock", {}) is None  # a mode change under fire waits
            assert locks(sim) == ALL_ON
            st = gw.status()["services"]["fire"]  # type: ignore[index]
            assert st["active"] is True and st["reset"] == "auto" and st["inputs"][0]["fire"] is True
            sim.set_input(1, FIRE_IN, False)
            assert await eventually(lambda: locks(sim) == MODES)
            assert await eventually(lambda: len(fire_rows(data)) == 2)
            assert fire_rows(data)[1] == ("fire_cleared", "info", "gateway")
            assert gw.status()["services"]["fire"]["active"] is False  # type: ignore[index]


async def test_manual_reset_through_gateway_act(tmp_path: Path) -> None:
    async with board() as (sim, port):
        data = tmp_path / "data"
        async with running(write_config(tmp_path, port, {"reset": "manual"})) as gw:
            await set_modes(gw, sim)
            sim.set_input(1, FIRE_IN, True)
            assert await eventually(lambda: locks(sim) == ALL_ON)
            assert await gw.act("fire", "normal", {"by": "guard"}) == "fire_alarm"  # input still on
            sim.set_input(1, FIRE_IN, False)
            assert await eventually(lambda: gw.services["fire"].status()["inputs"][0]["fire"] is False)
            await asyncio.sleep(0.3)  # several polls: manual stays released
            assert locks(sim) == ALL_ON and gw.services["fire"].status()["active"] is True
            assert fire_rows(data) == [("fire_alarm", "alarm", "gateway")]
            assert await gw.act("fire", "normal", {"by": "guard"}) is None
            assert locks(sim) == MODES  # restored before the reset returns
            rows = [r for r in outbox_rows(data) if r["method"] == "fire"]
            assert [(r["reason"], r["subject"]) for r in rows] == [
                ("fire_alarm", None),
                ("fire_cleared", "guard"),
            ]
            assert gw.supports("fire", "normal") and not gw.supports("fire", "open")


async def test_fire_on_at_start_up_is_the_first_write(tmp_path: Path) -> None:
    async with board() as (sim, port):
        sim.set_input(1, FIRE_IN, True)
        data = tmp_path / "data"
        async with running(write_config(tmp_path, port, {"reset": "auto"})):
            for coil in COILS.values():
                first = sim.writes_to(1, coil)[0]
                assert first.on, f"coil {coil}: first write {first}"
            assert fire_rows(data) == [("fire_alarm", "alarm", "gateway")]
            sim.set_input(1, FIRE_IN, False)
            assert await eventually(lambda: not any(locks(sim).values()))
        assert json.loads((data / "fire.json").read_text())["active"] is False


async def test_restart_keeps_a_manual_fire_released(tmp_path: Path) -> None:
    async with board() as (sim, port):
        cfg = write_config(tmp_path, port, {"reset": "manual"})
        data = tmp_path / "data"
        async with running(cfg):
            sim.set_input(1, FIRE_IN, True)
            assert await eventually(lambda: locks(sim) == ALL_ON)
            sim.set_input(1, FIRE_IN, False)
            await asyncio.sleep(0.2)
        assert not any(locks(sim).values())  # shutdown releases nothing
        assert json.loads((data / "fire.json").read_text())["active"] is True
        mark = len(sim.writes)
        async with running(cfg) as gw:
            for coil in COILS.values():
                after = [w for w in sim.writes[mark:] if w.address == coil]
                assert after and after[0].on, f"coil {coil} after restart: {after}"
            assert gw.services["fire"].status()["active"] is True
            assert fire_rows(data) == [("fire_alarm", "alarm", "gateway")]  # no second alarm
            assert await gw.act("fire", "normal", {"by": "guard"}) is None
            assert not any(locks(sim).values())
        mark = len(sim.writes)
        async with running(cfg):
            assert [w.on for w in sim.writes[mark:]] == [False] * len(COILS)
        assert [r for r, _, _ in fire_rows(data)] == ["fire_alarm", "fire_cleared"]


async def test_auto_fire_that_ended_while_down_is_cleared_at_start(tmp_path: Path) -> None:
    async with board() as (sim, port):
        cfg = write_config(tmp_path, port, {"reset": "auto"})
        data = tmp_path / "data"
        sim.set_input(1, FIRE_IN, True)
        async with running(cfg):
            assert locks(sim) == ALL_ON
        sim.set_input(1, FIRE_IN, False)
        mark = len(sim.writes)
        async with running(cfg):
            assert [w.on for w in sim.writes[mark:]] == [False] * len(COILS)
        assert [r for r, _, _ in fire_rows(data)] == ["fire_alarm", "fire_cleared"]


@pytest.mark.parametrize("policy", ["keep", "release"])
async def test_fire_input_board_offline(tmp_path: Path, policy: str) -> None:
    async with board(1, 2) as (sim, port):
        fire = {"inputs": [{"bus": "b1", "device_id": 2, "input": 0, "name": "panel"}],
                "on_input_lost": policy, "reset": "auto"}  # fmt: skip
        cfg = gateway_config(tmp_path, signer=Signer(), bus=bus(port), readers={},
                             extra={"doors": doors(), "fire": fire})  # fmt: skip
        data = tmp_path / "data"
        async with running(cfg) as gw:
            sim.remove_device(2)
            assert await eventually(lambda: ("device_offline", "alarm", "gateway") in fire_rows(data))
            offline = next(r for r in outbox_rows(data) if r["reason"] == "device_offline")
            assert offline["method"] == "fire" and offline["credential"] == "panel"
            if policy == "release":
                assert await eventually(lambda: locks(sim) == ALL_ON)
                assert ("fire_alarm", "alarm", "gateway") in fire_rows(data)
                assert await gw.act("fire", "normal", {}) == "fire_alarm"  # lost counts as fire
            else:
                await asyncio.sleep(0.3)
                assert not any(w.on for w in sim.writes_to(1)), "keep must release nothing"
                assert gw.services["fire"].status()["active"] is False
            sim.add_device(2)
            assert await eventually(lambda: ("device_online", "info", "gateway") in fire_rows(data))
            assert await eventually(lambda: not any(locks(sim).values()))
            want = ["device_offline", "device_online"]
            if policy == "release":
                want = ["device_offline", "fire_alarm", "device_online", "fire_cleared"]
            assert await eventually(lambda: [r for r, _, _ in fire_rows(data)] == want)


async def test_keep_holds_a_fire_while_its_board_is_lost(tmp_path: Path) -> None:
    async with board(1, 2) as (sim, port):
        fire = {"inputs": [{"bus": "b1", "device_id": 2, "input": 0}], "on_input_lost": "keep"}
        cfg = gateway_config(tmp_path, signer=Signer(), bus=bus(port), readers={},
                             extra={"doors": doors(), "fire": fire})  # fmt: skip
        async with running(cfg) as gw:
            sim.set_input(2, 0, True)
            assert await eventually(lambda: locks(sim) == ALL_ON)
            sim.remove_device(2)  # the panel's board dies during the fire: released it stays
            assert await eventually(lambda: gw.services["fire"].status()["inputs"][0]["lost"] is True)
            await asyncio.sleep(0.3)
            assert locks(sim) == ALL_ON
            assert await gw.act("fire", "normal", {}) == "fire_alarm"  # its last reading was fire


async def test_no_manual_reset_while_a_fire_input_board_is_lost(tmp_path: Path) -> None:
    async with board(1, 2) as (sim, port):
        fire = {
            "inputs": [{"bus": "b1", "device_id": 2, "input": 0}],
            "on_input_lost": "keep",
            "reset": "manual",
        }
        cfg = gateway_config(tmp_path, signer=Signer(), bus=bus(port), readers={},
                             extra={"doors": doors(), "fire": fire})  # fmt: skip
        async with running(cfg) as gw:
            sim.set_input(2, 0, True)
            assert await eventually(lambda: locks(sim) == ALL_ON)
            sim.set_input(2, 0, False)
            assert await eventually(lambda: gw.services["fire"].status()["inputs"][0]["fire"] is False)
            sim.remove_device(2)
            assert await eventually(lambda: gw.services["fire"].status()["inputs"][0]["lost"] is True)
            assert await gw.act("fire", "normal", {}) == "device_unavailable"
            assert locks(sim) == ALL_ON
            sim.add_device(2)
            assert await eventually(lambda: gw.services["fire"].status()["inputs"][0]["lost"] is False)
            assert await gw.act("fire", "normal", {}) is None
            assert not any(locks(sim).values())


async def test_a_wedged_board_does_not_hold_back_the_others(tmp_path: Path) -> None:
    async with board() as (sim, port), board() as (slow, port2):
        devs = {"d-slow": {"bus": "b2", "device_id": 1, "zone": "north-gate", "lock_coil": 0}, **doors()}
        fire = {"inputs": [{"bus": "b1", "device_id": 1, "input": FIRE_IN}], "release": list(devs)}
        cfg = gateway_config(tmp_path, signer=Signer(), bus=bus(port), readers={}, extra={
            "doors": devs, "fire": fire, "buses": {"b1": bus(port), "b2": bus(port2, timeout=1.0,
                                                                             offline_after=3)}})  # fmt: skip
        async with running(cfg):
            slow.set_delay(1, 3.0)  # acts at once, answers after the bus has given up (1 s)
            sim.set_input(1, FIRE_IN, True)
            assert await eventually(lambda: locks(sim) == ALL_ON)
            assert await eventually(lambda: any(w.on for w in slow.writes_to(1, 0)))
            t_slow = next(w.t for w in slow.writes_to(1, 0) if w.on)
            t_last = max(next(w.t for w in sim.writes_to(1, c) if w.on) for c in COILS.values())
            # released while the slow board's write was still unanswered (sent first in `release`)
            assert t_last < t_slow + 1.0, t_last - t_slow
            slow.set_delay(1, 0)


async def test_cloud_normal_command_resets_a_manual_fire(tmp_path: Path) -> None:
    from edge.cloud.commands import CommandContext, handle_command
    from edge.cloud.replay import ReplayStore
    from edge.sim.cloud_client import mint_command
    from tests.support.gateway import SITE

    signer = Signer()
    async with board() as (sim, port):
        data = tmp_path / "data"
        async with running(write_config(tmp_path, port, {"reset": "manual"}, signer)) as gw:
            results: list[dict[str, object]] = []
            ctx = CommandContext("gw-test", gw, ReplayStore(tmp_path / "replay.db"), lambda: gw.policy,
                                 False, lambda: None, results.append)  # fmt: skip

            async def normal() -> str:
                token = mint_command(signer.key, signer.kid, SITE, "gw-test", "normal", "fire", by="staff:7")
                return (await handle_command(ctx, token.encode()))[1]

            sim.set_input(1, FIRE_IN, True)
            assert await eventually(lambda: locks(sim) == ALL_ON)
            assert await normal() == "fire_alarm"
            sim.set_input(1, FIRE_IN, False)
            assert await eventually(lambda: gw.services["fire"].status()["inputs"][0]["fire"] is False)
            assert locks(sim) == ALL_ON
            assert await normal() == "ok"
            assert not any(locks(sim).values())
            assert [(r["ok"], r["error"]) for r in results] == [(False, "fire_alarm"), (True, None)]
            cleared = [r for r in outbox_rows(data) if r["reason"] == "fire_cleared"]
            assert len(cleared) == 1 and cleared[0]["subject"] == "staff:7"


BARRIER = {
    "bus": "b1",
    "device_id": 3,
    "zone": "north-gate",
    "direction": "in",
    "open_coil": 0,
    "close_coil": 1,
    "pulse_ms": 200,
    "loop_input": 0,
    "travel_s": 2.0,
    "close_delay_s": 0.2,
    "close_timeout_s": 0.3,
}
LIFT = {"zone": "north-gate", "grant_s": 10,
        "floor_outputs": {f: {"bus": "b1", "device_id": 4, "coil": f - 1} for f in (1, 2, 3)}}  # fmt: skip


async def test_barrier_falling_and_elevator_mid_grant(tmp_path: Path) -> None:
    async with board(1, 3, 4) as (sim, port):
        cfg = write_config(
            tmp_path, port, {"reset": "auto"}, barriers={"gate-b": BARRIER}, elevators={"lift": LIFT}
        )
        async with running(cfg) as gw:
            assert await gw.act("lift", "elevator_grant", {"floors": [2], "seconds": 10}) is None
            assert await gw.act("lift", "elevator_grant", {"floors": [3], "seconds": 1.5}) is None
            assert [sim.coil(4, c) for c in range(3)] == [False, True, True]
            assert await gw.act("gate-b", "open", {}) is None
            # no vehicle came: the controller is told to close; the arm is falling when the fire comes
            assert await eventually(lambda: any(w.on for w in sim.writes_to(3, 1)))
            assert gw.devices["gate-b"].status()["arm"] == "falling"
            sim.set_input(1, FIRE_IN, True)
            assert await eventually(
                lambda: sim.coil(3, 0) and [sim.coil(4, c) for c in range(3)] == [True] * 3
            )
            assert not sim.coil(3, 1) and locks(sim) == ALL_ON
            await asyncio.sleep(1.7)  # past the open pulse, the travel and the lift grant: all still held
            assert sim.coil(3, 0) and [sim.coil(4, c) for c in range(3)] == [True] * 3
            closes = len([w for w in sim.writes_to(3, 1) if w.on])
            sim.set_input(1, FIRE_IN, False)
            assert await eventually(lambda: not sim.coil(3, 0))  # open contact let go...
            closed = lambda: len([w for w in sim.writes_to(3, 1) if w.on]) == closes + 1  # noqa: E731
            assert await eventually(closed)  # ...and the arm sent down, the loop being clear
            # the grant still running is kept, the one that ended under the fire is not
            assert await eventually(lambda: [sim.coil(4, c) for c in range(3)] == [False, True, False])


# --- the CLI against a real `edge run` -------------------------------------------------------------


async def _edge(*args: str) -> tuple[int, dict[str, Any]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge.cli", *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, (json.loads(out) if out.strip() else {"stderr": err.decode()})


async def test_edge_fire_reset_against_a_running_daemon(tmp_path: Path) -> None:
    async with board() as (sim, port):
        cfg = write_config(tmp_path, port, {"reset": "manual"})
        daemon = Daemon(cfg)
        try:
            await daemon.wait_for("gateway_started")
            sock = tmp_path / "data" / "control.sock"
            assert await eventually(sock.exists)
            sim.set_input(1, FIRE_IN, True)
            assert await eventually(lambda: locks(sim) == ALL_ON)
            rc, reply = await _edge("fire", "reset", "-c", str(cfg))
            assert (rc, reply["ok"], reply["error"]) == (1, False, "fire_alarm")
            sim.set_input(1, FIRE_IN, False)
            for _ in range(100):
                rc, st = await _edge("fire", "status", "-c", str(cfg))
                if st["inputs"][0]["fire"] is False:
                    break
            assert rc == 0 and st["active"] is True and st["inputs"][0]["fire"] is False
            assert locks(sim) == ALL_ON
            rc, reply = await _edge("fire", "reset", "-c", str(cfg))
            assert (rc, reply["ok"], reply["fire"]["active"]) == (0, True, False)
            assert not any(locks(sim).values())
            rows = outbox_rows(tmp_path / "data")
            remote = [(r["device"], r["result"], r["reason"]) for r in rows if r["method"] == "remote"]
            assert remote == [("fire", "denied", "fire_alarm"), ("fire", "granted", "ok")]
            assert [r["reason"] for r in rows if r["method"] == "fire"] == ["fire_alarm", "fire_cleared"]
        finally:
            daemon.proc.terminate()
            daemon.finish()


async def test_edge_fire_without_a_fire_section(tmp_path: Path) -> None:
    cfg = gateway_config(tmp_path, signer=Signer(), bus=bus(1502), readers={})
    rc, out = await _edge("fire", "status", "-c", str(cfg))
    assert rc == 2 and "no `fire` section" in out["stderr"]


def test_example_config_loads() -> None:
    cfg = load_config(ROOT / "config" / "example-fire.yaml")
    fire = cfg.section("fire")
    assert [i.active_when for i in fire.inputs] == [True, False] and fire.reset == "manual"
    assert yaml.safe_load((ROOT / "config" / "example-fire.yaml").read_text())["fire"]["release"] == "all"


async def test_fire_on_at_start_up_raises_the_arm_and_frees_every_floor_first(tmp_path: Path) -> None:
    """Start-up under a fire: the barrier's first write is OPEN held on (never CLOSE), the lift's first
    write enables every floor, beside the doors; a vehicle-free loop after the fire lets the arm down."""
    async with board(1, 3, 4) as (sim, port):
        sim.set_input(1, FIRE_IN, True)
        cfg = write_config(
            tmp_path, port, {"reset": "auto"}, barriers={"gate-b": BARRIER}, elevators={"lift": LIFT}
        )
        async with running(cfg) as gw:
            first_open = sim.writes_to(3, 0)[0]
            assert first_open.on, f"barrier open contact: first write {first_open}"
            assert not any(w.on for w in sim.writes_to(3, 1)), "CLOSE pulsed under a fire"
            assert [sim.coil(4, c) for c in range(3)] == [True] * 3
            assert all(sim.writes_to(4, c)[0].on for c in range(3)), "a floor written disabled first"
            assert locks(sim) == ALL_ON
            await asyncio.sleep(0.5)  # past pulse, close delay and close timeout: still held
            assert sim.coil(3, 0) and not any(w.on for w in sim.writes_to(3, 1))
            assert gw.devices["gate-b"].status()["arm"] != "falling"
            sim.set_input(1, FIRE_IN, False)
            assert await eventually(lambda: not sim.coil(3, 0))
            assert await eventually(lambda: any(w.on for w in sim.writes_to(3, 1)))  # sent down once clear
            assert await eventually(lambda: [sim.coil(4, c) for c in range(3)] == [False] * 3)
