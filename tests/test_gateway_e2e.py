"""The whole flow with real parts: a pty scanner line -> decision -> Modbus write seen by a pymodbus
relay board -> event row in the outbox on disk."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
from pathlib import Path

import pytest

from edge.app import Gateway
from edge.config import load_config
from edge.sim.relay_board import RelayBoardSim
from tests.support.gateway import Signer, free_port, gateway_config
from tests.support.ptys import PtyPair


def outbox_rows(data_dir: Path) -> list[dict[str, object]]:
    con = sqlite3.connect(data_dir / "outbox.db")
    try:
        rows = con.execute("SELECT body FROM events ORDER BY seq").fetchall()
    finally:
        con.close()
    return [json.loads(r[0]) for r in rows]


async def wait_for(pred, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


@pytest.fixture
async def rig(tmp_path: Path):  # type: ignore[no-untyped-def]
    signer = Signer()
    port = free_port()
    board = RelayBoardSim(device_ids=[1])
    server = asyncio.create_task(board.serve_tcp("127.0.0.1", port))
    with contextlib.ExitStack() as stack:
        scanner = stack.enter_context(PtyPair(tmp_path, "qr"))
        cards = stack.enter_context(PtyPair(tmp_path, "card"))
        cfg_path = gateway_config(
            tmp_path,
            signer=signer,
            bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": port, "timeout": 0.3, "retries": 0},
            readers={
                "qr-north": {"type": "serial", "port": str(scanner.b), "content": "qr"},
                "card-north": {"type": "serial", "port": str(cards.b), "content": "card"},
            },
        )
        await asyncio.sleep(0.2)
        gw = Gateway(load_config(cfg_path))
        try:
            await gw.start()
            await wait_for(lambda: all(r.online for r in gw.readers.values()) and gw.devices["north-gate"].online)
            fds = {
                "qr": os.open(scanner.a, os.O_RDWR | os.O_NOCTTY),
                "card": os.open(cards.a, os.O_RDWR | os.O_NOCTTY),
            }
            for fd in fds.values():
                stack.callback(os.close, fd)
            yield gw, board, signer, fds, tmp_path / "data"
        finally:
            await gw.stop()
            server.cancel()
            await asyncio.gather(server, return_exceptions=True)


def flash_writes(board: RelayBoardSim) -> list[object]:
    return [w for w in board.writes if w.address == 0x0200]


async def test_valid_code_opens_the_door_and_is_logged(rig) -> None:  # type: ignore[no-untyped-def]
    gw, board, signer, fds, data = rig
    os.write(fds["qr"], signer.code("t-open-1", uses=1).encode() + b"\r")
    await wait_for(lambda: len(flash_writes(board)) == 1)
    w = flash_writes(board)[0]
    assert (w.device_id, w.value) == (1, 3)  # 300 ms in 100 ms units
    rows = outbox_rows(data)
    assert [(r["result"], r["reason"], r["credential"], r["subject"]) for r in rows] == [
        ("granted", "ok", "t-open-1", "visitor:1")
    ]
    assert rows[0]["method"] == "qr" and rows[0]["reader"] == "qr-north" and rows[0]["device"] == "north-gate"
    assert isinstance(rows[0]["latency_ms"], float)
    # single-use code: the second presentation is refused and nothing is written
    os.write(fds["qr"], signer.code("t-open-1", uses=1).encode() + b"\r")
    await wait_for(lambda: len(outbox_rows(data)) == 2)
    assert outbox_rows(data)[1]["reason"] == "uses_exhausted"
    await asyncio.sleep(0.3)
    assert len(flash_writes(board)) == 1


async def test_bad_codes_and_garbage_are_refused_with_reasons(rig) -> None:  # type: ignore[no-untyped-def]
    gw, board, signer, fds, data = rig
    other = Signer()  # a key the gateway does not trust, same kid
    os.write(fds["qr"], other.code("t-forged").encode() + b"\r")
    os.write(fds["qr"], signer.code("t-south", zones=["south-gate"]).encode() + b"\r")
    os.write(fds["qr"], b"\x00\x01\xff\xfe garbage\r")
    os.write(fds["qr"], b"hello\r")
    await wait_for(lambda: len(outbox_rows(data)) == 4)
    assert [r["reason"] for r in outbox_rows(data)] == [
        "bad_signature",
        "zone_denied",
        "malformed",
        "malformed",
    ]
    # still deciding after all that
    os.write(fds["qr"], signer.code("t-after").encode() + b"\r")
    await wait_for(lambda: len(flash_writes(board)) == 1)
    assert board.writes and all(w.address == 0x0200 for w in flash_writes(board))


async def test_cards_against_the_whitelist(rig) -> None:  # type: ignore[no-untyped-def]
    from edge.store import entry_from_wire

    gw, board, signer, fds, data = rig
    gw.store.import_entries(
        [
            entry_from_wire(
                {"kind": "card", "value": "04A1B2C3", "subject": "resident:1042", "zones": ["north-gate"]}
            ),
            entry_from_wire(
                {
                    "kind": "card",
                    "value": "0BADCAFE",
                    "subject": "resident:9",
                    "zones": ["north-gate"],
                    "blocked": True,
                }
            ),
        ]
    )
    for line in (b"04a1b2c3\r", b"0BADCAFE\n", b"DEADBEEF\r\n", b"XYZ\r"):
        os.write(fds["card"], line)
    await wait_for(lambda: len(outbox_rows(data)) == 4)
    rows = outbox_rows(data)
    assert [(r["result"], r["reason"]) for r in rows] == [
        ("granted", "ok"),
        ("denied", "blocked"),
        ("denied", "unknown_credential"),
        ("denied", "malformed"),
    ]
    assert rows[0]["subject"] == "resident:1042" and rows[0]["method"] == "nfc"
    assert "04A1B2C3" not in json.dumps(rows)  # card numbers are masked in events
    await wait_for(lambda: len(flash_writes(board)) == 1)


async def test_remote_open_and_hold_open_through_gate_control(rig) -> None:  # type: ignore[no-untyped-def]
    gw, board, signer, fds, data = rig
    assert await gw.act("north-gate", "open", {"by": "guard"}) is None
    await wait_for(lambda: len(flash_writes(board)) == 1)
    assert await gw.act("nowhere", "open", {}) == "unknown_target"
    assert await gw.act("north-gate", "hold_open", {}) is None
    await wait_for(lambda: board.coil(1, 0))
    assert await gw.act("north-gate", "normal", {}) is None
    await wait_for(lambda: not board.coil(1, 0))


async def test_stop_switches_the_lock_off(rig) -> None:  # type: ignore[no-untyped-def]
    gw, board, signer, fds, data = rig
    await gw.act("north-gate", "hold_open", {})
    await wait_for(lambda: board.coil(1, 0))
    await gw.stop()
    assert not board.coil(1, 0)


async def test_outbox_failure_does_not_stop_the_gate(rig) -> None:  # type: ignore[no-untyped-def]
    """A failing disk (here: the outbox connection gone) must not stop decisions or the door."""
    gw, board, signer, fds, data = rig
    gw.outbox._con.close()  # every append now raises sqlite3.ProgrammingError
    os.write(fds["qr"], signer.code("t-disk-gone").encode() + b"\r")
    await wait_for(lambda: len(flash_writes(board)) == 1)
    await asyncio.sleep(0.1)  # past a tenth of the pulse: the next grant re-flashes (drivers/door.py)
    os.write(fds["qr"], b"hello\r")  # and the reader is still alive afterwards
    os.write(fds["qr"], signer.code("t-disk-gone-2").encode() + b"\r")
    await wait_for(lambda: len(flash_writes(board)) == 2)
