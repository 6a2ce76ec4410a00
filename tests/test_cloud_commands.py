"""Remote commands over a real Mosquitto: refusals, at-most-once, replay across restarts, events."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.sim.cloud_client import CloudClient, mint_command
from edge.tokens import generate_keypair, mint_token
from tests.support.broker import Broker
from tests.support.cloud import GW, LIFT, SITE, Signer, make_config, running_link, until


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with Broker(tmp_path / "broker") as b:
        yield b


@pytest.fixture
def cloud(broker: Broker) -> Iterator[CloudClient]:
    with CloudClient("127.0.0.1", broker.port, SITE, GW) as c:
        yield c


@pytest.fixture
def signer() -> Signer:
    return Signer()


def result_of(cloud: CloudClient, jti: str | None) -> list[dict[str, object]]:
    return [r for r in cloud.results() if r["jti"] == jti]


def remote_events(cloud: CloudClient) -> list[dict[str, object]]:
    return [e for e in cloud.events() if e["method"] == "remote"]


def cmd(signer: Signer, act: str = "open", target: str = "north-gate", **kw: object) -> tuple[str, str]:
    from edge.sim.cloud_client import command_claims

    claims = command_claims(SITE, kw.pop("aud", GW), act, target, **kw)  # type: ignore[arg-type]
    return mint_token(signer.key, signer.kid, claims), str(claims["jti"])


async def test_open_is_executed_once_with_result_and_event(tmp_path: Path, broker: Broker, cloud, signer):
    cfg = make_config(tmp_path / "gw", broker.port, {signer.kid: signer.public})
    async with running_link(cfg) as h:
        token, jti = cmd(signer, by="staff:7")
        cloud.send_command(token)
        assert await until(lambda: len(result_of(cloud, jti)) == 1)
        r = result_of(cloud, jti)[0]
        assert r["ok"] is True and r["error"] is None and isinstance(r["ts"], int)
        assert h.gate.opens == [("north-gate", "staff:7")]
        assert await until(lambda: len(remote_events(cloud)) == 1)
        ev = remote_events(cloud)[0]
        assert ev["device"] == "north-gate" and ev["credential"] == jti and ev["subject"] == "staff:7"
        assert ev["result"] == "granted" and ev["reason"] == "ok"
        # the very same token again: refused as a replay, nothing opens
        cloud.send_command(token)
        assert await until(lambda: len(result_of(cloud, jti)) == 2)
        assert result_of(cloud, jti)[1] == {**result_of(cloud, jti)[1], "ok": False, "error": "replay"}
        assert len(h.gate.opens) == 1
        assert await until(lambda: len(remote_events(cloud)) == 2)
        assert remote_events(cloud)[1]["result"] == "denied" and remote_events(cloud)[1]["reason"] == "replay"


async def test_same_command_delivered_twice_concurrently_opens_once(
    tmp_path: Path, broker: Broker, cloud, signer
):
    cfg = make_config(tmp_path / "gw", broker.port, {signer.kid: signer.public})
    async with running_link(cfg) as h:
        h.gate.open_delay = 0.3  # the second copy arrives while the first is still opening
        token, jti = cmd(signer)
        for _ in range(5):
            cloud.publish("cmd", token, wait=False)
        assert await until(lambda: len(result_of(cloud, jti)) == 5)
        errors = sorted(str(r["error"]) for r in result_of(cloud, jti))
        assert errors == ["None", "replay", "replay", "replay", "replay"]
        assert h.gate.opens == [("north-gate", None)]


async def test_refusals(tmp_path: Path, broker: Broker, cloud, signer):
    cfg = make_config(tmp_path / "gw", broker.port, {signer.kid: signer.public})
    other_key, _ = generate_keypair()
    now = int(time.time())
    cases: list[tuple[str, str | None, str]] = []

    def add(token: str, jti: str | None, error: str) -> None:
        cases.append((token, jti, error))

    add(*cmd(signer, now=now - 200), "expired")
    add(*cmd(signer, now=now + 200), "not_yet_valid")
    add(*cmd(signer, aud="gw-other"), "wrong_aud")
    add(*cmd(signer, target="west-gate"), "unknown_target")
    add(*cmd(signer, act="elevator_call", target="north-gate", floor=3), "unsupported")
    add(*cmd(signer, act="fly"), "unknown_action")
    add(*cmd(signer, ttl=3600), "lifetime_too_long")
    forged = mint_command(other_key, signer.kid, SITE, GW, "open", "north-gate")
    add(forged, None, "bad_signature")
    unknown = mint_command(other_key, "kid-nobody-trusts", SITE, GW, "open", "north-gate")
    add(unknown, None, "unknown_key")
    wrong_site = mint_command(signer.key, signer.kid, "c99", GW, "open", "north-gate")
    add(wrong_site, None, "wrong_site")
    async with running_link(cfg) as h:
        for token, _, _ in cases:
            cloud.send_command(token)
        assert await until(lambda: len(cloud.results()) == len(cases))
        got = [(r["ok"], r["error"]) for r in cloud.results()]
        assert got == [(False, e) for _, _, e in cases]
        for (_, jti, _), r in zip(cases, cloud.results(), strict=True):
            if jti is not None:
                assert r["jti"] == jti
            else:
                assert isinstance(r["jti"], str)  # parsed far enough to name it
        assert h.gate.opens == [] and h.gate.modes == []
        assert await until(lambda: len(remote_events(cloud)) == len(cases))
        assert [e["reason"] for e in remote_events(cloud)] == [e for _, _, e in cases]
        assert all(e["result"] == "denied" for e in remote_events(cloud))
        assert {e["device"] for e in remote_events(cloud)} >= {"north-gate", "west-gate"}


async def test_modes_and_sync_command(tmp_path: Path, broker: Broker, cloud, signer):
    cfg = make_config(tmp_path / "gw", broker.port, {signer.kid: signer.public})
    async with running_link(cfg) as h:
        assert await until(lambda: len(cloud.on("sync/request")) == 1)
        for act in ("hold_open", "lock", "normal"):
            cloud.send_command(cmd(signer, act=act, target="south-gate")[0])
        token, jti = cmd(signer, act="sync", target=GW)
        cloud.send_command(token)
        assert await until(lambda: len(cloud.results()) == 4)
        assert all(r["ok"] for r in cloud.results())
        assert h.gate.modes == [("south-gate", "hold_open"), ("south-gate", "lock"), ("south-gate", "normal")]
        assert await until(lambda: len(cloud.on("sync/request")) == 2)
        assert await until(lambda: len(remote_events(cloud)) == 4)
        assert (
            remote_events(cloud)[-1]["device"] == "gateway" and remote_events(cloud)[-1]["credential"] == jti
        )


async def test_replay_after_restart_is_refused(tmp_path: Path, broker: Broker, cloud, signer):
    cfg = make_config(tmp_path / "gw", broker.port, {signer.kid: signer.public})
    token, jti = cmd(signer)
    async with running_link(cfg) as h:
        cloud.send_command(token)
        assert await until(lambda: len(result_of(cloud, jti)) == 1)
        assert h.gate.opens == [("north-gate", None)]
    async with running_link(cfg) as h2:
        cloud.send_command(token)
        assert await until(lambda: len(result_of(cloud, jti)) == 2)
        assert result_of(cloud, jti)[1]["error"] == "replay"
        assert h2.gate.opens == []


async def test_a_damaged_replay_file_is_moved_aside_and_older_commands_stay_refused(
    tmp_path: Path, broker: Broker, cloud, signer
):
    """replay.db damaged on disk: the gateway runs (no crash loop), the cloud gets an alarm, and since
    lost ids cannot be told from new ones, a command issued before the recovery is refused as a replay
    (it may have run already), while a new one opens."""
    import os

    cfg = make_config(tmp_path / "gw", broker.port, {signer.kid: signer.public})
    ran, ran_jti = cmd(signer)
    lost, lost_jti = cmd(signer)  # issued now; its record is about to be destroyed with the file
    async with running_link(cfg) as h:
        cloud.send_command(ran)
        assert await until(lambda: len(result_of(cloud, ran_jti)) == 1)
        assert h.gate.opens == [("north-gate", None)]
    replay = cfg.gateway.data_dir / "replay.db"
    with replay.open("r+b") as f:
        f.write(os.urandom(100))  # the header: "file is not a database"
    time.sleep(1.1)  # the recovery's second is after the lost command's iat
    async with running_link(cfg) as h2:
        def alarm() -> list[dict[str, object]]:
            return [e for e in cloud.events() if e["result"] == "alarm" and e["credential"] == "replay.db"]

        assert await until(lambda: bool(alarm()))  # the alarm reaches the cloud
        assert len(alarm()) == 1 and "1 command ids" in str(alarm()[0]["subject"])
        for token in (ran, lost):
            cloud.send_command(token)
        assert await until(lambda: len(result_of(cloud, ran_jti)) == 2 and len(result_of(cloud, lost_jti)) == 1)
        assert result_of(cloud, ran_jti)[1]["error"] == "replay"  # salvaged from the damaged file
        assert result_of(cloud, lost_jti)[0]["error"] == "replay"  # issued before the recovery: unsure
        fresh, fresh_jti = cmd(signer, now=int(time.time()) + 1)
        cloud.send_command(fresh)
        assert await until(lambda: len(result_of(cloud, fresh_jti)) == 1)
        assert result_of(cloud, fresh_jti)[0]["ok"] is True
        assert h2.gate.opens == [("north-gate", None)]
    assert list(cfg.gateway.data_dir.glob("replay.db.damaged-*"))


async def test_unsynchronised_clock_refuses_commands(tmp_path: Path, broker: Broker, cloud, signer):
    cfg = make_config(tmp_path / "gw", broker.port, {signer.kid: signer.public})
    async with running_link(cfg) as h:
        h.gate.synced = False
        token, jti = cmd(signer)
        cloud.send_command(token)
        assert await until(lambda: len(result_of(cloud, jti)) == 1)
        assert result_of(cloud, jti)[0]["error"] == "clock_unsynced" and h.gate.opens == []
        h.gate.synced = (
            True  # not consumed by the refusal: the same command may run once the clock is trusted
        )
        cloud.send_command(token)
        assert await until(lambda: len(result_of(cloud, jti)) == 2)
        assert result_of(cloud, jti)[1]["ok"] is True and h.gate.opens == [("north-gate", None)]


async def test_elevator_commands_reach_the_device_with_their_arguments(
    tmp_path: Path, broker: Broker, cloud, signer
):
    cfg = make_config(tmp_path / "gw", broker.port, {signer.kid: signer.public})
    async with running_link(cfg) as h:
        cloud.send_command(cmd(signer, act="elevator_call", target=LIFT, floor=3)[0])
        cloud.send_command(cmd(signer, act="elevator_grant", target=LIFT, floors=[2, 5], seconds=20)[0])
        assert await until(lambda: len(cloud.results()) == 2)
        assert [(r["ok"], r["error"]) for r in cloud.results()] == [(True, None), (True, None)]
        assert [(t, a, args["floor"], args["floors"], args["seconds"]) for t, a, args in h.gate.lift] == [
            (LIFT, "elevator_call", 3, None, None),
            (LIFT, "elevator_grant", None, (2, 5), 20),
        ]
