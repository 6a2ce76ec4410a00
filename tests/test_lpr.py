"""Plate cameras end to end: real HTTP pushes in the three vendor dialects to the real `lpr` listener of
an in-process Gateway, decisions against plate whitelist entries, writes at a real pymodbus relay board,
event rows in the outbox on disk."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from edge.app import Gateway
from edge.config import load_config
from edge.sim.relay_board import RelayBoardSim
from edge.store import entry_from_wire
from tests.support import lpr_pushes as push
from tests.support.gateway import Signer, free_port, gateway_config
from tests.support.ptys import PtyPair
from tests.test_gateway_e2e import flash_writes, outbox_rows, wait_for

VZ, HIK, DH, TOL = "a1b2c3d4-e5f6a7b8", "44:19:B6:6D:24:85", "6J0A2B3C4D5E6", "tol-cam-01"
# A record the camera marks offline (or older than 60 s) is an `info` event: it opens nothing.
OFFLINE_RESULT = "info"


class Rig:
    def __init__(self, gw: Gateway, board: RelayBoardSim, data: Path, base: str, http: aiohttp.ClientSession):
        self.gw, self.board, self.data, self.base, self.http = gw, board, data, base, http

    async def post(self, path: str, body: bytes, ctype: str = "application/json") -> tuple[int, Any]:
        async with self.http.post(self.base + path, data=body, headers={"Content-Type": ctype}) as r:
            text = await r.text()
            try:
                return r.status, (await r.json(content_type=None)) if text[:1] in "{[" else text
            except ValueError:
                return r.status, text

    async def vz(self, doc: dict[str, Any]) -> tuple[int, Any]:
        return await self.post("/lpr/push", push.dumps(doc))

    def rows(self) -> list[dict[str, Any]]:
        return outbox_rows(self.data)

    def allow(self, *plates: str, zone: str = "north-gate") -> None:
        self.gw.store.import_entries(
            [
                entry_from_wire({"kind": "plate", "value": p, "subject": f"resident:{i}", "zones": [zone]})
                for i, p in enumerate(plates, 1)
            ]
        )


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    board_port, http_port = free_port(), free_port()
    board = RelayBoardSim(device_ids=[1])
    server = asyncio.create_task(board.serve_tcp("127.0.0.1", board_port))
    with PtyPair(tmp_path, "plate") as pty:
        cfg_path = gateway_config(
            tmp_path,
            signer=Signer(),
            bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": board_port, "timeout": 0.3, "retries": 0},
            readers={
                "lpr-in": {"type": "lpr", "serialno": VZ, "min_confidence": 80},
                "lpr-hik": {"type": "lpr", "serialno": HIK.lower().replace(":", "-")},  # spelling differs
                "lpr-dahua": {"type": "lpr", "serialno": DH},
                "lpr-tol": {"type": "lpr", "serialno": TOL, "tolerant": True},
                "plate-serial": {"type": "serial", "port": str(pty.b), "content": "plate"},
            },
            extra={"lpr": {"listen": f"127.0.0.1:{http_port}", "path": "/lpr/push"}},
        )
        await asyncio.sleep(0.2)
        gw = Gateway(load_config(cfg_path))
        fd = -1
        try:
            await gw.start()
            await wait_for(
                lambda: all(r.online for r in gw.readers.values()) and gw.devices["north-gate"].online
            )
            fd = os.open(pty.a, os.O_RDWR | os.O_NOCTTY)
            async with aiohttp.ClientSession() as http:
                rig = Rig(gw, board, tmp_path / "data", f"http://127.0.0.1:{http_port}", http)
                rig.fd = fd  # type: ignore[attr-defined]
                yield rig
        finally:
            if fd >= 0:
                os.close(fd)
            await gw.stop()
            server.cancel()
            await asyncio.gather(server, return_exceptions=True)


async def test_vzenith_grant_answers_ok_and_drives_the_door(rig: Rig) -> None:
    rig.allow("京A12345")
    status, body = await rig.vz(push.vzenith(VZ, "京A·12345", plateid=1024, image_bytes=3 * 1024 * 1024))
    assert (status, body) == (200, {"Response_AlarmInfoPlate": {"info": "ok", "plateid": 1024}})
    await wait_for(lambda: len(flash_writes(rig.board)) == 1)
    rows = rig.rows()
    assert [(r["result"], r["reason"], r["method"], r["reader"], r["device"]) for r in rows] == [
        ("granted", "ok", "plate", "lpr-in", "north-gate")
    ]
    assert rows[0]["credential"] == "京***45" and rows[0]["subject"] == "resident:1"


async def test_vzenith_denial_answers_no_and_opens_nothing(rig: Rig) -> None:
    rig.allow("京A12345")
    status, body = await rig.vz(push.vzenith(VZ, "沪B99999", plateid=7))
    assert (status, body) == (200, {"Response_AlarmInfoPlate": {"info": "no", "plateid": 7}})
    await wait_for(lambda: len(rig.rows()) == 1)
    assert rig.rows()[0]["reason"] == "unknown_credential"
    await asyncio.sleep(0.3)
    assert flash_writes(rig.board) == []


async def test_repushed_plateid_and_uuid_are_decided_once_and_answered_the_same(rig: Rig) -> None:
    rig.allow("京A12345", "粤BD12345")
    doc = push.vzenith(VZ, "京A12345", plateid=55)
    answers = [await rig.vz(doc) for _ in range(3)]
    assert answers == [(200, {"Response_AlarmInfoPlate": {"info": "ok", "plateid": 55}})] * 3
    denied = push.vzenith(VZ, "沪B99999", plateid=56)
    assert [await rig.vz(denied) for _ in range(2)] == [
        (200, {"Response_AlarmInfoPlate": {"info": "no", "plateid": 56}})
    ] * 2
    body, ctype = push.multipart(push.hik_xml(HIK, "粤BD12345", uuid="u-77"))
    assert [await rig.post("/lpr/push", body, ctype) for _ in range(3)] == [(200, "OK")] * 3
    await asyncio.sleep(0.3)
    assert [(r["reader"], r["reason"]) for r in rig.rows()] == [
        ("lpr-in", "ok"),
        ("lpr-in", "unknown_credential"),
        ("lpr-hik", "ok"),
    ]
    # the same plateid with another plate is a new read (a camera that restarted reuses its ids)
    assert (await rig.vz(push.vzenith(VZ, "沪C11111", plateid=55)))[1]["Response_AlarmInfoPlate"][
        "info"
    ] == "no"
    await wait_for(lambda: len(rig.rows()) == 4)


async def test_offline_and_old_records_open_nothing(rig: Rig) -> None:
    rig.allow("京A12345")
    old = datetime.now(push.CST) - timedelta(seconds=120)
    results = [
        await rig.vz(push.vzenith(VZ, "京A12345", plateid=1, offline=1)),
        await rig.vz(push.vzenith(VZ, "京A12345", plateid=2, sec=int(time.time()) - 120)),
        await rig.post(
            "/lpr/push", *push.multipart(push.hik_xml(HIK, "京A12345", uuid="h1", retrans="true"))
        ),
        await rig.post("/lpr/push", *push.multipart(push.hik_xml(HIK, "京A12345", uuid="h2", when=old))),
        await rig.post("/NotificationInfo/TollgateInfo", push.dumps(push.dahua(DH, "京A12345", when=old))),
    ]
    assert results == [
        (200, {"Response_AlarmInfoPlate": {"info": "no", "plateid": 1}}),
        (200, {"Response_AlarmInfoPlate": {"info": "no", "plateid": 2}}),
        (200, "OK"),
        (200, "OK"),
        (200, {"Result": True}),
    ]
    await wait_for(lambda: len(rig.rows()) == 5)
    assert {(r["result"], r["reason"]) for r in rig.rows()} == {(OFFLINE_RESULT, "expired")}
    await asyncio.sleep(0.3)
    assert flash_writes(rig.board) == []


async def test_low_confidence_is_denied_and_opens_nothing(rig: Rig) -> None:
    rig.allow("京A12345")
    assert await rig.vz(push.vzenith(VZ, "京A12345", conf=79, plateid=3)) == (
        200,
        {"Response_AlarmInfoPlate": {"info": "no", "plateid": 3}},
    )
    await wait_for(lambda: len(rig.rows()) == 1)
    assert (rig.rows()[0]["result"], rig.rows()[0]["reason"]) == ("denied", "low_confidence")
    await asyncio.sleep(0.3)
    assert flash_writes(rig.board) == []
    # exactly at the threshold is enough
    assert (await rig.vz(push.vzenith(VZ, "京A12345", conf=80, plateid=4)))[1]["Response_AlarmInfoPlate"][
        "info"
    ] == "ok"
    await wait_for(lambda: len(flash_writes(rig.board)) == 1)


async def test_hikvision_multipart_grant_drives_the_door(rig: Rig) -> None:
    rig.allow("粤BD12345")
    body, ctype = push.multipart(push.hik_xml(HIK, "蓝粤BD12345", uuid="u-1"), picture=os.urandom(200_000))
    assert await rig.post("/lpr/push", body, ctype) == (200, "OK")
    await wait_for(lambda: len(flash_writes(rig.board)) == 1)
    assert [(r["reader"], r["result"], r["credential"]) for r in rig.rows()] == [
        ("lpr-hik", "granted", "粤***45")
    ]
    # a heartbeat-type event from the same camera is answered and decides nothing
    hb, ctype = push.multipart(push.hik_xml(HIK, "x", event="videoloss"))
    assert await rig.post("/lpr/push", hb, ctype) == (200, "OK")
    assert len(rig.rows()) == 1


async def test_dahua_tollgate_and_keepalive(rig: Rig) -> None:
    rig.allow("京A12345")
    assert await rig.post("/NotificationInfo/KeepAlive", push.dumps({"DeviceID": DH})) == (
        200,
        {"Result": True},
    )
    assert await rig.post("/NotificationInfo/KeepAlive", b"") == (200, {"Result": True})
    doc = push.dumps(push.dahua(DH, "京A12345"))
    ok = await rig.post("/NotificationInfo/TollgateInfo", doc)
    assert ok == (200, {"Result": True})
    await wait_for(lambda: len(flash_writes(rig.board)) == 1)
    assert [(r["reader"], r["result"]) for r in rig.rows()] == [("lpr-dahua", "granted")]
    # the camera re-sends a record it thinks was lost (same AccurateTime and plate): answered the same,
    # decided and driven once
    assert [await rig.post("/NotificationInfo/TollgateInfo", doc) for _ in range(2)] == [ok] * 2
    later = push.dahua(DH, "京A12345", when=datetime.now(push.CST) + timedelta(seconds=1))
    assert await rig.post("/NotificationInfo/TollgateInfo", push.dumps(later)) == ok  # a new passage
    await wait_for(lambda: len(rig.rows()) == 2)
    await asyncio.sleep(0.3)
    assert [(r["reader"], r["result"]) for r in rig.rows()] == [("lpr-dahua", "granted")] * 2


def _malformed() -> list[tuple[str, str, bytes, str, int, str]]:
    """(name, path, body, content type, status, a word of the reason) for every kind of bad push."""
    j, vz, dh = push.dumps, push.vzenith, push.dahua
    pr = "AlarmInfoPlate"
    out: list[tuple[str, str, bytes, str, int, str]] = []

    def v(name: str, doc: Any, status: int, word: str) -> None:
        out.append(
            (name, "/lpr/push", doc if isinstance(doc, bytes) else j(doc), "application/json", status, word)
        )

    def drop(key: str) -> dict[str, Any]:
        doc = vz(VZ, "京A12345")
        del doc[pr]["result"]["PlateResult"][key]
        return doc

    v("vz bad json", b'{"AlarmInfoPlate": {', 400, "JSON")
    v("vz not an object", {pr: [1, 2]}, 400, "wrong type")
    v("vz no serialno", {pr: {"result": vz(VZ, "京A12345")[pr]["result"]}}, 400, "serialno")
    v("vz unknown serialno", vz("ffff0000-11112222", "京A12345"), 403, "unknown camera")
    v("vz no license", drop("license"), 400, "license")
    v("vz license int", vz(VZ, 12345), 400, "license")  # type: ignore[arg-type]
    v("vz no confidence", drop("confidence"), 400, "confidence")
    v("vz confidence text", vz(VZ, "京A12345", conf="high"), 400, "confidence")
    v("vz confidence 150", vz(VZ, "京A12345", conf=150), 400, "0..100")
    v("vz no plateid", drop("plateid"), 400, "plateid")
    v("vz plateid bool", vz(VZ, "京A12345", plateid=True), 400, "plateid")
    v("vz isoffline 2", vz(VZ, "京A12345", offline=2), 400, "isoffline")
    v("vz sec text", vz(VZ, "京A12345", sec="now"), 400, "sec")
    v("vz plate garbage", vz(VZ, "京A/12345"), 422, "plate")
    v("neither format", {"hello": 1}, 400, "neither")
    v("empty body", b"", 400, "neither")
    v("oversized", b'{"AlarmInfoPlate": "' + b"A" * (7 * 1024 * 1024) + b'"}', 413, "body over")
    x = push.hik_xml

    def h(name: str, xml: bytes | None, status: int, word: str, *, bare: bool = False) -> None:
        body, ctype = (xml or b"", "application/xml") if bare else push.multipart(xml)
        out.append((name, "/lpr/push", body, ctype, status, word))

    h("hik bad xml", b"<EventNotificationAlert><ANPR>", 400, "XML")
    h("hik no xml part", None, 400, "no XML part")
    h(
        "hik no mac",
        x(HIK, "京A12345").replace(f"<macAddress>{HIK}</macAddress>".encode(), b""),
        400,
        "macAddress",
    )
    h("hik unknown mac", x("00:11:22:33:44:55", "京A12345"), 403, "unknown camera")
    h(
        "hik no plate",
        x(HIK, "京A12345").replace("<licensePlate>京A12345</licensePlate>".encode(), b""),
        400,
        "licensePlate",
    )
    h("hik confidence text", x(HIK, "京A12345", conf="abc"), 400, "confidenceLevel")
    h("hik retrans word", x(HIK, "京A12345", retrans="maybe"), 400, "isDataRetransmission")
    h(
        "hik entity",
        b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e "x">]><EventNotificationAlert/>',
        400,
        "DOCTYPE",
        bare=True,
    )
    h("hik wrong root", b"<Other><eventType>ANPR</eventType></Other>", 400, "root", bare=True)
    for name, doc, status, word in [
        ("dh bad json", b"{nope", 400, "JSON"),
        (
            "dh no plate",
            {"Picture": {"SnapInfo": {"DeviceID": DH}, "Plate": {"Confidence": 90}}},
            400,
            "PlateNumber",
        ),
        ("dh plate int", dh(DH, 12345), 400, "PlateNumber"),
        (
            "dh no confidence",
            {"Picture": {"SnapInfo": {"DeviceID": DH}, "Plate": {"PlateNumber": "京A12345"}}},
            400,
            "Confidence",
        ),
        ("dh unknown device", dh("XXXX", "京A12345"), 403, "unknown camera"),
        ("dh timezone 99", dh(DH, "京A12345", tz=99), 400, "TimeZone"),
    ]:
        body = doc if isinstance(doc, bytes) else j(doc)
        out.append((name, "/NotificationInfo/TollgateInfo", body, "application/json", status, word))
    out.append(
        ("dh keepalive bad json", "/NotificationInfo/KeepAlive", b"{", "application/json", 400, "JSON")
    )
    out.append(
        (
            "dh keepalive unknown",
            "/NotificationInfo/KeepAlive",
            j({"DeviceID": "XXXX"}),
            "application/json",
            403,
            "unknown camera",
        )
    )
    return out


async def test_every_malformed_push_gets_a_4xx_with_a_reason_and_decides_nothing(rig: Rig) -> None:
    rig.allow("京A12345")
    got = []
    with capture_logs() as logs:
        for name, path, body, ctype, _status, word in _malformed():
            code, answer = await rig.post(path, body, ctype)
            reason = answer.get("error", "") if isinstance(answer, dict) else ""
            got.append((name, code, word in reason))
    assert got == [(m[0], m[4], True) for m in _malformed()]
    refused = [e for e in logs if e["event"] == "lpr_push_refused"]  # each one logged, with its reason
    assert [(e["log_level"], e["status"], e["path"]) for e in refused] == [
        ("warning", m[4], m[1]) for m in _malformed()
    ]
    assert all(m[5] in e["reason"] for e, m in zip(refused, _malformed(), strict=True))
    async with rig.http.get(rig.base + "/lpr/push") as r:
        assert r.status == 405
    await asyncio.sleep(0.3)
    assert rig.rows() == [] and flash_writes(rig.board) == []
    # and the listener still decides afterwards
    assert (await rig.vz(push.vzenith(VZ, "京A12345", plateid=900)))[1]["Response_AlarmInfoPlate"][
        "info"
    ] == "ok"
    await wait_for(lambda: len(flash_writes(rig.board)) == 1)


async def test_tolerant_camera_accepts_one_confusable_only_when_unambiguous(rig: Rig) -> None:
    rig.allow("京A12345", "京B00001", "京B0D001")

    async def read(serial: str, plate: str, pid: int) -> str:
        status, body = await rig.vz(push.vzenith(serial, plate, plateid=pid))
        assert status == 200
        return str(body["Response_AlarmInfoPlate"]["info"])

    assert await read(TOL, "京AI2345", 1) == "ok"  # I read for 1: one candidate
    assert await read(TOL, "京B0Q001", 2) == "no"  # Q for 0 or for D: two candidates
    assert await read(TOL, "京A1Z3S5", 3) == "no"  # two substitutions
    assert await read(VZ, "京AI2345", 4) == "no"  # the same misread at a camera that is not tolerant
    await wait_for(lambda: len(rig.rows()) == 4)
    assert [(r["reader"], r["reason"], r["subject"]) for r in rig.rows()] == [
        ("lpr-tol", "ok", "resident:1"),
        ("lpr-tol", "unknown_credential", None),
        ("lpr-tol", "unknown_credential", None),
        ("lpr-in", "unknown_credential", None),
    ]
    await wait_for(lambda: len(flash_writes(rig.board)) == 1)


async def test_serial_plate_lines_are_plates(rig: Rig) -> None:
    rig.allow("京AD12345")
    fd: int = rig.fd  # type: ignore[attr-defined]
    os.write(fd, "京ａｄ-123 45\r".encode())
    os.write(fd, b"\x00\x01garbage\r")
    await wait_for(lambda: len(rig.rows()) == 2)
    assert [(r["reader"], r["method"], r["result"], r["reason"]) for r in rig.rows()] == [
        ("plate-serial", "plate", "granted", "ok"),
        ("plate-serial", "plate", "denied", "malformed"),
    ]
    await wait_for(lambda: len(flash_writes(rig.board)) == 1)


async def test_a_port_in_use_leaves_the_cameras_offline_and_the_gateway_up(tmp_path: Path) -> None:
    import socket

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    with contextlib.closing(busy):
        cfg_path = gateway_config(
            tmp_path,
            signer=Signer(),
            bus={
                "type": "modbus_tcp",
                "host": "127.0.0.1",
                "port": free_port(),
                "timeout": 0.1,
                "retries": 0,
            },
            readers={"lpr-in": {"type": "lpr", "serialno": VZ}},
            extra={"lpr": {"listen": f"127.0.0.1:{port}"}},
        )
        gw = Gateway(load_config(cfg_path))
        await gw.start()
        try:
            health = gw.device_health()["lpr-in"]
            assert health["online"] is False and "cannot listen" in str(health["error"])
        finally:
            await gw.stop()


async def test_a_plate_camera_is_never_rate_limited(rig: Rig) -> None:
    """Past `rate_limit.denials` (10 by default) unknown cars, a serial reader would be cooled down; a
    plate camera is exempt (a queue of visitors is not a brute force), so the next resident gets in."""
    rig.allow("京A12345")
    for i in range(14):
        assert await rig.vz(push.vzenith(VZ, f"沪B{10000 + i}", plateid=900 + i)) == (
            200, {"Response_AlarmInfoPlate": {"info": "no", "plateid": 900 + i}})  # fmt: skip
    assert await rig.vz(push.vzenith(VZ, "京A12345", plateid=999)) == (
        200, {"Response_AlarmInfoPlate": {"info": "ok", "plateid": 999}})  # fmt: skip
    await wait_for(lambda: len(flash_writes(rig.board)) == 1)
    assert {r["reason"] for r in rig.rows()} == {"unknown_credential", "ok"}


async def test_a_plate_push_lifts_a_barrier_wired_to_the_camera(tmp_path: Path) -> None:
    """The camera's reader on a barrier (not a door): a grant pulses the barrier's open relay, a denial
    writes nothing, the event carries the barrier's direction."""
    board_port, http_port = free_port(), free_port()
    board = RelayBoardSim(device_ids=[1, 2])
    server = asyncio.create_task(board.serve_tcp("127.0.0.1", board_port))
    cfg_path = gateway_config(
        tmp_path,
        signer=Signer(),
        bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": board_port, "timeout": 0.3, "retries": 0},
        readers={"lpr-gate": {"type": "lpr", "serialno": VZ}},
        door={"readers": []},
        extra={
            "lpr": {"listen": f"127.0.0.1:{http_port}", "path": "/lpr/push"},
            "barriers": {"car-in": {"bus": "b1", "device_id": 2, "zone": "car-north", "direction": "in",
                                    "open_coil": 0, "close_coil": 1, "pulse_ms": 300, "loop_input": 0,
                                    "readers": ["lpr-gate"]}},
        },
    )
    gw = Gateway(load_config(cfg_path))
    try:
        await gw.start()
        await wait_for(lambda: gw.readers["lpr-gate"].online and gw.devices["car-in"].online)
        gw.store.import_entries([entry_from_wire(
            {"kind": "plate", "value": "京A12345", "subject": "resident:1", "zones": ["car-north"]})])  # fmt: skip
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{http_port}/lpr/push"
            for plate, pid in (("沪B99999", 1), ("京A12345", 2)):
                async with http.post(url, data=push.dumps(push.vzenith(VZ, plate, plateid=pid))) as r:
                    assert r.status == 200
        await wait_for(lambda: any(w.device_id == 2 and w.address == 0 and w.on for w in board.writes))
        assert [w.address for w in board.writes if w.device_id == 2 and w.on] == [0]  # open only
        rows = outbox_rows(tmp_path / "data")
        assert [(r["device"], r["reason"], r.get("direction")) for r in rows] == [
            ("car-in", "unknown_credential", "in"),
            ("car-in", "ok", "in"),
        ]
    finally:
        await gw.stop()
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
