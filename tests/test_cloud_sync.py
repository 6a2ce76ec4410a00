"""Cloud link whitelist sync and robustness, against a real Mosquitto."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.sim.cloud_client import CloudClient, mint_command
from edge.store import WhitelistStore
from tests.support.broker import Broker
from tests.support.cloud import GW, SITE, Signer, make_config, running_link, until


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with Broker(tmp_path / "broker") as b:
        yield b


@pytest.fixture
def cloud(broker: Broker) -> Iterator[CloudClient]:
    with CloudClient("127.0.0.1", broker.port, SITE, GW) as c:
        yield c


def card(i: int, zone: str = "north-gate") -> dict[str, object]:
    return {"kind": "card", "value": f"{i:08X}", "subject": f"resident:{i}", "zones": [zone]}


def sync_requests(cloud: CloudClient) -> list[int]:
    return [r.json()["have"] for r in cloud.on("sync/request")]


async def barrier(cloud: CloudClient) -> None:
    """Whitelist messages are handled in order: a gap delta's sync request proves the rest are done."""
    n = len(sync_requests(cloud))
    cloud.send_delta(10**9, 10**9 + 1, [])
    assert await until(lambda: len(sync_requests(cloud)) > n)


async def test_connect_publishes_status_sync_request_and_health(
    tmp_path: Path, broker: Broker, cloud: CloudClient
):
    cfg = make_config(tmp_path / "gw", broker.port, {})
    async with running_link(cfg) as h:
        assert await until(
            lambda: bool(cloud.on("status")) and bool(sync_requests(cloud)) and bool(cloud.on("health"))
        )
        status = cloud.on("status")[-1].json()
        assert status["online"] is True and status["version"] == "test-1" and status["whitelist_version"] == 0
        assert isinstance(status["started_at"], int)
        assert sync_requests(cloud) == [0]
        health = cloud.on("health")[-1].json()
        assert health["devices"]["north-gate"] == {"online": True, "error": None}
        assert health["outbox"] == 0 and health["whitelist_version"] == 0 and health["clock_synced"] is True
        # a device change is reported at once
        n = len(cloud.on("health"))
        h.gate.set_device("north-gate", False, "no answer from unit 1")
        assert await until(lambda: len(cloud.on("health")) > n)
        assert cloud.on("health")[-1].json()["devices"]["north-gate"] == {
            "online": False,
            "error": "no answer from unit 1",
        }
    # clean stop: retained offline status
    assert await until(lambda: cloud.on("status")[-1].json() == {"online": False})
    with CloudClient("127.0.0.1", broker.port, SITE, GW, persistent=False) as late:
        assert late.wait_for(lambda _: bool(late.on("status")))
        assert late.on("status")[-1].retain and late.on("status")[-1].json() == {"online": False}


async def test_snapshot_parts_applied_atomically(tmp_path: Path, broker: Broker, cloud: CloudClient):
    cfg = make_config(tmp_path / "gw", broker.port, {})
    async with running_link(cfg) as h:
        parts = cloud.snapshot_parts([card(i) for i in range(1, 10)], version=7, part_size=3)
        assert len(parts) == 3
        cloud.publish("whitelist", parts[0])
        cloud.publish("whitelist", parts[1])
        await barrier(cloud)
        assert h.store.version == 0 and h.store.count() == 0 and h.store.lookup("card", "00000001") is None
        cloud.publish("whitelist", parts[2])
        assert await until(lambda: h.store.version == 7)
        assert h.store.count() == 9
        assert h.store.lookup("card", "00000009") is not None
    on_disk = WhitelistStore(cfg.gateway.data_dir / "whitelist.db")
    try:
        assert on_disk.version == 7 and on_disk.count() == 9
    finally:
        on_disk.close()


async def test_missing_part_changes_nothing_and_newer_snapshot_supersedes(
    tmp_path: Path, broker: Broker, cloud: CloudClient
):
    cfg = make_config(tmp_path / "gw", broker.port, {})
    async with running_link(cfg) as h:
        cloud.send_snapshot([card(1), card(2)], version=5, part_size=1)
        assert await until(lambda: h.store.version == 5)
        # snapshot v6 with part 2 of 3 missing: nothing changes
        p6 = cloud.snapshot_parts([card(i) for i in range(10, 13)], version=6, part_size=1)
        cloud.publish("whitelist", p6[0])
        cloud.publish("whitelist", p6[2])
        await barrier(cloud)
        assert h.store.version == 5 and h.store.count() == 2
        assert h.store.lookup("card", "00000001") is not None and h.store.lookup("card", "0000000A") is None
        # a newer snapshot (v8) starts: v6's parts are dropped; v6's late part 2 completes nothing
        p8 = cloud.snapshot_parts([card(20), card(21)], version=8, part_size=1)
        cloud.publish("whitelist", p8[0])
        cloud.publish("whitelist", p6[1])
        await barrier(cloud)
        assert h.store.version == 5
        cloud.publish("whitelist", p8[1])
        assert await until(lambda: h.store.version == 8)
        assert h.store.count() == 2 and h.store.lookup("card", "00000014") is not None
        assert h.store.lookup("card", "00000001") is None


