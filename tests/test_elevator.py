"""Elevator floor control against real pymodbus relay boards (TCP, and RTU over a socat pty): the coils
the board ends up with, the requests it saw, the events in the outbox, remote commands over Mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from drivers.device import Grant
from drivers.elevator import Elevator, ElevatorConfig
from drivers.modbus import ModbusTcpBusConfig
from drivers.modbus_bus import DeviceUnavailable, ModbusBus
from edge.app import Gateway
from edge.config import ConfigError, load_config, parse_config
from edge.model import Decision
from edge.sim.relay_board import RelayBoardSim
from edge.store import entry_from_wire
from tests.support.devices import env_for
from tests.support.gateway import SITE, Signer
from tests.support.modbus import eventually, free_port, rtu_board, tcp_board
from tests.support.ptys import PtyPair

FAST = {"timeout": 0.2, "retries": 0, "offline_after": 2, "probe_min_s": 0.1, "probe_max_s": 0.3}
ROOT = Path(__file__).resolve().parent.parent


def out(unit: int, coil: int) -> dict[str, Any]:
    return {"bus": "relays", "device_id": unit, "coil": coil}


def lift(floors: dict[int, tuple[int, int]], **kw: Any) -> dict[str, Any]:
    """An elevator config: floor -> (unit, coil) of its enable relay; free floor 1 unless told."""
    cfg = {"zone": "tower-1", "floor_outputs": {f: out(u, c) for f, (u, c) in floors.items()}}
    return {**cfg, "grant_s": 0.5, "free_floors": [1], **kw}


def coils(sim: RelayBoardSim, unit: int) -> list[bool]:
    return [sim.coil(unit, n) for n in range(sim.channels)]


def granted(*floors: int, seconds: float | None = None) -> Grant:
    return Grant(Decision("granted", "ok", floors=floors), "nfc", seconds=seconds)


def outbox_rows(data_dir: Path) -> list[dict[str, Any]]:
    con = sqlite3.connect(data_dir / "outbox.db")
    try:
        return [json.loads(r[0]) for r in con.execute("SELECT body FROM events ORDER BY seq")]
    finally:
        con.close()


# ------------------------------------------------------------ one device on a real board


@contextlib.asynccontextmanager
async def lift_on_board(cfg: dict[str, Any], units: tuple[int, ...] = (3,)) -> AsyncIterator[Any]:
    """An Elevator (not started) on a TCP relay board sim serving ``units``."""
    sim = RelayBoardSim(units)
    port = free_port()
    async with tcp_board(sim, port):
        bus_cfg = {"type": "modbus_tcp", "host": "127.0.0.1", "port": port, **FAST}
        bus = ModbusBus("relays", ModbusTcpBusConfig.model_validate(bus_cfg))
        await bus.start()
        env = env_for(bus)
        env.extra["tz"] = ZoneInfo("UTC")  # the site's zone, for free-floor windows
        try:
            yield sim, Elevator("tower-1", ElevatorConfig.model_validate(cfg), env)
        finally:
            await bus.stop()


# floors 1, 2, 3 on coils 0-2, floor 5 on coil 4; coil 3 and coil 7 belong to no one (FC15 must not
# overwrite them); coil 5 presses floor 2's button, coil 6 calls the car to the lobby.
WIRING = {1: (3, 0), 2: (3, 1), 3: (3, 2), 5: (3, 4)}
EXTRAS = {"select_outputs": {2: out(3, 5)}, "hall_call_outputs": {1: out(3, 6)}, "pulse_ms": 100}


@pytest.mark.parametrize("wiring", ["energised", "de-energised"])
async def test_start_and_stop_leave_only_free_floors_enabled(wiring: str) -> None:
    async with lift_on_board(lift(WIRING, enable_when=wiring, **EXTRAS)) as (sim, el):
        for n in range(8):
            sim.set_coil(3, n, True)  # whatever the board was left with
        await el.start()
        on = wiring == "energised"  # the relay value that enables a button
        # free floor 1 enabled, 2, 3 and 5 not; select and hall-call released; coils 3 and 7 untouched
        safe = [on, not on, not on, True, not on, False, False, True]
        assert coils(sim, 3) == safe
        await el.grant(granted(2, 3, seconds=30))
        assert coils(sim, 3)[:3] == [on, on, on]
        await el.fire(True)
        await el.stop()  # under fire and with a grant running: still the start-up state
        assert coils(sim, 3) == safe
        assert {w.address for w in sim.writes} <= {0, 1, 2, 4, 5, 6}

        await el.start(fire=True)  # a fire already on at start-up: every floor straight away
        assert coils(sim, 3)[:5] == [on, on, on, True, on] and coils(sim, 3)[5:7] == [False, False]
        await el.stop()


async def test_free_floors_follow_their_windows() -> None:
    hour = datetime.now(UTC).hour
    every_day = [1, 2, 3, 4, 5, 6, 7]
    later = {"days": every_day, "start": f"{(hour + 2) % 24:02d}:00", "end": f"{(hour + 3) % 24:02d}:00"}
    free = [1, {"floor": 2, "windows": [{"days": every_day, "start": "00:00", "end": "24:00"}]}]
    free.append({"floor": 3, "windows": [later]})  # not now: an hour from two hours on
    async with lift_on_board(lift(WIRING, free_floors=free)) as (sim, el):
        await el.start()
        assert coils(sim, 3)[:5] == [True, True, False, False, False]
        assert el.status()["enabled"] == [1, 2]
        await el.grant(granted(3, 5, seconds=30))
        assert el.status()["enabled"] == [1, 2, 3, 5]
        await el.stop()


async def test_grants_extend_per_floor_and_fire_holds_every_floor() -> None:
    async with lift_on_board(lift(WIRING, grant_s=1.0)) as (sim, el):
        await el.start()
        loop = asyncio.get_running_loop()
        await el.grant(granted(2))
        await asyncio.sleep(0.6)
        t_second = loop.time()
        await el.grant(granted(2))  # overlapping: floor 2 now ends a grant_s after this one
        assert await eventually(lambda: not sim.coil(3, 1), timeout=5)
        ons, offs = ([w for w in sim.writes_to(3, 1) if w.on == v] for v in (True, False))
        assert len(ons) == 1  # the second grant only moved the end
        start_off = [w for w in offs if w.t > ons[0].t]
        assert len(start_off) == 1 and start_off[0].t - t_second >= 1.0 - 0.05

        await el.grant(granted(2, seconds=0.3))
        await el.grant(granted(3, seconds=30))
        await el.fire(True)
        assert coils(sim, 3)[:5] == [True, True, True, False, True]
        await asyncio.sleep(0.6)  # floor 2's grant has ended: under fire it stays enabled anyway
        assert coils(sim, 3)[:5] == [True, True, True, False, True]
        await el.fire(False)  # back to free floor 1 and the grant still running (floor 3)
        assert coils(sim, 3)[:5] == [True, False, True, False, False]
        await el.stop()


async def test_auto_select_presses_the_one_allowed_floor_after_enabling_it() -> None:
    async with lift_on_board(lift(WIRING, auto_select=True, **EXTRAS)) as (sim, el):
        await el.start()
        await el.grant(granted(2))
        assert await eventually(lambda: not sim.coil(3, 5) and len(sim.writes_to(3, 5)) >= 3)
        enable = next(w for w in sim.writes_to(3, 1) if w.on)
        press = [w.on for w in sim.writes_to(3, 5)]
        assert press == [False, True, False]  # released at start, pressed once, released
        assert next(w for w in sim.writes_to(3, 5) if w.on).t > enable.t  # the button works by then
        await el.grant(granted(2, 3))  # two floors: the passenger chooses, nothing is pressed
        await asyncio.sleep(0.3)
        assert len(sim.writes_to(3, 5)) == 3
        await el.stop()


# ------------------------------------------------------------ the whole gateway, readers on ptys


def gateway_yaml(tmp_path: Path, bus: dict[str, Any], elevators: dict[str, Any], **extra: Any) -> Path:
    cfg: dict[str, Any] = {
        "gateway": {
            "site": SITE,
            "id": "gw-test",
            "timezone": "Asia/Shanghai",
            "data_dir": str(tmp_path / "data"),
        },
        "trust": {"keys": extra.pop("keys", {}), "require_clock_sync": False},
        "buses": {"relays": {**FAST, **bus}},
        "elevators": elevators,
        **extra,
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Any]:
    """Gateway with tower-1 (floors 1-5 on unit 3 coils 0-4, hall call for 1 on coil 6), a QR scanner
    and a card reader on ptys, a TCP board."""
    signer, sim, port = Signer(), RelayBoardSim([3]), free_port()
    with PtyPair(tmp_path, "qr") as qr, PtyPair(tmp_path, "card") as card:
        tower = lift({f: (3, f - 1) for f in range(1, 6)}, grant_s=0.8, hall_call_outputs={1: out(3, 6)})
        tower["readers"] = ["qr-lift-1", "card-lift-1"]
        readers = {
            "qr-lift-1": {"type": "serial", "port": str(qr.b), "content": "qr"},
            "card-lift-1": {"type": "serial", "port": str(card.b), "content": "card"},
        }
        bus = {"type": "modbus_tcp", "host": "127.0.0.1", "port": port}
        path = gateway_yaml(
            tmp_path, bus, {"tower-1": tower}, readers=readers, keys={signer.kid: signer.public_b64}
        )
        async with tcp_board(sim, port):
            gw = Gateway(load_config(path))
            await gw.start()
            fds = [os.open(p, os.O_RDWR | os.O_NOCTTY) for p in (qr.a, card.a)]
            try:
                assert await eventually(lambda: all(r.online for r in gw.readers.values()))
                yield gw, sim, signer, fds, tmp_path / "data"
            finally:
                for fd in fds:
                    os.close(fd)
                await gw.stop()


async def test_card_and_qr_grants_enable_their_floors_in_one_request(rig: Any) -> None:
    gw, sim, signer, (qr, card), data = rig
    assert coils(sim, 3)[:5] == [True, False, False, False, False]  # free floor 1 only
    card_entry = {"kind": "card", "subject": "resident:1042", "zones": ["tower-1"]}
    gw.store.import_entries([
        entry_from_wire({**card_entry, "value": "04A1B2C3", "floors": [2, 3, 9]}),
        entry_from_wire({**card_entry, "value": "0BADCAFE", "floors": [9, 10]}),
    ])  # fmt: skip
    mark = len(sim.requests)
    os.write(card, b"04A1B2C3\r")
    assert await eventually(lambda: sim.coil(3, 1) and sim.coil(3, 2))
    writes = [(r.device_id, r.function_code, r.address) for r in sim.requests[mark:] if r.function_code != 2]
    assert writes == [(3, 15, 1)]  # floors 2 and 3 together: one FC15 from coil 1
    assert coils(sim, 3)[:5] == [True, True, True, False, False]
    rows = outbox_rows(data)
    assert [(r["device"], r["result"], r["reason"], r["floors"]) for r in rows] == [
        ("tower-1", "granted", "ok", [2, 3])
    ]
    assert await eventually(lambda: not sim.coil(3, 1) and not sim.coil(3, 2), timeout=5)  # grant_s later
    assert sim.coil(3, 0) and all(w.on for w in sim.writes_to(3, 0))  # the lobby never went off

    mark = len(sim.writes)
    os.write(card, b"0BADCAFE\r")  # allowed floors 9, 10: none in this car
    assert await eventually(lambda: len(outbox_rows(data)) == 2)
    assert (outbox_rows(data)[1]["result"], outbox_rows(data)[1]["reason"]) == ("denied", "no_floors")
    os.write(qr, signer.code("t-lift-1", zones=["tower-1"], floors=[5]).encode() + b"\r")
    assert await eventually(lambda: sim.coil(3, 4))
    assert [(w.address, w.on) for w in sim.writes[mark:]] == [(4, True)]  # the denial wrote nothing
    assert outbox_rows(data)[2]["floors"] == [5]


async def test_remote_call_and_grant_through_gate_control(rig: Any) -> None:
    gw, sim, signer, _fds, data = rig
    rows_before = len(outbox_rows(data))
    assert (
        await gw.act("tower-1", "elevator_grant", {"floors": [3, 4, 99], "seconds": 30, "by": "staff:1"})
        is None
    )
    assert coils(sim, 3)[:5] == [True, False, True, True, False]
    assert await gw.act("tower-1", "elevator_grant", {"floors": [99], "seconds": 30}) == "no_floors"
    assert await gw.act("tower-1", "elevator_grant", {"floors": [2], "seconds": -1}) == "malformed"
    assert await gw.act("tower-1", "elevator_call", {"floor": 1}) is None
    assert await eventually(lambda: len(sim.writes_to(3, 6)) >= 3 and not sim.coil(3, 6))
    assert [w.on for w in sim.writes_to(3, 6)] == [False, True, False]  # released at start, one press
    assert await gw.act("tower-1", "elevator_call", {"floor": 2}) == "no_floors"  # no call button there
    assert await gw.act("tower-1", "open", {}) == "unsupported"
    assert len(outbox_rows(data)) == rows_before  # the command layer records remote events, not the lift


async def test_dead_floor_board_beside_a_live_one_on_rtu(tmp_path: Path) -> None:
    """Floors 1-3 on unit 3 (answers), 4-5 on unit 4 (dead); NC wiring, so disabled = relay on."""
    sim = RelayBoardSim([3])
    tower = lift({1: (3, 0), 2: (3, 1), 3: (3, 2), 4: (4, 0), 5: (4, 1)}, enable_when="de-energised")
    with PtyPair(tmp_path, "line") as line:
        path = gateway_yaml(
            tmp_path, {"type": "modbus_rtu", "port": str(line.b), "offline_after": 1}, {"tower-1": tower}
        )
        async with rtu_board(sim, str(line.a)):
            gw = Gateway(load_config(path))
            await gw.start()
            try:
                el = gw.devices["tower-1"]
                assert coils(sim, 3)[:3] == [False, True, True]  # the live board got its safe state
                assert await eventually(lambda: not el.online)
                assert "unit 4" in (el.error or "")
                data = tmp_path / "data"
                assert await eventually(
                    lambda: any(r["reason"] == "device_offline" for r in outbox_rows(data))
                )
                assert await gw.act("tower-1", "elevator_grant", {"floors": [2], "seconds": 30}) is None
                assert coils(sim, 3)[:3] == [False, False, True]
                assert (
                    await gw.act("tower-1", "elevator_grant", {"floors": [4], "seconds": 30})
                    == "device_unavailable"
                )
                with pytest.raises(DeviceUnavailable, match="unit 4"):
                    await el.fire(True)
                assert coils(sim, 3)[:3] == [False, False, False]  # the live board is released anyway
                with pytest.raises(DeviceUnavailable, match="unit 4"):
                    await el.fire(False)
                assert coils(sim, 3)[:3] == [False, False, True]

                sim.add_device(4)  # back (relays off = every button free): its whole state is written again
                assert await eventually(lambda: el.online and coils(sim, 4)[:2] == [True, True], timeout=10)
                assert await eventually(
                    lambda: any(r["reason"] == "device_online" for r in outbox_rows(data))
                )
            finally:
                await gw.stop()
    assert coils(sim, 3)[:3] == [False, True, True] and coils(sim, 4)[:2] == [True, True]


# ------------------------------------------------------------ a signed command over a real Mosquitto


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Any]:
    from tests.support.broker import Broker

    with Broker(tmp_path / "broker") as b:
        yield b


async def test_elevator_commands_over_mqtt(tmp_path: Path, broker: Any) -> None:
    from edge.sim.cloud_client import CloudClient, mint_command

    signer, sim, port = Signer(), RelayBoardSim([3]), free_port()
    tower = lift({1: (3, 0), 2: (3, 1), 3: (3, 2)}, hall_call_outputs={1: out(3, 6)})
    mqtt = {"host": "127.0.0.1", "port": broker.port, "keepalive_s": 2, "reconnect_max_s": 1.0}
    bus = {"type": "modbus_tcp", "host": "127.0.0.1", "port": port}
    path = gateway_yaml(tmp_path, bus, {"tower-1": tower}, mqtt=mqtt, keys={signer.kid: signer.public_b64})
    async with tcp_board(sim, port):
        gw = Gateway(load_config(path))
        await gw.start()
        try:
            with CloudClient("127.0.0.1", broker.port, SITE, "gw-test") as cloud:
                grant = mint_command(signer.key, signer.kid, SITE, "gw-test", "elevator_grant", "tower-1",
                                     floors=[2, 3], seconds=30, by="staff:7")  # fmt: skip
                call = mint_command(
                    signer.key, signer.kid, SITE, "gw-test", "elevator_call", "tower-1", floor=3
                )
                link: Any = gw.cloud
                assert await eventually(lambda: link.connected, timeout=10)
                cloud.send_command(grant)
                cloud.send_command(call)
                assert await eventually(lambda: len(cloud.results()) == 2, timeout=10)
                results = sorted((r["ok"], str(r["error"])) for r in cloud.results())  # they run concurrently
                assert results == [(False, "no_floors"), (True, "None")]  # floor 3 has no hall call relay
                assert coils(sim, 3)[:3] == [True, True, True]
                assert await eventually(
                    lambda: len([e for e in cloud.events() if e["method"] == "remote"]) == 2
                )
                ev = [e for e in cloud.events() if e["method"] == "remote"]
                assert sorted((e["device"], e["result"], e["reason"]) for e in ev) == [
                    ("tower-1", "denied", "no_floors"), ("tower-1", "granted", "ok")
                ]  # fmt: skip
        finally:
            await gw.stop()


# ------------------------------------------------------------ config


def test_example_config_and_config_refusals(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "config" / "example-elevator.yaml")
    tower = cfg.elevators["tower-1"]  # type: ignore[attr-defined]
    assert sorted(tower.floor_outputs) == [-1, 1, 2, 3, 4, 5, 6, 7]
    assert [f.floor for f in tower.free_floors] == [1, -1] and tower.free_floors[1].parsed_windows

    def problems(elevator: dict[str, Any], **extra: Any) -> str:
        bus = {"type": "modbus_rtu", "port": "/dev/null"}
        path = gateway_yaml(tmp_path, bus, {"tower-1": {**lift(WIRING), **elevator}}, **extra)
        with pytest.raises(ConfigError) as exc:
            parse_config(path.read_text(), path)
        return str(exc.value)

    door = {"bus": "relays", "device_id": 3, "zone": "z", "lock_coil": 2}
    assert "relay bus 'relays' unit 3 coil 2 is already driven" in problems({}, doors={"d1": door})
    assert "no bus 'nowhere'" in problems({"hall_call_outputs": {1: {**out(3, 6), "bus": "nowhere"}}})
    assert "floors [7] are not in floor_outputs" in problems({"select_outputs": {7: out(3, 5)}})
    assert "windows[0].days" in problems({"free_floors": [{"floor": 1, "windows": [{"days": [8]}]}]})
    assert "floor_outputs" in problems({"floor_outputs": {1000: out(3, 0)}})
    assert "already driven" in problems({"hall_call_outputs": {1: out(3, 0)}})  # its own floor relay
    assert "enable_when" in problems({"enable_when": "inverted"})


async def test_a_remote_elevator_grant_event_names_the_floors_it_enabled(rig: Any, tmp_path: Path) -> None:
    """R/cmd elevator_grant through the command layer: the floors within the car are enabled and the
    remote event carries them (mqtt.md `floors`); floors outside the car are not reported as enabled."""
    from edge.cloud.commands import CommandContext, handle_command
    from edge.cloud.replay import ReplayStore
    from edge.sim.cloud_client import command_claims
    from edge.tokens import mint_token

    gw, sim, signer, _fds, data = rig
    replay = ReplayStore(tmp_path / "replay.db")
    results: list[dict[str, object]] = []
    ctx = CommandContext("gw-test", gw, replay, lambda: gw.policy, False, lambda: None, results.append)
    try:
        for floors, outcome in (([3, 4, 99], "ok"), ([99], "no_floors")):
            claims = command_claims(SITE, "gw-test", "elevator_grant", "tower-1", floors=floors, seconds=30)
            token = mint_token(signer.key, signer.kid, claims).encode()
            assert await handle_command(ctx, token) == (claims["jti"], outcome)
        assert coils(sim, 3)[:5] == [True, False, True, True, False]
        ok, refused = [r for r in outbox_rows(data) if r["method"] == "remote"]
        assert (ok["device"], ok["result"], ok["floors"]) == ("tower-1", "granted", [3, 4])
        assert (refused["result"], refused["reason"]) == ("denied", "no_floors") and "floors" not in refused
        assert [r["ok"] for r in results] == [True, False]
    finally:
        replay.close()
