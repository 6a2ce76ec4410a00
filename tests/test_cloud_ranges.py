"""Integers from the cloud out of range (beyond 64 bits, beyond any unix time or floor), through a real
Mosquitto to a running CloudLink: each message is refused at the parse edge with a logged reason, the
store is unchanged (on disk too), no OverflowError reaches the log, and the link keeps working."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from edge.limits import FLOOR_MAX, FLOOR_MIN, INT64_MAX, UNIX_S_MAX
from edge.sim.cloud_client import CloudClient, command_claims, mint_command
from edge.store import WhitelistStore
from edge.tokens import mint_token
from tests.support.broker import Broker
from tests.support.cloud import GW, LIFT, SITE, Signer, make_config, running_link, until

HUGE = 2**70
DROPPED = ("whitelist_message_dropped", "whitelist_delta_dropped", "whitelist_snapshot_part_dropped")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with Broker(tmp_path / "broker") as b:
        yield b


@pytest.fixture
def cloud(broker: Broker) -> Iterator[CloudClient]:
    with CloudClient("127.0.0.1", broker.port, SITE, GW) as c:
        yield c


def card(i: int, **kw: Any) -> dict[str, Any]:
    return {"kind": "card", "value": f"{i:08X}", "subject": f"resident:{i}", "zones": ["north-gate"], **kw}


def delta(frm: int, to: int, *ops: dict[str, Any]) -> dict[str, Any]:
    return {"type": "delta", "from": frm, "to": to, "ops": list(ops)}


def snapshot(*entries: dict[str, Any], version: int = 7, part: int = 1, parts: int = 1) -> dict[str, Any]:
    return {"type": "snapshot", "id": "s-1", "version": version, "part": part, "parts": parts,
            "entries": list(entries)}  # fmt: skip


def put(entry: dict[str, Any]) -> dict[str, Any]:
    return {"op": "put", "entry": entry}


# (message, a word the logged reason must contain)
BAD_WHITELIST: dict[str, tuple[dict[str, Any] | bytes, str]] = {
    "delta_to_2^70": (delta(0, HUGE, put(card(1))), "to"),
    "delta_from_2^64": (delta(2**64, 2**64 + 1), "from"),
    "snapshot_version_2^64": (snapshot(card(1), version=2**64), "version"),
    "snapshot_parts_2^70": (snapshot(card(1), parts=HUGE), "parts"),
    "snapshot_version_2^63": (snapshot(card(1), version=INT64_MAX + 1), "version"),
    "delta_to_2^63": (delta(0, INT64_MAX + 1, put(card(1))), "to"),
    "delta_entry_until_2^70": (delta(0, 1, put(card(1, until=HUGE))), "until"),
    "snapshot_entry_from_2^70": (snapshot(card(1, **{"from": HUGE})), "from"),
    "snapshot_entry_until_negative_2^70": (snapshot(card(1, until=-HUGE)), "until"),
    "delta_entry_floors_2^70": (delta(0, 1, put(card(1, floors=[3, HUGE]))), "floors"),
    "snapshot_entry_floors_2^70": (snapshot(card(1, floors=[HUGE])), "floors"),
    "revoke_until_2^70": (delta(0, 1, {"op": "revoke", "jti": "t-1", "until": HUGE}), "until"),
    "delta_to_5000_digits": (b'{"type":"delta","from":0,"to":' + b"9" * 5000 + b',"ops":[]}', "JSON"),
}


async def barrier(cloud: CloudClient) -> None:
    """Whitelist messages are handled in order: a gap delta's sync request proves the rest are done."""
    n = len(cloud.on("sync/request"))
    cloud.send_delta(10**9, 10**9 + 1, [])
    assert await until(lambda: len(cloud.on("sync/request")) > n)


