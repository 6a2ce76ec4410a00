"""Scanner noise against real parts (issue 6): socat pty readers, a pymodbus relay board, the outbox on
disk with ``outbox.max_events: 1000``. Garbage lines must not push real decisions out of the outbox,
and every rejected line is accounted for (an individual event or a count in a summary)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from edge.app import Gateway
from edge.config import load_config
from edge.model import Entry, Method
from edge.outbox import Outbox
from edge.reject_summary import RejectSummariser
from edge.sim.relay_board import RelayBoardSim
from tests.support.gateway import Signer, free_port, gateway_config
from tests.support.modbus import eventually
from tests.support.ptys import PtyPair

NOISE = 5000
QR_NOISE = b"\x00\x01\xff\xfe line noise\r"  # control bytes: rejected by the reader
CARD_NOISE = b"ZZ-not-a-card\r"  # not hex: rejected by the reader


Rig = tuple[Gateway, RelayBoardSim, Signer, dict[str, int], Path]


def rows_on_disk(data_dir: Path) -> list[dict[str, Any]]:
    con = sqlite3.connect(data_dir / "outbox.db")
    try:
        return [json.loads(b) for (b,) in con.execute("SELECT body FROM events ORDER BY seq")]
    finally:
        con.close()


def write_all(fd: int, data: bytes) -> None:
    """Blocking writes, in a worker thread: the gateway reads on this test's loop."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view[:4096])
        view = view[n:]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    signer = Signer()
    port = free_port()
    board = RelayBoardSim(device_ids=[1])
    server = asyncio.create_task(board.serve_tcp("127.0.0.1", port))
    with contextlib.ExitStack() as stack:
        qr = stack.enter_context(PtyPair(tmp_path, "qr"))
        card = stack.enter_context(PtyPair(tmp_path, "card"))
        cfg_path = gateway_config(
            tmp_path,
            signer=signer,
            bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": port, "timeout": 0.5, "retries": 1},
            readers={
                "qr-north": {"type": "serial", "port": str(qr.b), "content": "qr"},
                "card-north": {"type": "serial", "port": str(card.b), "content": "card"},
            },
            extra={"outbox": {"max_events": 1000}},
        )
        await asyncio.sleep(0.2)
        gw = Gateway(load_config(cfg_path))
        try:
            gw.store.import_entries(
                Entry("card", f"C0DE{i:04X}", f"resident:{i}", ("north-gate",)) for i in range(20)
            )
            await gw.start()
            assert await eventually(
                lambda: all(r.online for r in gw.readers.values()) and gw.devices["north-gate"].online
            )
            fds = {
                "qr-north": os.open(qr.a, os.O_RDWR | os.O_NOCTTY),
                "card-north": os.open(card.a, os.O_RDWR | os.O_NOCTTY),
            }
            for fd in fds.values():
                stack.callback(os.close, fd)
            yield gw, board, signer, fds, tmp_path / "data"
        finally:
            await gw.stop()
            server.cancel()
            await asyncio.gather(server, return_exceptions=True)


def granted(data: Path) -> set[str]:
    """Subjects of the grants on disk (each grant below has its own subject)."""
    return {r["subject"] for r in rows_on_disk(data) if r["result"] == "granted"}


