"""WhitelistStore on real SQLite files: imports, deltas, snapshots, revocations, uses, keys, reopen."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge.limits import FLOOR_MAX, FLOOR_MIN, INT64_MAX, UNIX_S_MAX
from edge.model import Entry, Window
from edge.store import InvalidEntry, WhitelistStore, entry_from_wire, entry_to_wire
from edge.store_codec import parse_op
from edge.tokens import TrustPolicy, generate_keypair


def card(value: str, subject: str = "resident:1", **kw: Any) -> dict[str, Any]:
    return {"kind": "card", "value": value, "subject": subject, "zones": ["north-gate"], **kw}


def plate(value: str, subject: str = "resident:2", **kw: Any) -> dict[str, Any]:
    return {"kind": "plate", "value": value, "subject": subject, "zones": ["garage"], **kw}


def snap(sid: str, version: int, part: int, parts: int, entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "snapshot", "id": sid, "version": version, "part": part, "parts": parts, "entries": entries}


def delta(frm: int, to: int, *ops: dict[str, Any]) -> dict[str, Any]:
    return {"type": "delta", "from": frm, "to": to, "ops": list(ops)}


def put(entry: dict[str, Any]) -> dict[str, Any]:
    return {"op": "put", "entry": entry}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "whitelist.db"


@pytest.fixture
def store(db: Path) -> Iterator[WhitelistStore]:
    s = WhitelistStore(db)
    yield s
    s.close()


def values(store: WhitelistStore, kind: str, *vals: str) -> list[bool]:
    return [store.lookup(kind, v) is not None for v in vals]


# --- import, lookup, codec ------------------------------------------------------------------


def test_import_normalises_and_looks_up(store: WhitelistStore) -> None:
    entries = [
        Entry("card", "04a1b2c3", "resident:1", ("north-gate",)),
        Entry("plate", "京a12345", "resident:2", ("garage",), floors=(3, 4), valid_until=2_000_000_000),
    ]
    assert (store.version, store.count()) == (0, 0)
    assert store.import_entries(entries, version=7) == 2
    assert (store.version, store.count()) == (7, 2)
    hit = store.lookup("card", "04A1B2C3")
    assert hit == Entry("card", "04A1B2C3", "resident:1", ("north-gate",))
    assert store.lookup("card", "04a1b2c3") == hit  # lookups are case-insensitive too
    assert store.lookup("plate", "京A12345") == Entry(
        "plate", "京A12345", "resident:2", ("garage",), (3, 4), None, 2_000_000_000
    )
    assert store.lookup("card", "04A1B2C4") is None
    assert store.lookup("plate", "04A1B2C3") is None  # kind is part of the key
    store.import_entries(entries[:1])
    assert (store.version, store.count()) == (0, 1)  # an import without version is "not the cloud's list"


def test_wire_entries_normalise_and_refuse_separators() -> None:
    assert entry_from_wire(card("04a1b2c3")).value == "04A1B2C3"
    assert entry_from_wire(plate("ab123")).value == "AB123"
    assert entry_from_wire(plate("京Ａ１２３４５")).value == "京A12345"  # as normalize_plate reads it
    for bad, field in [
        (card("04:A1:B2"), "value"),
        (card("04A1G2"), "value"),
        (plate("AB 123"), "value"),
        (plate("AB-123"), "value"),
        ({**card("AA"), "kind": "badge"}, "kind"),
        ({**card("AA"), "zones": []}, "zones"),
        ({**card("AA"), "zones": [["x"]]}, "zones"),
        ({**card("AA"), "subject": ""}, "subject"),
        (card("AA", floors=[True]), "floors"),
        (card("AA", blocked="no"), "blocked"),
        (card("AA", until="2030"), "until"),
    ]:
        with pytest.raises(InvalidEntry, match=field):
            entry_from_wire(bad)


def test_import_is_atomic_and_names_the_bad_entry(store: WhitelistStore) -> None:
    store.import_entries([Entry("card", "AA01", "resident:1", ("north-gate",))], version=3)
    bad = [
        Entry("card", "BB01", "resident:2", ("north-gate",)),
        Entry("card", "BB:02", "resident:3", ("north-gate",)),  # separator: refused
        Entry("card", "BB03", "resident:4", ("north-gate",)),
    ]
    with pytest.raises(InvalidEntry, match=r"entries\[1\]\.value"):
        store.import_entries(bad, version=4)
    assert (store.version, store.count()) == (3, 1)
    assert values(store, "card", "AA01", "BB01", "BB03") == [True, False, False]
    with pytest.raises(InvalidEntry, match=r"entries\[0\]\.windows\[0\]"):
        store.import_entries([Entry("card", "CC01", "r", ("z",), windows=(Window((1,), 0, 0),))])
    assert store.import_entries(bad[::2], version=5) == 2  # a failed import leaves nothing behind
    assert values(store, "card", "AA01", "BB01", "BB03") == [False, True, True]


HUGE = 2**70


@pytest.mark.parametrize(
    ("wire", "field"),
    [
        (card("AA", until=HUGE), "until"),
        (card("AA", **{"from": HUGE}), "from"),
        (card("AA", until=-HUGE), "until"),
        (card("AA", **{"from": -1}), "from"),
        (card("AA", floors=[3, HUGE]), "floors"),
        (card("AA", floors=[-HUGE]), "floors"),
    ],
    ids=["until_2^70", "from_2^70", "until_-2^70", "from_-1", "floors_2^70", "floors_-2^70"],
)
async def test_wire_integers_out_of_range_are_refused(
    store: WhitelistStore, wire: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidEntry, match=field):
        entry_from_wire(wire)
    with pytest.raises(InvalidEntry, match=rf"ops\[0\]\.{field}"):  # not an OverflowError from SQLite
        await store.apply_delta(delta(0, 1, put(wire)))
    with pytest.raises(InvalidEntry, match=rf"entries\[0\]\.{field}"):  # not turned into a REAL by SQLite
        await store.add_snapshot_part(snap("s-1", 1, 1, 1, [wire]))
    assert (store.version, store.count(), store.lookup("card", "AA")) == (0, 0, None)


async def test_revocation_until_out_of_range_is_refused(store: WhitelistStore) -> None:
    for until in (HUGE, -HUGE, -1):
        with pytest.raises(InvalidEntry, match=r"ops\[0\]\.until"):
            await store.apply_delta(delta(0, 1, {"op": "revoke", "jti": "t-1", "until": until}))
    assert store.version == 0 and not store.is_revoked("t-1", 0)


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        (Entry("card", "AA01", "r", ("z",), valid_until=HUGE), "until"),
        (Entry("card", "AA01", "r", ("z",), valid_from=-HUGE), "from"),
        (Entry("card", "AA01", "r", ("z",), floors=(HUGE,)), "floors"),
    ],
    ids=["until_2^70", "from_-2^70", "floors_2^70"],
)
def test_import_refuses_integers_out_of_range(store: WhitelistStore, entry: Entry, field: str) -> None:
    with pytest.raises(InvalidEntry, match=rf"entries\[0\]\.{field}"):
        store.import_entries([entry], version=2)
    assert (store.version, store.count(), store.lookup("card", "AA01")) == (0, 0, None)


@pytest.mark.parametrize(
    ("msg", "field"),
    [
        (delta(0, INT64_MAX + 1), "to"),
        (delta(INT64_MAX + 1, INT64_MAX + 2), "from"),
        (delta(-1, 1), "from"),
        (snap("s-1", INT64_MAX + 1, 1, 1, [card("AA")]), "version"),
        (snap("s-1", 1, 1, INT64_MAX + 1, [card("AA")]), "parts"),
        (snap("s-1", 1, INT64_MAX + 1, INT64_MAX, [card("AA")]), "part"),
    ],
    ids=["delta_to_2^63", "delta_from_2^63", "delta_from_-1", "version_2^63", "parts_2^63", "part_2^63"],
)
async def test_versions_and_parts_past_64_bits_are_refused(
    store: WhitelistStore, msg: dict[str, Any], field: str
) -> None:
    """A direct caller gets InvalidEntry from the store itself, not an OverflowError from SQLite."""
    apply = store.apply_delta if msg["type"] == "delta" else store.add_snapshot_part
    with pytest.raises(InvalidEntry, match=rf"^{field}: expected integer in"):
        await apply(msg)
    assert (store.version, store.count(), store.staging()) == (0, 0, None)
    assert await store.apply_delta(delta(0, INT64_MAX, put(card("AA")))) is True  # the edge itself is fine
    reopened = WhitelistStore(store.path)
    assert (store.version, reopened.version) == (INT64_MAX, INT64_MAX)
    reopened.close()


@pytest.mark.parametrize("version", [INT64_MAX + 1, -1], ids=["2^63", "-1"])
def test_import_refuses_a_version_out_of_range(store: WhitelistStore, version: int) -> None:
    store.import_entries([Entry("card", "AA01", "r", ("z",))], version=3)
    with pytest.raises(InvalidEntry, match=rf"^version: expected integer in 0\.\.{INT64_MAX}"):
        store.import_entries([Entry("card", "BB01", "r", ("z",))], version=version)
    assert (store.version, values(store, "card", "AA01", "BB01")) == (3, [True, False])
    assert store.import_entries([Entry("card", "BB01", "r", ("z",))], version=INT64_MAX) == 1
    assert store.version == INT64_MAX


def test_asyncapi_ranges_are_the_ones_enforced() -> None:
    """docs/asyncapi.yaml is what the cloud side reads: its minimum/maximum must be what is refused."""
    doc = yaml.safe_load((Path(__file__).parent.parent / "docs" / "asyncapi.yaml").read_text())
    msgs, schemas = doc["components"]["messages"], doc["components"]["schemas"]
    d, s = msgs["delta"]["payload"]["properties"], msgs["snapshot"]["payload"]["properties"]
    have = doc["channels"]["syncRequest"]["messages"]["syncRequest"]["payload"]["properties"]["have"]
    ints = {f"delta.{k}": v for k, v in d.items() if k in ("from", "to")}
    ints |= {f"snapshot.{k}": v for k, v in s.items() if k in ("version", "part", "parts")}
    for m in ("status", "health"):
        ints[f"{m}.whitelist_version"] = msgs[m]["payload"]["properties"]["whitelist_version"]
    ints["have"] = have
    version, part = (0, INT64_MAX), (1, INT64_MAX)
    assert {k: (v.get("minimum"), v.get("maximum")) for k, v in ints.items()} == {
        "delta.from": version, "delta.to": part, "snapshot.version": version, "snapshot.part": part,
        "snapshot.parts": part, "status.whitelist_version": version, "health.whitelist_version": version,
        "have": version,
    }  # fmt: skip
    e = schemas["Entry"]["properties"]
    fields = {"from": e["from"], "until": e["until"], "floors": e["floors"]["items"]}
    fields["revoke"] = d["ops"]["items"]["oneOf"][2]["properties"]["until"]
    for k, v in fields.items():  # each bound accepted by the codec, one past it refused
        lo, hi = v["minimum"], v["maximum"]
        assert (lo, hi) == ((FLOOR_MIN, FLOOR_MAX) if k == "floors" else (0, UNIX_S_MAX))
        for n in (lo, hi, lo - 1, hi + 1):
            wire = card("AA", floors=[n]) if k == "floors" else card("AA", **{k: n})
            op = {"op": "revoke", "jti": "t", "until": n} if k == "revoke" else put(wire)
            if lo <= n <= hi:
                parse_op(op, 0)
            else:
                with pytest.raises(InvalidEntry, match="until" if k == "revoke" else k):
                    parse_op(op, 0)


def test_blocked_entries_are_kept_and_returned(store: WhitelistStore) -> None:
    store.import_entries([entry_from_wire(card("AA01", blocked=True)), entry_from_wire(card("AA02"))])
    assert store.lookup("card", "AA01").blocked is True  # type: ignore[union-attr]
    assert store.lookup("card", "AA02").blocked is False  # type: ignore[union-attr]
    assert store.count() == 2


def test_windows_parse_across_midnight_and_round_trip(store: WhitelistStore) -> None:
    wire = card(
        "AA01",
        windows=[
            {"days": [5, 6], "start": "22:00", "end": "06:00"},
            {"days": [3, 1, 1], "start": "07:30", "end": "24:00"},
        ],
        floors=[3],
        **{"from": 1_700_000_000, "until": None},
    )
    e = entry_from_wire(wire)
    assert e.windows == (Window((5, 6), 1320, 360), Window((1, 3), 450, 1440))
    out = entry_to_wire(e)
    assert out["windows"][0] == {"days": [5, 6], "start": "22:00", "end": "06:00"}
    assert entry_from_wire(out) == e
    store.import_entries([e])
    assert store.lookup("card", "AA01") == e
    assert entry_from_wire(card("AA", windows=[{"days": [1], "start": "00:00", "end": "00:00"}])).windows == (
        Window((1,), 0, 1440),  # an end of 00:00 is midnight: the whole day
    )
    for w, field in [
        ({"days": [1], "start": "24:00", "end": "06:00"}, "start"),
        ({"days": [1], "start": "7:00", "end": "08:00"}, "start"),
        ({"days": [1], "start": "07:60", "end": "08:00"}, "start"),
        ({"days": [1], "start": "０７:００", "end": "08:00"}, "start"),  # fullwidth digits
        ({"days": [1], "start": "07:00", "end": "24:01"}, "end"),
        ({"days": [1], "start": "07:00", "end": 800}, "end"),
        ({"days": [0], "start": "07:00", "end": "08:00"}, "days"),
        ({"days": [8], "start": "07:00", "end": "08:00"}, "days"),
        ({"days": [True], "start": "07:00", "end": "08:00"}, "days"),
        ({"days": [[1]], "start": "07:00", "end": "08:00"}, "days"),
        ({"days": [], "start": "07:00", "end": "08:00"}, "days"),
    ]:
        with pytest.raises(InvalidEntry, match=rf"windows\[0\]\.{field}"):
            entry_from_wire(card("AA", windows=[w]))
    with pytest.raises(InvalidEntry, match="windows"):
        entry_from_wire(card("AA", windows=[]))


# --- revocations, uses, keys ---------------------------------------------------------------------


async def test_revocations_hold_until_expiry_then_purge(db: Path, store: WhitelistStore) -> None:
    ops = [{"op": "revoke", "jti": "t-1", "until": 1000}, {"op": "revoke", "jti": "t-2", "until": 5000}]
    assert await store.apply_delta(delta(0, 1, *ops))
    assert await store.apply_delta(delta(1, 2, {"op": "revoke", "jti": "t-1", "until": 10}))  # never shortens
    assert [store.is_revoked("t-1", t) for t in (0, 1000, 1001)] == [True, True, False]
    assert store.is_revoked("t-3", 0) is False
    store.purge_revoked(2000)
    assert store.is_revoked("t-1", 0) is False  # the row is gone, not just expired
    assert store.is_revoked("t-2", 2000) is True
    store.purge(6000)  # the background variant
    deadline = time.monotonic() + 10
    while store.is_revoked("t-2", 0) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.is_revoked("t-2", 0) is False


def test_uses_count_per_jti_and_survive_reopen(db: Path) -> None:
    s = WhitelistStore(db)
    assert [s.record_use("a", 100), s.record_use("a", 100), s.record_use("b", 50)] == [1, 2, 1]
    assert (s.uses("a"), s.uses("b"), s.uses("c")) == (2, 1, 0)
    s.close()
    s = WhitelistStore(db)
    assert s.record_use("a", 100) == 3
    s.purge(75)  # drops use counts past expiry at once
    assert (s.uses("a"), s.uses("b")) == (3, 0)
    s.close()


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_purge_in_background_while_uses_are_recorded(db: Path) -> None:
    """purge() checkpoints in a thread while the loop thread keeps counting uses: neither may fail."""
    s = WhitelistStore(db)
    counts: dict[str, int] = {}
    deadline, i = time.monotonic() + 1.5, 0
    while time.monotonic() < deadline:
        i += 1
        jti = f"j{i % 50}"
        counts[jti] = counts.get(jti, 0) + 1
        assert s.record_use(jti, 10**10) == counts[jti]
        s.purge(0)
    s.close()  # joins the purge thread: an exception there fails this test
    s = WhitelistStore(db)
    assert {j: s.uses(j) for j in counts} == counts
    s.close()


async def test_key_overlay_set_and_drop(store: WhitelistStore) -> None:
    _, pub = generate_keypair()
    assert await store.apply_delta(delta(0, 1, {"op": "key", "kid": "k2", "key": pub}))
    assert store.key_overlay() == {"k2": pub}
    assert await store.apply_delta(delta(1, 2, {"op": "key", "kid": "k2", "key": None}))
    assert store.key_overlay() == {"k2": None}
    assert await store.apply_delta(delta(2, 3, {"op": "key", "kid": "k3", "key": pub + "=="}))
    for bad in [pub[:-2], pub.replace(pub[5], "+"), pub[:10] + "!!!!" + pub[10:], "", 42]:
        with pytest.raises(InvalidEntry, match=r"ops\[0\]\.key"):
            await store.apply_delta(delta(3, 4, {"op": "key", "kid": "k4", "key": bad}))
    assert store.version == 3
    # what the gateway does with the overlay at start-up must work for every stored key
    keys = {kid: k for kid, k in store.key_overlay().items() if k is not None}
    assert set(TrustPolicy.build("site", keys).keys) == {"k3"}


# --- deltas ---------------------------------------------------------------------------------------


async def test_delta_applies_only_from_local_version(store: WhitelistStore) -> None:
    assert await store.apply_delta(delta(0, 5, put(card("aa01")), put(plate("XY1"))))
    assert (store.version, store.count()) == (5, 2)
    assert await store.apply_delta(delta(4, 6, {"op": "del", "kind": "card", "value": "AA01"})) is False
    assert await store.apply_delta(delta(6, 7, {"op": "del", "kind": "card", "value": "AA01"})) is False
    assert (store.version, store.count()) == (5, 2) and values(store, "card", "AA01") == [True]
    ops = [
        {"op": "del", "kind": "card", "value": "aa01"},
        {"op": "del", "kind": "card", "value": "FFFF"},  # absent: no-op
        put(plate("XY1", subject="resident:9")),  # replace: count unchanged
        put(card("BB02", blocked=True)),
    ]
    assert await store.apply_delta(delta(5, 6, *ops))
    assert (store.version, store.count()) == (6, 2)
    assert store.lookup("plate", "XY1").subject == "resident:9"  # type: ignore[union-attr]
    assert values(store, "card", "AA01", "BB02") == [False, True]
    for bad in [delta(6, 6), delta(-1, 2), {"from": 6, "to": 7, "ops": {}}]:
        with pytest.raises(InvalidEntry):
            await store.apply_delta(bad)


async def test_delta_with_one_bad_op_changes_nothing(store: WhitelistStore) -> None:
    _, pub = generate_keypair()
    ops = [
        put(card("CC01")),
        {"op": "revoke", "jti": "t-1", "until": 10**10},
        {"op": "key", "kid": "k9", "key": pub},
        {"op": "del", "kind": "card", "value": "CC01"},
        put(card("CC:02")),  # bad
    ]
    with pytest.raises(InvalidEntry, match=r"ops\[4\]\.value"):
        await store.apply_delta(delta(0, 1, *ops))
    with pytest.raises(InvalidEntry, match=r"ops\[1\]\.op"):
        await store.apply_delta(delta(0, 1, put(card("CC01")), {"op": "drop"}))
    assert (store.version, store.count(), store.key_overlay()) == (0, 0, {})
    assert not store.is_revoked("t-1", 0) and values(store, "card", "CC01") == [False]


# --- snapshots ------------------------------------------------------------------------------------

PARTS = [[card("A1"), card("A2")], [card("B1"), plate("PL1")], [card("C1")]]


@pytest.mark.parametrize("order", [(1, 2, 3), (3, 1, 2), (2, 3, 1)])
async def test_snapshot_parts_in_any_order_swap_once(store: WhitelistStore, order: tuple[int, ...]) -> None:
    store.import_entries([entry_from_wire(card("DD"))], version=1)
    swapped = []
    for i in order:
        swapped.append(await store.add_snapshot_part(snap("s1", 2, i, 3, PARTS[i - 1])))
        if len(swapped) < 3:  # decisions keep using the old list while parts are staged
            assert values(store, "card", "DD", "A1") == [True, False]
            assert (store.version, store.count()) == (1, 1)
            assert store.staging()["received"] == sorted(order[: len(swapped)])  # type: ignore[index]
    assert swapped == [False, False, True]
    assert (store.version, store.count(), store.staging()) == (2, 5, None)
    assert values(store, "card", "DD", "A1", "A2", "B1", "C1") == [False, True, True, True, True]
    assert values(store, "plate", "PL1") == [True]


async def test_incomplete_snapshot_changes_nothing_and_newer_id_supersedes(store: WhitelistStore) -> None:
    assert await store.add_snapshot_part(snap("old", 3, 1, 3, PARTS[0])) is False
    assert await store.add_snapshot_part(snap("old", 3, 3, 3, PARTS[2])) is False
    assert (store.version, store.count(), values(store, "card", "A1")) == (0, 0, [False])
    assert store.staging() == {"id": "old", "version": 3, "parts": 3, "received": [1, 3]}
    assert await store.add_snapshot_part(snap("new", 4, 2, 2, [card("E2")])) is False
    assert store.staging() == {"id": "new", "version": 4, "parts": 2, "received": [2]}
    assert await store.add_snapshot_part(snap("old", 3, 2, 3, PARTS[1])) is False  # late part of old id
    assert await store.add_snapshot_part(snap("new", 4, 2, 2, [card("E2")])) is False  # duplicate
    assert await store.add_snapshot_part(snap("new", 4, 1, 2, [card("E1")])) is True
    assert (store.version, store.count()) == (4, 2)
    for p in (1, 2, 3):  # parts of superseded or applied ids never restart them
        assert await store.add_snapshot_part(snap("old", 3, p, 3, PARTS[p - 1])) is False
    assert await store.add_snapshot_part(snap("new", 4, 1, 2, [card("E1")])) is False
    assert (store.version, store.count(), store.staging()) == (4, 2, None)
    assert values(store, "card", "E1", "E2", "A1", "B1", "C1") == [True, True, False, False, False]


async def test_older_snapshot_version_is_ignored(store: WhitelistStore) -> None:
    store.import_entries([entry_from_wire(card("AA"))], version=10)
    assert await store.add_snapshot_part(snap("s", 9, 1, 1, [card("BB")])) is False
    assert (store.version, store.staging(), values(store, "card", "AA", "BB")) == (10, None, [True, False])
    # a snapshot that falls behind a delta while it is being staged is discarded at the swap
    assert await store.add_snapshot_part(snap("t", 10, 1, 2, [card("CC")])) is False
    assert await store.apply_delta(delta(10, 11, put(card("DD"))))
    assert await store.add_snapshot_part(snap("t", 10, 2, 2, [card("EE")])) is False
    assert (store.version, store.staging()) == (11, None)
    assert values(store, "card", "AA", "DD", "CC", "EE") == [True, True, False, False]
    assert await store.add_snapshot_part(snap("u", 11, 1, 1, [card("FF")])) is True  # same version: ok


async def test_snapshot_part_validation(store: WhitelistStore) -> None:
    with pytest.raises(InvalidEntry, match=r"entries\[1\]\.kind"):
        await store.add_snapshot_part(snap("s", 1, 1, 2, [card("AA"), {**card("BB"), "kind": "x"}]))
    assert store.staging() is None  # nothing staged from a bad part
    assert await store.add_snapshot_part(snap("s", 1, 1, 2, [card("AA")])) is False
    with pytest.raises(InvalidEntry, match="parts"):
        await store.add_snapshot_part(snap("s", 1, 2, 3, [card("BB")]))
    with pytest.raises(InvalidEntry, match="part"):
        await store.add_snapshot_part(snap("s", 1, 3, 2, [card("BB")]))
    assert store.staging()["received"] == [1]  # type: ignore[index]


# --- persistence and other processes ----------------------------------------------------------------


async def test_everything_survives_close_and_reopen(db: Path) -> None:
    _, pub = generate_keypair()
    s = WhitelistStore(db)
    assert await s.add_snapshot_part(snap("s1", 3, 1, 1, [card("AA"), plate("PL1", blocked=True)]))
    ops = [put(card("BB")), {"op": "revoke", "jti": "t", "until": 99}, {"op": "key", "kid": "k", "key": pub}]
    assert await s.apply_delta(delta(3, 4, *ops))
    assert await s.add_snapshot_part(snap("s2", 5, 2, 2, [card("DD")])) is False
    s.record_use("t", 99)
    s.close()
    s = WhitelistStore(db)
    assert (s.version, s.count(), s.uses("t"), s.key_overlay()) == (4, 3, 1, {"k": pub})
    assert s.is_revoked("t", 50) and s.lookup("plate", "PL1").blocked  # type: ignore[union-attr]
    assert s.staging() == {"id": "s2", "version": 5, "parts": 2, "received": [2]}
    assert await s.add_snapshot_part(snap("s1", 3, 1, 1, [card("FE")])) is False  # applied before close
    assert await s.add_snapshot_part(snap("s2", 5, 1, 2, [card("CC")])) is True  # staged before close
    s.close()
    s = WhitelistStore(db)
    assert (s.version, s.count()) == (5, 2)
    assert values(s, "card", "AA", "BB", "CC", "DD", "FE") == [False, False, True, True, False]
    s.close()


async def test_swap_interrupted_after_last_part_completes_on_redelivery(db: Path) -> None:
    s = WhitelistStore(db)
    assert await s.add_snapshot_part(snap("s", 2, 1, 2, [card("AA")])) is False
    s.close()
    # the state a kill -9 leaves between staging the last part and the swap: every part staged
    con = sqlite3.connect(db)
    with con:
        con.execute("INSERT INTO staged VALUES (2, 'card', 'BB', 'r', '[\"z\"]', NULL, NULL, NULL, NULL, 0)")
        con.execute("INSERT INTO staging VALUES (2, '')")
    con.close()
    s = WhitelistStore(db)
    assert await s.add_snapshot_part(snap("s", 2, 2, 2, [card("BB")])) is True
    assert (s.version, s.count(), values(s, "card", "AA", "BB")) == (2, 2, [True, True])
    s.close()


async def test_import_by_another_process_is_seen_by_the_running_store(db: Path) -> None:
    gw = WhitelistStore(db)
    assert await gw.apply_delta(delta(0, 1, put(card("AA"))))
    cli = WhitelistStore(db)  # `edge whitelist import` while the gateway runs
    cli.import_entries([entry_from_wire(card("BB")), entry_from_wire(card("CC"))], version=5)
    cli.close()
    # the gateway's next delta goes to the list that is active on disk, not the one it last saw
    assert await gw.apply_delta(delta(5, 6, put(card("DD"))))
    deadline = time.monotonic() + 10
    while gw.lookup("card", "AA") is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert values(gw, "card", "AA", "BB", "CC", "DD") == [False, True, True, True]
    assert (gw.version, gw.count()) == (6, 3)
    gw.close()
    fresh = WhitelistStore(db)
    assert (fresh.version, fresh.count()) == (6, 3)
    assert values(fresh, "card", "AA", "BB", "CC", "DD") == [False, True, True, True]
    fresh.close()


def test_many_entries_import_in_chunks(store: WhitelistStore) -> None:
    entries = (Entry("card", f"{i:08X}", f"r:{i}", ("z",)) for i in range(12_345))
    assert store.import_entries(entries, version=1) == 12_345
    assert values(store, "card", "00000000", "00003038", "00003039") == [True, True, False]
    assert store.count() == 12_345


async def test_import_elsewhere_abandons_a_snapshot_being_collected(db: Path) -> None:
    """Snapshot parts go straight into the inactive table; an import in another process takes that
    table over, so the rest of the snapshot must never land in the list the import made active."""
    gw = WhitelistStore(db)
    assert await gw.add_snapshot_part(snap("s1", 3, 1, 2, [card("AA")])) is False
    cli = WhitelistStore(db)
    cli.import_entries([entry_from_wire(card("BB"))], version=2)  # below the snapshot's 3
    cli.close()
    assert await gw.add_snapshot_part(snap("s1", 3, 2, 2, [card("CC")])) is False  # abandoned
    fresh = WhitelistStore(db)
    assert (fresh.version, fresh.count()) == (2, 1)
    assert values(fresh, "card", "AA", "BB", "CC") == [False, True, False]
    fresh.close()
    gw.close()


async def test_parts_in_key_order_and_out_of_order_make_the_same_list(db: Path) -> None:
    """Parts in ascending key order go straight into the inactive table; others are sorted in at the
    swap. Both kinds mix in one snapshot, and a key sent twice keeps the row written last."""
    s = WhitelistStore(db)
    assert await s.add_snapshot_part(snap("m", 1, 1, 4, [card("AA"), card("BB")])) is False  # fast path
    assert await s.add_snapshot_part(snap("m", 1, 2, 4, [card("CC"), card("DD")])) is False  # fast path
    assert await s.add_snapshot_part(snap("m", 1, 3, 4, [card("FF"), card("EE")])) is False  # unsorted
    dup = card("BB", blocked=True)
    assert await s.add_snapshot_part(snap("m", 1, 4, 4, [card("AB"), dup])) is True  # below DD: sorted in
    assert (s.version, s.count()) == (1, 7)
    assert values(s, "card", "AA", "AB", "BB", "CC", "DD", "EE", "FF") == [True] * 7
    assert s.lookup("card", "BB").blocked  # type: ignore[union-attr]
    s.close()
    raw = sqlite3.connect(db)
    assert raw.execute("SELECT count(*) FROM staged").fetchone() == (0,)  # nothing left behind
    raw.close()


async def test_the_time_of_the_last_applied_change_is_on_disk(store: WhitelistStore, db: Path) -> None:
    """`edge doctor` tells the installer how old the list is: meta `synced_at` (unix ms) moves with every
    applied delta and swap, and not with a refused one."""
    import sqlite3
    import time

    def synced_at() -> int | None:
        con = sqlite3.connect(db)
        try:
            row = con.execute("SELECT v FROM meta WHERE k = 'synced_at'").fetchone()
            return None if row is None else int(row[0])
        finally:
            con.close()

    assert synced_at() is None
    t0 = int(time.time() * 1000)
    assert await store.apply_delta({"type": "delta", "from": 0, "to": 1, "ops": []})
    first = synced_at()
    assert first is not None and first >= t0
    assert not await store.apply_delta({"type": "delta", "from": 5, "to": 6, "ops": []})  # a gap: refused
    assert synced_at() == first
