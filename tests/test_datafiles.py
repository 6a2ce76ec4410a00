"""Broken data files: an unusable data dir is one clear line (exit 2); a damaged database is moved aside,
an alarm says so, what can be read is kept, and the gate runs. Real files damaged on disk, real
`edge` subprocesses, a real Mosquitto, a real pymodbus board and pty scanner."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from edge.cloud.link import CloudLink
from edge.config import Config
from edge.datafiles import open_stores
from edge.outbox import Outbox
from edge.sim.cloud_client import CloudClient
from edge.sim.relay_board import RelayBoardSim
from edge.store import WhitelistStore
from tests.support.broker import Broker
from tests.support.cloud import GW, SITE, RecordingGate, make_config, until
from tests.support.daemon import ROOT, Daemon
from tests.support.gateway import Signer, free_port, gateway_config
from tests.support.ptys import PtyPair


def edge(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "edge.cli", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)


def config_with_data_dir(tmp_path: Path, data_dir: str) -> Path:
    cfg = {"gateway": {"site": SITE, "id": GW, "data_dir": data_dir}, "trust": {"keys": {}}}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def offline_config(tmp_path: Path) -> Config:
    return Config.model_validate({"gateway": {"site": SITE, "id": GW, "data_dir": str(tmp_path / "data")}})


def fill_outbox(data: Path, n: int) -> list[str]:
    """n events in a cleanly closed outbox; returns their ids in order."""
    data.mkdir(parents=True, exist_ok=True)
    ob = Outbox(data / "outbox.db")
    ids = []
    for i in range(n):
        ev = Outbox.make_event("north-gate", "qr", f"jti-{i:05d}", "granted", "ok", reader="qr-north")
        ob.append(ev)
        ids.append(ev.id)
    ob.close()
    return ids


def overwrite(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(data)


def bodies(ob: Outbox) -> list[dict[str, object]]:
    return [json.loads(b) for _, b in ob.peek(0, 10**6)]


def alarms(events: list[dict[str, object]]) -> list[dict[str, object]]:
    return [e for e in events if e["result"] == "alarm" and e["device"] == "gateway"]


# --- the data dir ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda t: t / "afile", "is a file, not a directory"),
        (lambda t: t / "afile" / "data", "cannot be created: {t}/afile is a file, not a directory"),
    ],
)
def test_unusable_data_dir_is_one_line_exit_2(tmp_path: Path, make, expected: str) -> None:
    (tmp_path / "afile").write_text("not a directory\n")
    data = make(tmp_path)
    cfg = config_with_data_dir(tmp_path, str(data))
    want = f"data_dir {data}: " + expected.format(t=tmp_path)
    for args in (["check-config", str(cfg)], ["run", "-c", str(cfg)], ["whitelist", "count", "-c", str(cfg)],
                 ["events", "tail", "-c", str(cfg)], ["token", "verify", "-c", str(cfg), "x.y.z"]):  # fmt: skip
        r = edge(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stderr.strip() == want, (args, r.stderr)
        assert "OK" not in r.stdout


def test_unwritable_data_dir_is_refused(tmp_path: Path) -> None:
    """Root ignores permission bits; /sys refuses new files even to root (EACCES)."""
    if os.access("/sys", os.W_OK) and not Path("/sys/kernel").exists():
        pytest.skip("no sysfs here")
    cfg = config_with_data_dir(tmp_path, "/sys")
    for args in (["check-config", str(cfg)], ["run", "-c", str(cfg)]):
        r = edge(*args)
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert r.stderr.startswith("data_dir /sys: is not writable: "), r.stderr


def test_check_config_does_not_create_the_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "new" / "data"
    r = edge("check-config", str(config_with_data_dir(tmp_path, str(data))))
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout and not data.exists()


# --- the outbox --------------------------------------------------------------------------------


def test_outbox_with_bad_pages_is_moved_aside_and_its_events_salvaged(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ids = fill_outbox(data, 3000)
    size = (data / "outbox.db").stat().st_size
    overwrite(data / "outbox.db", (size // 4096 // 2) * 4096, os.urandom(4096))  # one page mid-table
    with sqlite3.connect(data / "outbox.db") as con:  # the damage an open does not see
        con.execute("SELECT count(*) FROM meta").fetchone()
    store, ob = open_stores(offline_config(tmp_path))
    try:
        events = bodies(ob)
        got = [e["id"] for e in events if e["device"] == "north-gate"]
        assert got == [i for i in ids if i in set(got)], "salvaged events out of order"
        assert 2900 < len(got) < 3000  # one page of rows lost, every other row kept
        (alarm,) = alarms(events)
        assert alarm["credential"] == "outbox.db" and alarm["method"] == "sensor"
        assert alarm["reason"] == "device_unavailable" and f"{len(got)} events" in str(alarm["subject"])
        aside = [p.name for p in data.glob("outbox.db.damaged-*") if not p.name.endswith(("-wal", "-shm"))]
        assert len(aside) == 1 and aside[0] in str(alarm["subject"])
        assert (data / aside[0]).stat().st_size == size  # kept as it was, for inspection
        seq = ob.append(Outbox.make_event("north-gate", "qr", "after", "granted", "ok"))
        assert seq > max(s for s, _ in ob.peek(0, 10**6) if s != seq)
    finally:
        ob.close()
        store.close()


def test_outbox_with_garbage_header_keeps_every_event(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ids = fill_outbox(data, 500)
    overwrite(data / "outbox.db", 0, os.urandom(100))
    store, ob = open_stores(offline_config(tmp_path))
    try:
        events = bodies(ob)
        assert [e["id"] for e in events if e["device"] == "north-gate"] == ids
        assert len(alarms(events)) == 1
    finally:
        ob.close()
        store.close()


def test_truncated_outbox_keeps_the_first_part(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ids = fill_outbox(data, 2000)
    path = data / "outbox.db"
    os.truncate(path, path.stat().st_size // 2)
    store, ob = open_stores(offline_config(tmp_path))
    try:
        got = [e["id"] for e in bodies(ob) if e["device"] == "north-gate"]
        assert 500 < len(got) < 2000 and got == ids[: len(got)]
    finally:
        ob.close()
        store.close()


def test_deleted_events_are_not_resurrected(tmp_path: Path) -> None:
    """Rows acknowledged and deleted live on in freed pages: salvage must skip the freelist."""
    data = tmp_path / "data"
    data.mkdir()
    ob = Outbox(data / "outbox.db")
    for i in range(3000):
        ob.append(Outbox.make_event("north-gate", "qr", f"jti-{i:05d}", "granted", "ok"))
    ob.delete((1, 2000))
    ob.close()
    overwrite(data / "outbox.db", 0, os.urandom(16))  # the magic only: page size, freelist still read
    store, ob = open_stores(offline_config(tmp_path))
    try:
        creds = [e["credential"] for e in bodies(ob) if e["device"] == "north-gate"]
        assert creds == [f"jti-{i:05d}" for i in range(2000, 3000)]
    finally:
        ob.close()
        store.close()


def test_garbage_wal_is_moved_aside_with_its_database(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ids = fill_outbox(data, 200)  # closed: all in the database file
    wal = data / "outbox.db-wal"
    wal.write_bytes(os.urandom(8192))
    store, ob = open_stores(offline_config(tmp_path))
    try:
        events = bodies(ob)
        assert [e["id"] for e in events if e["device"] == "north-gate"] == ids
        (alarm,) = alarms(events)
        assert "-wal file is garbage" in str(alarm["subject"])
        assert any(p.name.endswith("-wal") and ".damaged-" in p.name for p in data.iterdir())
    finally:
        ob.close()
        store.close()


# --- the whitelist -----------------------------------------------------------------------------


def test_damaged_use_counts_are_salvaged(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    st = WhitelistStore(data / "whitelist.db")
    for _ in range(3):
        st.record_use("visitor-7", 2_000_000_000)
    st.record_use("visitor-8", 2_000_000_000)
    st.close()
    overwrite(data / "whitelist.uses.db", 0, os.urandom(100))
    store, ob = open_stores(offline_config(tmp_path))
    try:
        assert store.uses("visitor-7") == 3 and store.uses("visitor-8") == 1
        (alarm,) = alarms(bodies(ob))
        assert alarm["credential"] == "whitelist.uses.db" and "2 use counts" in str(alarm["subject"])
    finally:
        ob.close()
        store.close()


def test_damaged_whitelist_keeps_revocations_and_asks_the_cloud(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    st = WhitelistStore(data / "whitelist.db")
    entries = [{"kind": "card", "value": f"{i:08X}", "subject": f"r:{i}", "zones": ["z"]} for i in range(5000)]
    asyncio.run(st.apply_delta({"type": "delta", "from": 0, "to": 1, "ops": [{"op": "put", "entry": e}
                                                                             for e in entries]}))  # fmt: skip
    asyncio.run(st.apply_delta({"type": "delta", "from": 1, "to": 2, "ops": [
        {"op": "revoke", "jti": "stolen", "until": 2_000_000_000}, {"op": "key", "kid": "old", "key": None}]}))
    st.close()
    size = (data / "whitelist.db").stat().st_size
    overwrite(data / "whitelist.db", size - 8 * 4096, os.urandom(4096))
    store, ob = open_stores(offline_config(tmp_path))
    try:
        assert store.version == 0 and store.count() == 0
        assert store.is_revoked("stolen", 1_900_000_000)
        assert store.key_overlay() == {"old": None}
        (alarm,) = alarms(bodies(ob))
        assert alarm["credential"] == "whitelist.db" and "1 revocations" in str(alarm["subject"])
    finally:
        ob.close()
        store.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with Broker(tmp_path / "broker") as b:
        yield b


async def test_after_a_damaged_whitelist_the_link_requests_a_full_list(tmp_path: Path, broker: Broker) -> None:
    cfg = make_config(tmp_path / "gw", broker.port, {})
    data = cfg.gateway.data_dir
    data.mkdir(parents=True)
    st = WhitelistStore(data / "whitelist.db")
    st.import_entries([], version=41)
    st.close()
    overwrite(data / "whitelist.db", 0, os.urandom(4096))
    with CloudClient("127.0.0.1", broker.port, SITE, GW) as cloud:
        store, ob = open_stores(cfg)
        link = CloudLink(cfg, store, ob, RecordingGate(ob), version="test-1")
        task = asyncio.create_task(link.run())
        try:
            assert await until(lambda: bool(cloud.on("sync/request")), 15), link.last_error
            assert [r.json()["have"] for r in cloud.on("sync/request")] == [0]

            def sent() -> list[dict[str, object]]:
                return [e for r in cloud.on("events") for e in r.json()["events"]]

            assert await until(lambda: bool(alarms(sent())))  # the alarm reaches the cloud
            assert alarms(sent())[0]["credential"] == "whitelist.db"
        finally:
            await link.stop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            ob.close()
            store.close()


async def test_gate_runs_and_grants_tokens_after_every_database_is_damaged(tmp_path: Path) -> None:
    signer = Signer()
    port = free_port()
    board = RelayBoardSim(device_ids=[1])
    server = asyncio.create_task(board.serve_tcp("127.0.0.1", port))
    scanner = PtyPair(tmp_path, "qr").start()
    cfg = gateway_config(
        tmp_path,
        signer=signer,
        bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": port, "timeout": 0.3, "retries": 0},
        readers={"qr-north": {"type": "serial", "port": str(scanner.b), "content": "qr"}},
    )
    data = tmp_path / "data"
    fill_outbox(data, 50)
    WhitelistStore(data / "whitelist.db").close()
    for name in ("whitelist.db", "whitelist.uses.db", "outbox.db"):
        overwrite(data / name, 0, os.urandom(4096))
    fd = os.open(scanner.a, os.O_RDWR | os.O_NOCTTY)
    gw = Daemon(cfg)
    try:
        await gw.wait_for("device_status", device="qr-north", online=True)
        for name in ("whitelist.db", "whitelist.uses.db", "outbox.db"):
            assert gw.seen("database_recovered", file=name), name
        os.write(fd, signer.code("after-damage").encode() + b"\r")
        await gw.wait_for("decision", credential="after-damage")
        assert gw.seen("decision", credential="after-damage", result="granted")
        assert await until(lambda: any(w.address == 0x0200 for w in board.writes))  # the lock was pulsed
        gw.proc.terminate()
        assert gw.proc.wait(15) == 0
        with sqlite3.connect(data / "outbox.db") as con:
            rows = [json.loads(b) for (b,) in con.execute("SELECT body FROM events ORDER BY seq")]
        assert len(alarms(rows)) == 3
        assert [e["credential"] for e in rows if e["reader"] == "qr-north"][-1] == "after-damage"
        assert sum(1 for e in rows if str(e["credential"]).startswith("jti-")) == 50  # salvaged
    finally:
        gw.finish()
        os.close(fd)
        scanner.stop()
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)


async def test_a_clean_stop_defers_the_full_check_and_damage_at_rest_is_still_found(tmp_path: Path) -> None:
    """Start-up after a clean stop skips the full read (1M entries: most of start-up) and checks after
    READY; damage that kept size and mtime (bit rot at rest) ends that run, and the next start recovers."""
    port = free_port()
    board = RelayBoardSim(device_ids=[1])
    server = asyncio.create_task(board.serve_tcp("127.0.0.1", port))
    scanner = PtyPair(tmp_path, "qr").start()
    cfg = gateway_config(
        tmp_path,
        signer=Signer(),
        bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": port, "timeout": 0.3, "retries": 0},
        readers={"qr-north": {"type": "serial", "port": str(scanner.b), "content": "qr"}},
    )
    data = tmp_path / "data"
    fill_outbox(data, 10)
    wl = tmp_path / "wl.ndjson"
    wl.write_text("".join(json.dumps({"kind": "card", "value": f"{i:08X}", "subject": f"resident:{i}",
                                      "zones": ["north-gate"]}) + "\n" for i in range(20000)))  # fmt: skip
    assert edge("whitelist", "import", "-c", str(cfg), str(wl)).returncode == 0
    try:
        gw = Daemon(cfg)
        try:
            await gw.wait_for("gateway_started")  # no stamp yet: it checked in full before READY
            assert not gw.seen("databases_checked")
            gw.proc.terminate()
            assert gw.proc.wait(15) == 0
        finally:
            gw.finish()
        assert (data / "whitelist.db.clean").exists() and not (data / "outbox.db.clean").exists()
        gw = Daemon(cfg)  # clean and untouched: deferred, then checked after start
        try:
            await gw.wait_for("databases_checked", when="after start")
            assert not (data / "whitelist.db.clean").exists()  # from now on the daemon writes
            gw.proc.terminate()
            assert gw.proc.wait(15) == 0
        finally:
            gw.finish()
        ob = data / "whitelist.db"
        st = ob.stat()
        overwrite(ob, (st.st_size // 4096 // 2) * 4096, os.urandom(4096))
        os.utime(ob, ns=(st.st_atime_ns, st.st_mtime_ns))  # rot at rest: same size, same mtime
        gw = Daemon(cfg)
        try:
            await gw.wait_for("database_damaged", when="after start: restarting to recover")
            assert gw.proc.wait(15) == 1  # fatal: systemd restarts it
        finally:
            gw.finish()
        assert not list(data.glob("*.clean"))  # that run proved nothing: no stamp
        gw = Daemon(cfg)
        try:
            await gw.wait_for("database_recovered", file="whitelist.db")  # the full check ran before READY
            gw.proc.terminate()
            assert gw.proc.wait(15) == 0
        finally:
            gw.finish()
    finally:
        scanner.stop()
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)


async def test_damage_found_while_running_denies_ends_the_run_and_the_next_start_recovers(tmp_path: Path) -> None:
    """A whitelist that goes bad under a running daemon (a failing SD card): the card in hand is denied
    (fail secure) and recorded, the daemon ends non-zero with no clean stamp, and the restart that
    systemd makes finds the damage, moves the file aside and runs."""
    port = free_port()
    board = RelayBoardSim(device_ids=[1])
    server = asyncio.create_task(board.serve_tcp("127.0.0.1", port))
    cards = PtyPair(tmp_path, "card").start()
    cfg = gateway_config(
        tmp_path,
        signer=Signer(),
        bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": port, "timeout": 0.3, "retries": 0},
        readers={"card-north": {"type": "serial", "port": str(cards.b), "content": "card"}},
    )
    data = tmp_path / "data"
    wl = tmp_path / "wl.ndjson"
    wl.write_text("".join(json.dumps({"kind": "card", "value": f"{i:08X}", "subject": f"resident:{i}",
                                      "zones": ["north-gate"]}) + "\n" for i in range(20000)))  # fmt: skip
    assert edge("whitelist", "import", "-c", str(cfg), str(wl)).returncode == 0
    fd = os.open(cards.a, os.O_RDWR | os.O_NOCTTY)
    try:
        gw = Daemon(cfg)
        try:
            await gw.wait_for("device_status", device="card-north", online=True)
            size = (data / "whitelist.db").stat().st_size
            for off in range(4096, size, 4096):  # every page but the header
                overwrite(data / "whitelist.db", off, os.urandom(4096))
            os.write(fd, b"00000123\r")
            await gw.wait_for("task_fatal", task="decision")
            assert gw.proc.wait(15) == 1  # ends non-zero: systemd restarts it
        finally:
            gw.finish()
        assert not any(w.on for w in board.writes)  # nothing opened on a list it could not read
        assert not list(data.glob("*.clean"))  # the next start checks in full
        with sqlite3.connect(data / "outbox.db") as con:
            rows = [json.loads(b) for (b,) in con.execute("SELECT body FROM events ORDER BY seq")]
        assert [(e["result"], e["reason"]) for e in rows if e["reader"] == "card-north"] == [
            ("denied", "internal_error")
        ]
        gw = Daemon(cfg)
        try:
            await gw.wait_for("database_recovered", file="whitelist.db")
            await gw.wait_for("device_status", device="card-north", online=True)
            gw.proc.terminate()
            assert gw.proc.wait(15) == 0
        finally:
            gw.finish()
        assert list(data.glob("whitelist.db.damaged-*"))
    finally:
        os.close(fd)
        cards.stop()
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
