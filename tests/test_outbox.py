"""Outbox on real SQLite files: order, deletes, seq never reused, overflow, kill -9 durability, flusher."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.model import Event
from edge.outbox import _CHECKPOINT_FRAMES, Outbox

ROOT = Path(__file__).resolve().parent.parent


def ev(i: int, reason: str = "ok") -> Event:
    return Outbox.make_event("north-gate", "nfc", f"****{i:04X}", "granted", reason, reader="nfc-1", ts=i)


def creds(rows: list[tuple[int, str]]) -> list[str]:
    return [json.loads(body)["credential"] for _, body in rows]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "outbox.db"


@pytest.fixture
def ob(db: Path) -> Iterator[Outbox]:
    o = Outbox(db)
    yield o
    o.close()


def test_append_peek_oldest_first_and_wire_body(ob: Outbox) -> None:
    seqs = [ob.append(ev(i)) for i in range(1, 6)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    assert ob.count() == 5
    rows = ob.peek(0)
    assert [s for s, _ in rows] == seqs
    assert json.loads(rows[0][1]) == {
        "id": json.loads(rows[0][1])["id"],
        "ts": 1,
        "device": "north-gate",
        "reader": "nfc-1",
        "method": "nfc",
        "credential": "****0001",
        "subject": None,
        "result": "granted",
        "reason": "ok",
        "latency_ms": None,
    }
    assert len({json.loads(b)["id"] for _, b in rows}) == 5  # every event has its own id
    assert [s for s, _ in ob.peek(seqs[1], limit=2)] == seqs[2:4]
    assert ob.peek(seqs[-1]) == []


def test_delete_by_list_and_by_range(ob: Outbox) -> None:
    s = [ob.append(ev(i)) for i in range(10)]
    assert ob.delete([s[1], s[3], 10**6]) == 2  # unknown seqs are not counted
    assert ob.delete((s[5], s[7])) == 3  # a tuple is an inclusive range
    assert ob.delete([]) == 0 and ob.delete((s[9], s[8])) == 0
    assert [q for q, _ in ob.peek(0)] == [s[0], s[2], s[4], s[8], s[9]]
    assert ob.count() == 5
    assert creds(ob.peek(0)) == ["****0000", "****0002", "****0004", "****0008", "****0009"]


def test_failed_delete_leaves_no_open_transaction(db: Path, ob: Outbox) -> None:
    a = ob.append(ev(1))
    with pytest.raises(OverflowError):
        ob.delete([a, 2**70])  # fails inside the transaction (too big for SQLite)
    assert ob.count() == 1
    b = ob.append(ev(2))
    other = sqlite3.connect(db)  # appends after the failure are committed, not stuck in a transaction
    assert [s for (s,) in other.execute("SELECT seq FROM events ORDER BY seq")] == [a, b]
    other.close()


def test_seq_is_never_reused_after_deleting_everything_and_reopening(db: Path) -> None:
    o = Outbox(db)
    last = [o.append(ev(i)) for i in range(3)][-1]
    o.delete((1, last))
    assert o.count() == 0
    o.close()
    o = Outbox(db)
    assert (o.count(), o.peek(0)) == (0, [])
    nxt = o.append(ev(9))
    assert nxt > last
    o.delete([nxt])  # by list, this time
    o.close()
    o = Outbox(db)
    assert o.append(ev(10)) > nxt
    o.close()


def test_range_delete_past_the_last_seq_does_not_skip_ahead(db: Path) -> None:
    o = Outbox(db)
    a = o.append(ev(1))
    o.delete((a, a + 1000))
    b = o.append(ev(2))
    o.close()
    o = Outbox(db)
    c = o.append(ev(3))
    assert (b, c) == (a + 1, a + 2)  # seqs stay dense and the same before and after a restart
    o.close()


def test_overflow_drops_oldest_and_records_it(db: Path) -> None:
    o = Outbox(db, max_events=10)
    seqs = [o.append(ev(i)) for i in range(10)]
    new = o.append(ev(10))
    rows = o.peek(0)
    assert o.count() == len(rows) == 10
    bodies = [json.loads(b) for _, b in rows]
    assert [r for r in creds(rows) if r.startswith("****")] == [f"****{i:04X}" for i in range(2, 11)]
    info = [b for b in bodies if b["result"] == "info"]
    assert len(info) == 1
    assert info[0]["reason"] == "outbox_overflow" and info[0]["credential"] == "2"
    assert info[0]["device"] == "gateway" and info[0]["method"] == "sensor"
    assert [s for s, _ in rows][-2:] == [new - 1, new]  # the info event just before the new one
    assert rows[0][0] == seqs[2]
    o.close()
    o = Outbox(db, max_events=10)
    assert o.count() == 10 and o.append(ev(11)) > new  # overflowed again: 2 more dropped, one info
    assert [json.loads(b)["reason"] for _, b in o.peek(0)].count("outbox_overflow") == 2
    assert o.count() == 10
    o.close()


def test_tail_newest_first(ob: Outbox) -> None:
    for i in range(30):
        ob.append(ev(i))
    assert [e["credential"] for e in ob.tail(3)] == ["****001D", "****001C", "****001B"]
    assert len(ob.tail()) == 20


def test_listener_runs_after_commit_and_cannot_fail_append(ob: Outbox) -> None:
    seen: list[int] = []
    ob.add_listener(lambda: seen.append(ob.count()))
    ob.add_listener(lambda: 1 / 0)  # type: ignore[func-returns-value]
    assert ob.append(ev(1)) == 1 and ob.append(ev(2)) == 2
    assert seen == [1, 2]  # the row was counted (committed) when the listener ran


CHILD = """
import sys
from pathlib import Path
from edge.outbox import Outbox
ob = Outbox(Path(sys.argv[1]), flush_interval_s=3600)
for i in range(int(sys.argv[2])):
    seq = ob.append(Outbox.make_event("north-gate", "qr", f"t{i}", "granted", "ok"))
    sys.stdout.write(f"{seq}\\n")
    sys.stdout.flush()
