"""The bridge against a real MariaDB (in process): ejyy rows -> Entries, deltas, idempotent event
writes (a redelivered batch writes nothing twice), status -> online columns, remote opens, codes."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge import codes, commands, status, whitelist
from bridge.config import BridgeConfig, DbConfig
from bridge.db import connect
from bridge.events import write_batch
from edge.tokens import TrustPolicy, b64url_encode, verify_token
from tests.support.gateway import SITE, Signer
from tests.support.mariadb import Ejyy, ejyy_database, server


def write_key(tmp_path: Path, signer: Signer) -> Path:
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    raw = signer.key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    path = tmp_path / "site.key"
    path.write_text(json.dumps({"kid": signer.kid, "private": b64url_encode(raw)}))
    return path


def bridge_cfg(db: DbConfig, key: Path, *, mqtt_port: int = 1883, **extra: Any) -> BridgeConfig:
    return BridgeConfig.model_validate(
        {
            "site": SITE,
            "db": db.model_dump(),
            "mqtt": {"host": "127.0.0.1", "port": mqtt_port},
            "signing_key": str(key),
            "poll_s": 0.2,
            "full_diff_s": 1.0,
            "gateways": {
                "gw-test": {
                    "community_id": 1,
                    "devices": {
                        "north-gate": {"kind": "entrance", "ejyy_id": 1, "zone": "north-gate"},
                        "lift-3": {"kind": "elevator", "ejyy_id": 1, "zone": "bldg-3", "buildings": [3],
                                   "floors": {3: [3]}},
                        "car-in": {"kind": "park", "ejyy_id": 1, "zone": "car-north", "gate": "north-in"},
                    },
                }
            },
            **extra,
        }
    )  # fmt: skip


@pytest.fixture(scope="module")
def srv() -> Iterator[DbConfig]:
    with server() as s:
        yield s


@pytest.fixture
def env(srv: DbConfig, tmp_path: Path) -> Iterator[tuple[BridgeConfig, Ejyy, Any, Signer]]:
    with ejyy_database(srv) as db:
        signer = Signer()
        cfg = bridge_cfg(db, write_key(tmp_path, signer))
        e = Ejyy(db)
        con = connect(db)
        e.community()
        e.devices()
        try:
            yield cfg, e, con, signer
        finally:
            con.close()
            e.close()


def seed(e: Ejyy) -> dict[str, int]:
    home = e.building(bid=3, number="301")
    other = e.building(bid=4, number="401")
    port = e.building(bid=10, type_=2, number="P-7")
    alice, bob, frozen = e.user(1042), e.user(7), e.user(9, status=0)
    e.bind(alice, home)
    e.bind(bob, other)
    e.bind(frozen, home)
    e.card("04A1B2C3", alice)
    e.card("0BADCAFE", bob)
    e.card("DEADBEEF", frozen)
    e.car(alice, port, "沪A·12345")
    e.car(bob, port, "沪B 99999", status=0)  # deleted in ejyy
    guest = e.visitor(home, expire_s=3600, car="苏E-77777")
    e.visitor(home, expire_s=-60, car="苏E-00000")  # already expired
    e.insert("ejyy_iot_park_blacklist", park_id=1, car_number="沪C66666", created_by=1)
    return {"alice": alice, "bob": bob, "guest": guest, "home": home}


def test_rows_map_to_entries(env) -> None:  # type: ignore[no-untyped-def]
    cfg, e, con, _ = env
    ids = seed(e)
    with con.cursor() as cur:
        got = whitelist.build_entries(cur, cfg, "gw-test", int(time.time()))
    assert sorted(got) == [
        "card:04A1B2C3",
        "card:0BADCAFE",
        "plate:沪A12345",
        "plate:沪C66666",
        "plate:苏E77777",
    ]
    assert got["card:04A1B2C3"] == {
        "kind": "card", "value": "04A1B2C3", "subject": "resident:1042", "zones": ["bldg-3", "north-gate"],
        "from": None, "until": None, "blocked": False, "floors": [3],
    }  # fmt: skip
    assert got["card:0BADCAFE"]["zones"] == ["north-gate"] and "floors" not in got["card:0BADCAFE"]
    assert got["plate:沪A12345"]["subject"] == "resident:1042" and got["plate:沪A12345"]["zones"] == [
        "car-north"
    ]
    guest = got["plate:苏E77777"]
    assert guest["subject"] == f"visitor:{ids['guest']}"
    assert guest["until"] - time.time() == pytest.approx(3600, abs=5) and guest["from"] <= time.time()
    assert got["plate:沪C66666"]["blocked"] is True


def test_legacy_code_entries_only_for_a_community_that_opted_in(env) -> None:  # type: ignore[no-untyped-def]
    """The entries the gateway's legacy verifier (edge/legacy_ejyy.py) looks a decrypted ejyy code up by:
    one per resident building binding and per current visitor, none unless `legacy_codes` is set."""
    from edge.legacy_ejyy import RESIDENT, VISITOR, whitelist_value

    cfg, e, con, _ = env
    ids = seed(e)
    now = int(time.time())
    with con.cursor() as cur:
        assert not [k for k in whitelist.build_entries(cur, cfg, "gw-test", now) if len(k) > 30]
        cfg.gateways["gw-test"].legacy_codes = True
        got = whitelist.build_entries(cur, cfg, "gw-test", now)
    legacy = {k: v for k, v in got.items() if len(v["value"]) == 41}
    alice = got[f"card:{whitelist_value(RESIDENT, ids['alice'], ids['home'])}"]
    assert alice["subject"] == f"resident:{ids['alice']}" and alice["zones"] == ["bldg-3", "north-gate"]
    assert alice["floors"] == [3]
    bob = got[f"card:{whitelist_value(RESIDENT, ids['bob'], 4)}"]
    assert bob["zones"] == ["north-gate"]  # the lift serves building 3 only
    guest = got[f"card:{whitelist_value(VISITOR, ids['guest'], ids['home'])}"]
    assert guest["subject"] == f"visitor:{ids['guest']}" and guest["until"] > now
    assert len(legacy) == 3  # no frozen user, no expired visitor


def test_snapshot_then_deltas_follow_ejyy(env) -> None:  # type: ignore[no-untyped-def]
    cfg, e, con, _ = env
    ids = seed(e)
    now = int(time.time())
    v, entries = whitelist.current(con, cfg, "gw-test", now)
    assert v == 1 and len(entries) == 5
    assert whitelist.current(con, cfg, "gw-test", now)[0] == 1  # nothing changed: same version
    assert whitelist.poll_delta(con, cfg, "gw-test", now, full=False) is None
    assert whitelist.poll_delta(con, cfg, "gw-test", now, full=True) is None
    # alice moves out (ejyy flips status), a new car appears, the blacklist row is deleted
    e.q("UPDATE ejyy_user_building SET status = 0 WHERE wechat_mp_user_id = %s", (ids["alice"],))
    e.car(ids["bob"], 10, "沪D11111")
    e.q("DELETE FROM ejyy_iot_park_blacklist")
    d = whitelist.poll_delta(con, cfg, "gw-test", now, full=False)
    assert d is not None and (d["from"], d["to"]) == (1, 2)
    dels = sorted((o["kind"], o["value"]) for o in d["ops"] if o["op"] == "del")
    puts = sorted(o["entry"]["value"] for o in d["ops"] if o["op"] == "put")
    assert dels == [("card", "04A1B2C3"), ("plate", "沪A12345"), ("plate", "沪C66666")]
    assert puts == ["沪D11111"]
    assert whitelist.poll_delta(con, cfg, "gw-test", now, full=True) is None
    # the visitor's booking runs out: seen by the periodic full diff
    later = now + 7200
    d2 = whitelist.poll_delta(con, cfg, "gw-test", later, full=True)
    assert (
        d2 is not None
        and d2["from"] == 2
        and d2["ops"] == [{"op": "del", "kind": "plate", "value": "苏E77777"}]
    )


def test_two_pollers_publish_one_delta(env, srv) -> None:  # type: ignore[no-untyped-def]
    cfg, e, con, _ = env
    seed(e)
    whitelist.current(con, cfg, "gw-test", int(time.time()))
    e.car(7, 10, "沪D22222")
    results: list[Any] = []
    other = connect(cfg.db)

    def poll(c: Any) -> None:
        try:
            results.append(whitelist.poll_delta(c, cfg, "gw-test", int(time.time()), full=True))
        except Exception as exc:  # a deadlock here would be a bug: the test must see it
            results.append(exc)

    ts = [threading.Thread(target=poll, args=(c,)) for c in (con, other)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    other.close()
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sum(r is not None for r in results) == 1


def ev(i: str, device: str, **kw: Any) -> dict[str, Any]:
    return {"id": i, "ts": int(time.time() * 1000), "device": device, "reader": None, "method": "qr",
            "credential": "t-1", "subject": "resident:1042", "result": "granted", "reason": "ok",
            "latency_ms": 3.0, **kw}  # fmt: skip


def test_events_land_once_with_ejyy_mapping(env) -> None:  # type: ignore[no-untyped-def]
    cfg, e, con, _ = env
    ids = seed(e)
    batch = [
        ev("E1", "north-gate"),
        ev("E2", "north-gate", method="nfc", credential="****B2C3"),
        ev("E3", "north-gate", method="nfc", credential="t-phone", subject=f"visitor:{ids['guest']}"),
        ev("E4", "lift-3", floors=[3]),
        ev("E5", "car-in", method="plate", credential="沪***45", direction="in"),
        ev(
            "E6",
            "car-in",
            method="plate",
            credential="苏***77",
            direction="out",
            subject=f"visitor:{ids['guest']}",
        ),
        ev("E7", "north-gate", result="denied", reason="expired"),
        ev("E8", "north-gate", method="button", subject=None),
    ]
    items = [("gw-test", x) for x in batch]
    assert write_batch(con, cfg, items) == 8
    assert write_batch(con, cfg, items) == 0  # the broker redelivered the whole message
    assert write_batch(con, cfg, [*items[:3], ("gw-test", ev("E9", "north-gate"))]) == 1
    assert e.q("SELECT wechat_mp_user_id, vistor_id, entrance_id, method FROM ejyy_iot_entrance_log ORDER BY id") == [
        (1042, None, 1, 1), (1042, None, 1, 3), (None, ids["guest"], 1, 2), (1042, None, 1, 1),
    ]  # fmt: skip
    assert e.q("SELECT wechat_mp_user_id, elevator_id, method FROM ejyy_iot_elevator_log") == [(1042, 1, 1)]
    assert e.q("SELECT park_id, car_number, gate, is_leave FROM ejyy_iot_park_log ORDER BY id") == [
        (1, "沪A12345", "north-in", 0), (1, "苏E77777", "north-in", 1),
    ]  # fmt: skip
    assert e.q("SELECT COUNT(*) FROM bridge_event") == [(9,)]


def test_concurrent_redelivery_writes_once(env) -> None:  # type: ignore[no-untyped-def]
    """Two instances given overlapping batches at the same time (a redelivery race)."""
    cfg, e, con, _ = env
    seed(e)
    evs = [("gw-test", ev(f"C{i:04d}", "north-gate")) for i in range(400)]
    other = connect(cfg.db)
    counts: list[int] = []
    ts = [
        threading.Thread(target=lambda c=c, part=part: counts.append(write_batch(c, cfg, part)))
        for c, part in ((con, evs[:300]), (other, evs[100:]))
    ]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    other.close()
    assert sum(counts) == 400
    assert e.q("SELECT COUNT(*) FROM ejyy_iot_entrance_log") == [(400,)]


def test_status_and_last_will_drive_online_columns(env) -> None:  # type: ignore[no-untyped-def]
    cfg, e, con, _ = env

    def online() -> list[int]:
        return [e.q(f"SELECT online FROM {t} WHERE id = 1")[0][0] for t in status.TABLE.values()]  # type: ignore[misc]

    status.on_status(con, cfg, "gw-test", {"online": True, "version": "1.0", "whitelist_version": 3})
    assert online() == [1, 1, 1]
    status.on_health(con, cfg, "gw-test", {"devices": {"north-gate": {"online": True}, "car-in": {"online": False},
                                                       "lift-3": {"online": True}}})  # fmt: skip
    assert online() == [1, 1, 0]
    status.on_status(con, cfg, "gw-test", {"online": False})  # the Last Will
    assert online() == [0, 0, 0]
    status.on_health(con, cfg, "gw-test", {"devices": {"north-gate": {"online": True}}})  # stale retained
    assert online() == [0, 0, 0]
    status.on_status(con, cfg, "gw-test", {"online": True})
    assert online() == [1, 1, 0]  # as the last health said


def test_remote_open_row_is_sent_once_and_result_recorded(env) -> None:  # type: ignore[no-untyped-def]
    cfg, e, con, signer = env
    rid = e.insert("ejyy_community_remote_open_door_log", door_id=1, community_id=1, wechat_mp_user_id=1042)
    e.insert(
        "ejyy_community_remote_open_door_log",
        door_id=1,
        community_id=1,
        wechat_mp_user_id=1042,
        created_at=int(time.time() * 1000) - 120_000,
    )  # fmt: skip  (stale: never sent)
    s = commands.Signer(cfg.signing_key)
    other = connect(cfg.db)
    sent = commands.claim_remote_opens(con, cfg, s) + commands.claim_remote_opens(other, cfg, s)
    other.close()
    assert len(sent) == 1 and sent[0][0] == "gw-test"
    from edge.tokens import verify_command

    policy = TrustPolicy.build(SITE, {signer.kid: signer.public_b64})
    cmd = verify_command(sent[0][1], policy, "gw-test", time.time())
    assert (cmd.act, cmd.target, cmd.by) == ("open", "north-gate", "resident:1042")  # type: ignore[union-attr]
    commands.on_result(con, "gw-test", {"jti": cmd.jti, "ok": True, "error": None, "ts": 1})  # type: ignore[union-attr]
    assert e.q("SELECT success FROM ejyy_community_remote_open_door_log WHERE id = %s", (rid,)) == [(1,)]
    assert e.q("SELECT ok, error FROM bridge_command") == [(1, None)]


def test_codes_are_signed_short_lived_and_scoped(env) -> None:  # type: ignore[no-untyped-def]
    cfg, e, con, signer = env
    ids = seed(e)
    s = commands.Signer(cfg.signing_key)
    policy = TrustPolicy.build(SITE, {signer.kid: signer.public_b64})
    r = codes.resident_code(cfg, con, s, ids["alice"])
    c = verify_token(r["token"], policy, time.time())
    assert (c.sub, c.kind, c.zones, c.floors) == ("resident:1042", "resident", ("bldg-3", "north-gate"), (3,))  # type: ignore[union-attr]
    assert c.exp - time.time() <= 60  # type: ignore[union-attr]
    v = codes.visitor_code(cfg, con, s, ids["guest"], uses=2)
    c2 = verify_token(v["token"], policy, time.time())
    assert (c2.sub, c2.kind, c2.uses) == (f"visitor:{ids['guest']}", "visitor", 2)  # type: ignore[union-attr]
    assert c2.exp - time.time() == pytest.approx(3600, abs=5)  # type: ignore[union-attr]
    gone = e.visitor(ids["home"], expire_s=-1)
    with pytest.raises(codes.NoAccess):
        codes.visitor_code(cfg, con, s, gone)
    with pytest.raises(codes.NoAccess):
        codes.resident_code(cfg, con, s, 9)  # frozen user


async def test_codes_http_endpoint(env) -> None:  # type: ignore[no-untyped-def]
    from aiohttp.test_utils import TestClient, TestServer

    cfg, e, _con, signer = env
    ids = seed(e)
    cfg.codes.api_token = "s3cret"
    app = codes.make_app(cfg, commands.Signer(cfg.signing_key))
    policy = TrustPolicy.build(SITE, {signer.kid: signer.public_b64})
    async with TestClient(TestServer(app)) as http:
        auth = {"Authorization": "Bearer s3cret"}
        r = await http.post("/v1/codes/resident", json={"user_id": ids["alice"]}, headers=auth)
        assert r.status == 200
        body = await r.json()
        assert verify_token(body["token"], policy, time.time()).sub == "resident:1042"  # type: ignore[union-attr]
        r = await http.post("/v1/codes/visitor", json={"vistor_id": ids["guest"], "uses": 1}, headers=auth)
        assert r.status == 200 and (await r.json())["jti"].startswith(f"v{ids['guest']}-")
        assert (await http.post("/v1/codes/resident", json={"user_id": 1042})).status == 401
        bad = {"Authorization": "Bearer nope"}
        assert (await http.post("/v1/codes/resident", json={"user_id": 1042}, headers=bad)).status == 401
        assert (await http.post("/v1/codes/resident", json={"user_id": 55555}, headers=auth)).status == 404
        gone = e.visitor(ids["home"], expire_s=-5)
        assert (await http.post("/v1/codes/visitor", json={"vistor_id": gone}, headers=auth)).status == 410
        assert (await http.post("/v1/codes/visitor", json=[1], headers=auth)).status == 400
