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
from edge.outbox import _CHECKPOINT_FRAMES, REJECT, Outbox

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
    assert o.count() == 10 and o.append(ev(11)) > new  # overflowed again: the notice and 1 more dropped
    notes = [json.loads(b) for _, b in o.peek(0) if json.loads(b)["reason"] == "outbox_overflow"]
    assert [n["credential"] for n in notes] == ["3"]  # one notice, carrying the earlier count
    assert o.count() == 10
    o.close()


def noise(i: int) -> Event:
    """A rejected scanner line, marked as such (the gateway marks its reader rejects the same way)."""
    return Outbox.make_event("north-gate", "qr", "", "denied", "malformed", reader="qr-1", ts=i, prio=REJECT)


def info(i: int) -> Event:
    return Outbox.make_event("north-gate", "qr", str(i), "info", "malformed", reader="qr-1", ts=i)


def kinds(ob: Outbox) -> list[str]:
    """Each row on disk as g (granted), r (rejected line), i (info), n (overflow notice)."""
    out = []
    for _, body in ob.peek(0, 10**6):
        e = json.loads(body)
        kind = {"granted": "g", "denied": "r"}.get(e["result"], "i")
        out.append("n" if e["reason"] == "outbox_overflow" else kind)
    return out


def notice_total(ob: Outbox) -> int:
    return sum(int(json.loads(b)["credential"]) for _, b in ob.peek(0, 10**6) if "outbox_overflow" in b)


def test_overflow_evicts_info_then_rejects_and_decisions_last(db: Path) -> None:
    o = Outbox(db, max_events=100)  # evicts 2 at a time
    for i in range(20):
        o.append(ev(i))
    for i in range(40):
        o.append(noise(i))
    for i in range(30):
        o.append(info(i))
    for i in range(20, 30):
        o.append(ev(i))
    assert o.count() == 100
    appended = 30
    while "i" in kinds(o):  # every new decision pushes out info events, oldest first, never a decision
        o.append(ev(appended))
        appended += 1
        assert kinds(o).count("g") == appended and kinds(o).count("r") == 40
        assert o.count() == 100
    while "r" in kinds(o):  # then the rejected lines
        o.append(ev(appended))
        appended += 1
        assert kinds(o).count("g") == appended
    assert kinds(o).count("n") == 1 and notice_total(o) == 70  # one notice: 30 info + 40 rejects dropped
    o.append(ev(appended))  # only now the oldest decision goes
    creds_left = [c for c in creds(o.peek(0, 10**6)) if c.startswith("****")]
    assert creds_left == [f"****{i:04X}" for i in range(1, appended + 1)]
    assert o.count() == 100 and notice_total(o) == 71
    o.close()


def test_a_low_event_never_displaces_a_higher_one(db: Path) -> None:
    """A box full of decisions: info events and rejected lines arriving are the ones dropped (counted in the
    one notice), whatever their number: the notice takes one slot, once."""
    o = Outbox(db, max_events=10)
    for i in range(10):
        o.append(ev(i))
    for i in range(50):
        o.append(info(i) if i % 2 else noise(i))
    assert kinds(o) == ["g"] * 9 + ["n"]
    assert notice_total(o) == 51  # the oldest decision (to make room for the notice) and the 50 dropped
    assert creds(o.peek(0))[:9] == [f"****{i:04X}" for i in range(1, 10)]
    o.append(noise(99))  # still full of decisions: dropped, counted
    assert o.count() == 10 and notice_total(o) == 52
    o.close()


def test_repeated_overflow_keeps_one_notice_with_the_running_count(db: Path) -> None:
    o = Outbox(db, max_events=10)
    for i in range(1000):
        o.append(ev(i))
        assert kinds(o).count("n") <= 1 and o.count() <= 10
    assert kinds(o) == ["g"] * 8 + ["n", "g"]
    assert notice_total(o) + kinds(o).count("g") == 1000  # every decision is on disk or counted
    o.close()


def test_eviction_in_the_middle_keeps_seq_and_cursor_semantics(db: Path) -> None:
    """Evicted rows may sit between kept ones: a reader's seq cursor and the high-water mark still hold."""
    o = Outbox(db, max_events=10)
    seqs = [o.append(ev(0)), o.append(noise(1)), o.append(ev(2)), o.append(noise(3)), o.append(ev(4))]
    seqs += [o.append(ev(i)) for i in range(5, 10)]
    cursor = seqs[2]  # a drainer sent rows up to here
    last = o.append(ev(10))  # evicts the two rejects, one below the cursor and one above
    assert [s for s, _ in o.peek(cursor)] == [*seqs[4:], last - 1, last]
    assert o.delete((seqs[0], seqs[2])) == 2  # the acknowledged range: the evicted row is simply not there
    assert o.count() == 8
    o.close()
    o = Outbox(db, max_events=10)
    assert o.append(ev(11)) == last + 1  # seqs neither reused nor jumping
    o.close()
    con = sqlite3.connect(db)
    (hi,) = con.execute("SELECT v FROM meta WHERE k = 'deleted_hi'").fetchone()
    con.close()
    assert hi >= seqs[3]


def test_an_outbox_file_from_before_the_classes_is_migrated(db: Path) -> None:
    """Rows written before the class column count as decisions (the safe reading); seqs carry on."""
    con = sqlite3.connect(db)
    con.executescript(
        "CREATE TABLE events(seq INTEGER PRIMARY KEY, body TEXT NOT NULL);"
        "CREATE TABLE meta(k TEXT PRIMARY KEY, v INTEGER NOT NULL) WITHOUT ROWID;"
        "INSERT INTO meta VALUES ('deleted_hi', 3);"
    )
    from edge.outbox import event_json

    old = [noise(4), ev(5), noise(6), ev(7)]
    con.executemany("INSERT INTO events VALUES (?, ?)", [(i + 4, event_json(e)) for i, e in enumerate(old)])
    con.commit()
    con.close()
    o = Outbox(db, max_events=10)
    assert o.count() == 4 and o.append(info(8)) == 8
    o.append(noise(9))
    for i in range(10, 14):
        o.append(ev(i))
    assert o.count() == 10
    o.append(ev(14))  # the new info and rejected line go, not the old rows (decisions, whatever they say)
    assert kinds(o) == ["r", "g", "r", "g"] + ["g"] * 4 + ["n", "g"]
    o.close()
    o = Outbox(db, max_events=10)  # opening a migrated file again changes nothing
    assert o.count() == 10 and o.append(ev(16)) == 17
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