"""


def test_every_reported_append_survives_kill_9(db: Path) -> None:
    Outbox(db).close()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db), "1000000"], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT
    )
    assert child.stdout is not None
    reported: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(reported) < 300 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            reported.append(int(line))
        child.send_signal(signal.SIGKILL)  # mid-way: it was still appending
        reported += [int(line) for line in child.stdout.read().split()]
    finally:
        child.kill()
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert len(reported) >= 300
    o = Outbox(db)
    on_disk = {s for s, _ in o.peek(0, limit=10**7)}
    assert set(reported) <= on_disk
    assert o.count() == len(on_disk) < 1_000_000
    assert o.append(ev(1)) > max(on_disk)
    o.close()


async def test_flusher_fsyncs_and_checkpoints(db: Path) -> None:
    o = Outbox(db, flush_interval_s=0.05)
    task = asyncio.create_task(o.run_flusher())
    try:
        n = _CHECKPOINT_FRAMES + 10
        for i in range(n):
            o.append(ev(i))
        # a checkpoint follows a successful fsync in the same flush: rows reach the main file
        copy = db.with_name("main-only.db")
        deadline = time.monotonic() + 30
        got = 0
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            shutil.copyfile(db, copy)  # the main file alone, without its -wal
            con = sqlite3.connect(copy)
            try:
                got = con.execute("SELECT count(*) FROM events").fetchone()[0]
            except sqlite3.DatabaseError:
                got = 0
            finally:
                con.close()
            if got == n:
                break
        assert got == n
        assert not task.done()  # the flusher keeps running
        o.append(ev(n))
        await asyncio.sleep(0.3)
        other = sqlite3.connect(db)  # another connection reads what was committed
        assert other.execute("SELECT count(*) FROM events").fetchone()[0] == n + 1
        other.close()
        assert not task.done()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        o.close()


async def test_wal_stays_bounded_under_a_steady_stream_of_appends(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A passive checkpoint never catches up with non-stop writes and SQLite only rewinds a WAL that
    was fully checkpointed; past the bound the flusher truncates it (bound lowered here to 1 MB)."""
    import edge.outbox as outbox_mod

    monkeypatch.setattr(outbox_mod, "_WAL_MAX", 1 << 20)
    box = Outbox(db, flush_interval_s=0.05)
    flusher = asyncio.create_task(box.run_flusher())
    wal = Path(f"{db}-wal")
    peak = 0
    try:
        for i in range(40_000):
            box.append(ev(i))
            if i % 200 == 0:
                await asyncio.sleep(0)
                peak = max(peak, wal.stat().st_size)
    finally:
        flusher.cancel()
    assert box.count() == 40_000
    assert peak < 64 << 20, peak  # without the truncation: ~160 MB (every commit a 4 KiB frame)
    assert creds(box.peek(39_998, 5)) == [ev(39_998).credential, ev(39_999).credential]
    box.close()