@pytest.mark.parametrize("case", list(BAD_WHITELIST))
async def test_whitelist_integer_out_of_range_is_dropped_with_a_reason(
    tmp_path: Path, broker: Broker, cloud: CloudClient, case: str
) -> None:
    msg, word = BAD_WHITELIST[case]
    cfg = make_config(tmp_path / "gw", broker.port, {})
    with capture_logs() as logs:
        async with running_link(cfg) as h:
            assert await until(lambda: len(cloud.on("sync/request")) == 1)
            cloud.publish("whitelist", msg)
            await barrier(cloud)
            assert (h.store.version, h.store.count()) == (0, 0)
            assert h.store.lookup("card", "00000001") is None and not h.store.is_revoked("t-1", time.time())
            dropped = [e for e in logs if e["event"] in DROPPED]
            assert len(dropped) == 1, [e["event"] for e in logs]
            assert word in dropped[0]["reason"]
            assert not [e for e in logs if e["log_level"] in ("error", "critical")]
            # the sync request of the gap barrier is the only one after connect: nothing else was taken
            # for a version gap, and the link goes on applying good messages
            assert [r.json()["have"] for r in cloud.on("sync/request")] == [0, 0]
            cloud.send_delta(0, 1, [put(card(2))])
            assert await until(lambda: h.store.version == 1)
    on_disk = WhitelistStore(cfg.gateway.data_dir / "whitelist.db")
    try:
        assert on_disk.version == 1 and on_disk.count() == 1 and on_disk.lookup("card", "00000001") is None
    finally:
        on_disk.close()


async def test_largest_values_in_range_are_applied_and_kept(
    tmp_path: Path, broker: Broker, cloud: CloudClient
) -> None:
    """The limits are not tighter than SQLite and the spec need: each bound itself goes through."""
    cfg = make_config(tmp_path / "gw", broker.port, {})
    edge = card(1, floors=[FLOOR_MIN, FLOOR_MAX], until=UNIX_S_MAX, **{"from": 0})
    async with running_link(cfg) as h:
        cloud.publish("whitelist", snapshot(edge, version=INT64_MAX - 1, part=2**62, parts=2**62))
        await barrier(cloud)
        staged = h.store.staging()
        assert staged == {"id": "s-1", "version": INT64_MAX - 1, "parts": 2**62, "received": [2**62]}
        cloud.publish("whitelist", {**snapshot(edge, version=INT64_MAX - 1), "id": "s-2"})
        assert await until(lambda: h.store.version == INT64_MAX - 1)
        revoke = {"op": "revoke", "jti": "t-1", "until": UNIX_S_MAX}
        cloud.send_delta(INT64_MAX - 1, INT64_MAX, [revoke])
        assert await until(lambda: h.store.version == INT64_MAX)
    on_disk = WhitelistStore(cfg.gateway.data_dir / "whitelist.db")
    try:
        assert on_disk.version == INT64_MAX and on_disk.is_revoked("t-1", UNIX_S_MAX)
        e = on_disk.lookup("card", "00000001")
        assert e is not None
        assert (e.floors, e.valid_from, e.valid_until) == ((FLOOR_MIN, FLOOR_MAX), 0, UNIX_S_MAX)
    finally:
        on_disk.close()


def command(signer: Signer, act: str = "open", target: str = "north-gate", **over: Any) -> str:
    claims = command_claims(SITE, GW, act, target)
    claims.update(over)
    return mint_token(signer.key, signer.kid, claims)


async def test_command_integer_out_of_range_is_malformed(
    tmp_path: Path, broker: Broker, cloud: CloudClient
) -> None:
    signer = Signer()
    now = int(time.time())
    cfg = make_config(tmp_path / "gw", broker.port, {signer.kid: signer.public})
    bad = [
        command(signer, exp=HUGE),
        command(signer, iat=HUGE, exp=HUGE + 10),
        command(signer, iat=-HUGE, exp=now + 10),
        command(signer, "elevator_call", LIFT, floor=HUGE),
        command(signer, "elevator_grant", LIFT, floors=[3, HUGE], seconds=5),
        command(signer, "elevator_grant", LIFT, floors=[3], seconds=HUGE),
        command(signer, floor=-HUGE),  # present on any action: still a number the gateway must hold
    ]
    with capture_logs() as logs:
        async with running_link(cfg) as h:
            for token in bad:
                cloud.send_command(token)
            assert await until(lambda: len(cloud.results()) == len(bad))
            assert [(r["ok"], r["error"]) for r in cloud.results()] == [(False, "malformed")] * len(bad)
            assert all(isinstance(r["jti"], str) for r in cloud.results())  # each refusal names its command
            assert h.gate.opens == [] and h.gate.modes == []
            assert await until(lambda: len(list(cloud.events())) == len(bad))
            assert {e["reason"] for e in cloud.events()} == {"malformed"}
            assert not [e for e in logs if e["log_level"] in ("error", "critical")]
            cloud.send_command(mint_command(signer.key, signer.kid, SITE, GW, "open", "north-gate"))
            assert await until(lambda: len(cloud.results()) == len(bad) + 1)
            assert cloud.results()[-1]["ok"] is True and h.gate.opens == [("north-gate", None)]