async def test_delta_gap_sends_sync_request_with_local_version(
    tmp_path: Path, broker: Broker, cloud: CloudClient
):
    cfg = make_config(tmp_path / "gw", broker.port, {})
    async with running_link(cfg) as h:
        cloud.send_snapshot([card(1)], version=3)
        assert await until(lambda: h.store.version == 3)
        n = len(sync_requests(cloud))
        cloud.send_delta(7, 8, [{"op": "put", "entry": card(2)}])
        assert await until(lambda: len(sync_requests(cloud)) > n)
        assert sync_requests(cloud)[-1] == 3
        assert h.store.version == 3 and h.store.lookup("card", "00000002") is None
        cloud.send_delta(
            3, 4, [{"op": "put", "entry": card(2)}, {"op": "del", "kind": "card", "value": "00000001"}]
        )
        assert await until(lambda: h.store.version == 4)
        assert h.store.lookup("card", "00000002") is not None and h.store.lookup("card", "00000001") is None


async def test_key_op_takes_effect_at_once(tmp_path: Path, broker: Broker, cloud: CloudClient):
    signer = Signer()
    cfg = make_config(tmp_path / "gw", broker.port, {})  # trusts no key at first
    async with running_link(cfg) as h:
        cloud.send_command(mint_command(signer.key, signer.kid, SITE, GW, "open", "north-gate"))
        assert await until(lambda: len(cloud.results()) == 1)
        assert cloud.results()[0]["error"] == "unknown_key" and h.gate.opens == []
        cloud.send_delta(0, 1, [{"op": "key", "kid": signer.kid, "key": signer.public}])
        assert await until(lambda: h.store.version == 1)
        assert await until(lambda: h.gate.trust_reloads == 1)
        cloud.send_command(mint_command(signer.key, signer.kid, SITE, GW, "open", "north-gate"))
        assert await until(lambda: len(cloud.results()) == 2)
        assert cloud.results()[1]["ok"] is True and h.gate.opens == [("north-gate", None)]
        cloud.send_delta(1, 2, [{"op": "key", "kid": signer.kid, "key": None}])
        assert await until(lambda: h.gate.trust_reloads == 2)
        cloud.send_command(mint_command(signer.key, signer.kid, SITE, GW, "open", "north-gate"))
        assert await until(lambda: len(cloud.results()) == 3)
        assert cloud.results()[2]["error"] == "unknown_key" and len(h.gate.opens) == 1


GARBAGE: list[bytes] = [
    b"",
    b"not json",
    b"\xff\xfe\x00",
    b"[1, 2, 3]",
    b'"a string"',
    b'{"type": "delta", "from": "0", "to": 1, "ops": []}',
    b'{"type": "delta", "from": 0, "to": 1, "ops": {}}',
    b'{"type": "delta", "from": 0, "to": 1, "ops": [{"op": "put", "entry": {"kind": "card"}}]}',
    b'{"type": "delta", "from": 0, "to": 1, "ops": [{"op": "boom"}]}',
    b'{"type": "snapshot", "id": 5, "version": 1, "part": 1, "parts": 1, "entries": []}',
    b'{"type": "snapshot", "id": "x", "version": 1, "part": 3, "parts": 2, "entries": []}',
    b'{"type": "snapshot", "id": "x", "version": 1, "part": 1, "parts": 1, "entries": [42]}',
    b'{"type": "teleport"}',
    b"[" * 100_000,
    b"x" * 1_000_000,
    json.dumps(
        {"type": "delta", "from": 0, "to": 1, "ops": [{"op": "put", "entry": "x" * 1_000_000}]}
    ).encode(),
]


async def test_garbage_on_every_subscribed_topic_is_dropped(
    tmp_path: Path, broker: Broker, cloud: CloudClient
):
    signer = Signer()
    cfg = make_config(tmp_path / "gw", broker.port, {signer.kid: signer.public})
    async with running_link(cfg) as h:
        for g in GARBAGE:
            cloud.publish("whitelist", g)
            cloud.publish("cmd", g)
        await barrier(cloud)
        assert h.store.version == 0 and h.store.count() == 0
        # every garbage command got exactly one refusal, jti null, and an event
        assert await until(lambda: len(cloud.results()) == len(GARBAGE))
        assert all(
            r["ok"] is False and r["jti"] is None and r["error"] == "malformed" for r in cloud.results()
        )
        assert h.gate.opens == []
        # and the link still works both ways
        cloud.send_delta(0, 1, [{"op": "put", "entry": card(1)}])
        assert await until(lambda: h.store.version == 1)
        cloud.send_command(mint_command(signer.key, signer.kid, SITE, GW, "open", "north-gate"))
        assert await until(lambda: len(cloud.results()) == len(GARBAGE) + 1)
        assert cloud.results()[-1]["ok"] is True and h.gate.opens == [("north-gate", None)]
        assert await until(lambda: sum(1 for _ in cloud.events()) == len(GARBAGE) + 1)
        assert h.link.connected