async def test_noise_does_not_evict_grants_and_every_reject_is_counted(rig: Rig) -> None:
    gw, board, signer, fds, data = rig
    for i in range(10):  # 20 real grants: 10 codes, 10 listed cards
        os.write(fds["qr-north"], signer.code(f"t-real-{i}", sub=f"visitor:{i}").encode() + b"\r")
        os.write(fds["card-north"], f"C0DE{i:04X}\r".encode())
        assert await eventually(lambda i=i: {f"visitor:{i}", f"resident:{i}"} <= granted(data))
    assert await eventually(lambda: any(w.address == 0x0200 for w in board.writes))  # the door was driven
    sent = {"qr-north": NOISE // 2, "card-north": NOISE - NOISE // 2}
    await asyncio.gather(
        asyncio.to_thread(write_all, fds["qr-north"], QR_NOISE * sent["qr-north"]),
        asyncio.to_thread(write_all, fds["card-north"], CARD_NOISE * sent["card-north"]),
    )
    # One more grant on each reader: lines are handled in order, so once it is on disk all noise is in.
    os.write(fds["qr-north"], signer.code("t-after", sub="visitor:after").encode() + b"\r")
    os.write(fds["card-north"], b"C0DE0013\r")
    assert await eventually(lambda: {"visitor:after", "resident:19"} <= granted(data), timeout=60)
    await gw.stop()  # flushes the per-reader summaries into the outbox

    rows = rows_on_disk(data)
    grants = sorted(r["credential"] for r in rows if r["result"] == "granted" and r["method"] == "qr")
    assert grants == sorted([f"t-real-{i}" for i in range(10)] + ["t-after"])
    cards = [r["subject"] for r in rows if r["result"] == "granted" and r["method"] == "nfc"]
    assert cards == [f"resident:{i}" for i in (*range(10), 19)]
    assert len(rows) <= 1000
    for reader, n in sent.items():
        singles = [r for r in rows if r["reader"] == reader and r["result"] == "denied"]
        summaries = [r for r in rows if r["reader"] == reader and r["result"] == "info"]
        assert singles and summaries, reader
        assert {r["reason"] for r in singles + summaries} == {"malformed"}
        assert len(singles) + sum(int(r["credential"]) for r in summaries) == n, reader
    assert len(rows) < 100  # ~5,000 lines became a handful of events


async def test_text_that_is_no_token_is_noise_too(rig: Rig) -> None:
    """Printable garbage on a QR scanner (a misconfigured scanner, a bad code) is summarised as well."""
    gw, board, signer, fds, data = rig
    for i in range(20):
        os.write(fds["qr-north"], signer.code(f"t-real-{i}", sub=f"visitor:{i}").encode() + b"\r")
    assert await eventually(lambda: len(granted(data)) == 20)
    await asyncio.to_thread(write_all, fds["qr-north"], b"hello world\r" * NOISE)
    os.write(fds["qr-north"], signer.code("t-after", sub="visitor:after").encode() + b"\r")
    assert await eventually(lambda: "visitor:after" in granted(data), timeout=60)
    await gw.stop()
    rows = rows_on_disk(data)
    assert len(granted(data)) == 21
    noise = [r for r in rows if r["reason"] == "malformed"]
    counted = sum(1 if r["result"] == "denied" else int(r["credential"]) for r in noise)
    assert counted == NOISE
    assert len(rows) < 50


# --- the summariser alone, with made-up clock values ---------------------------------------------

WHERE: dict[str, tuple[str, Method]] = {"qr-north": ("north-gate", "qr"), "card-north": ("north-gate", "nfc")}


def test_first_rejects_are_events_the_rest_one_summary_per_reason_and_window() -> None:
    s = RejectSummariser(WHERE, limit=3, interval_s=60.0)
    with capture_logs() as logs:
        singles = [s.reject("qr-north", "malformed", "control byte", 100.0 + i * 0.001) for i in range(1000)]
        singles += [s.reject("qr-north", "too_long", "line over", 110.0) for _ in range(7)]
        assert s.due(159.9) == []  # the window is still open
        summaries = s.due(160.0)
    events = [e for e in singles if e is not None]
    assert [(e.result, e.reason, e.reader, e.device, e.method, e.credential) for e in events] == [
        ("denied", "malformed", "qr-north", "north-gate", "qr", "")
    ] * 3
    assert [(e.result, e.reason, e.credential, e.reader, e.method) for e in summaries] == [
        ("info", "malformed", "997", "qr-north", "qr"),
        ("info", "too_long", "7", "qr-north", "qr"),
    ]
    assert len(logs) == 4  # three individual lines and one summary line, not two per reject
    assert logs[-1]["suppressed"] == {"malformed": 997, "too_long": 7} and logs[-1]["individual"] == 3
    assert s.due(1000.0) == [] and s.flush() == []  # nothing counted twice


def test_windows_are_per_reader_and_a_late_reject_closes_the_old_one() -> None:
    s = RejectSummariser(WHERE, limit=2, interval_s=10.0)
    out = [s.reject("card-north", "malformed", "", t) for t in (0.0, 1.0, 2.0, 3.0)]
    out += [s.reject("qr-north", "malformed", "", 5.0)]
    assert [e is not None for e in out] == [True, True, False, False, True]
    late = s.reject("card-north", "malformed", "", 12.0)  # a new window: an event again
    assert late is not None
    ended = s.due(12.5)  # card-north's first window ended (qr-north's has nothing left out)
    assert [(e.reader, e.credential) for e in ended] == [("card-north", "2")]
    for t in (13.0, 14.0, 15.0):
        s.reject("card-north", "malformed", "", t)
    assert [(e.reader, e.credential) for e in s.flush()] == [("card-north", "2")]  # shutdown: open window


def test_reject_events_are_evicted_before_decisions_in_a_real_outbox(tmp_path: Path) -> None:
    s = RejectSummariser(WHERE, limit=1000, interval_s=60.0)
    box = Outbox(tmp_path / "outbox.db", max_events=100)
    try:
        for i in range(20):
            box.append(Outbox.make_event("north-gate", "qr", f"t-{i}", "granted", "ok", reader="qr-north"))
        for i in range(500):
            event = s.reject("qr-north", "malformed", "", float(i))
            assert event is not None
            box.append(event)
        for event in s.flush():  # nothing left out: no summary
            box.append(event)
        bodies = [json.loads(b) for _, b in box.peek(0, 1000)]
        assert [b["credential"] for b in bodies if b["result"] == "granted"] == [f"t-{i}" for i in range(20)]
        assert box.count() == 100
    finally:
        box.close()
