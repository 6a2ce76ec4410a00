"""NFC reader (`type: nfc`) with real parts: nfcpy's udp driver on both ends (the reader under test and a
card emulator thread from edge/sim/nfc_card.py), the in-process Gateway, a pymodbus relay board and
the outbox on disk."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ndef
import nfc.clf.device
import pytest

from drivers.nfc import NfcConfig, NfcReader
from drivers.nfc_tags import token_from_records, token_from_uri
from edge.app import Gateway
from edge.config import load_config
from edge.sim.nfc_card import CardEmulator, ClassicCard, FelicaCard, Type2Card, ndef_text, ndef_uri
from edge.sim.relay_board import RelayBoardSim
from edge.store_codec import entry_from_wire
from tests.support.gateway import Signer, gateway_config
from tests.support.modbus import eventually, free_port, tcp_board
from tests.test_gateway_e2e import outbox_rows

SEVEN_BYTE = "04A1B2C3D4E5F6"  # an NTAG/Ultralight-style UID (cascade level 2)
CLASSIC = "A1B2C3D4"  # the community "IC card": MIFARE Classic 1K, 4-byte UID
UNKNOWN_IDM = "0114B1C2D3E4F506"
REST_S = 4.0  # a card left on the reader this long spans several sense cycles (and presence checks)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Rig:
    gw: Gateway
    board: RelayBoardSim
    signer: Signer
    data: Path
    field: int  # the udp port the reader polls: a card emulator placed on it lies on the reader

    @property
    def reader(self) -> NfcReader:
        r = self.gw.readers["nfc-north"]
        assert isinstance(r, NfcReader)
        return r

    def rows(self) -> list[dict[str, Any]]:
        return outbox_rows(self.data)

    def decisions(self) -> list[tuple[object, object]]:
        return [(r["result"], r["reason"]) for r in self.rows() if r["reader"] == "nfc-north"]

    def flashes(self) -> list[object]:
        return [w for w in self.board.writes if w.address == 0x0200]

    async def tap(self, card: CardEmulator, decisions: int) -> None:
        """Place ``card``, wait for the reader to reach ``decisions`` rows, leave it resting, lift it
        and wait until the reader has seen the field empty."""
        card.place()
        try:
            assert await eventually(lambda: len(self.decisions()) >= decisions, timeout=15)
            await asyncio.sleep(REST_S)
        finally:
            card.lift()
        assert await eventually(lambda: not self.reader.card_present, timeout=15)
        assert card.errors == []


@pytest.fixture
async def rig(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    reader_cfg: dict[str, Any] = getattr(request, "param", {})
    signer = Signer()
    board = RelayBoardSim(device_ids=[1])
    port, field = free_port(), free_udp_port()
    reader = {"type": "nfc", "device": f"udp:127.0.0.1:{field}", "ndef_tokens": True, **reader_cfg}
    cfg_path = gateway_config(
        tmp_path,
        signer=signer,
        bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": port, "timeout": 0.3, "retries": 0},
        readers={"nfc-north": reader},
    )
    async with tcp_board(board, port):
        gw = Gateway(load_config(cfg_path))
        await gw.start()
        rig = Rig(gw, board, signer, tmp_path / "data", field)
        gw.store.import_entries([
            entry_from_wire({"kind": "card", "value": v, "subject": s, "zones": ["north-gate"]})
            for v, s in ((SEVEN_BYTE, "resident:7"), (CLASSIC, "resident:1042"))
        ])  # fmt: skip
        thread = rig.reader._thread
        try:
            assert await eventually(lambda: gw.devices["north-gate"].online)
            yield rig
        finally:
            await gw.stop()
        assert thread is not None and not thread.is_alive()  # stop ended the nfcpy thread


async def test_seven_byte_type2_card_is_granted_once_while_resting(rig: Rig) -> None:
    await rig.tap(Type2Card(rig.field, uid=SEVEN_BYTE), 1)
    rows = [r for r in rig.rows() if r["reader"] == "nfc-north"]
    assert [(r["result"], r["reason"], r["subject"], r["method"]) for r in rows] == [
        ("granted", "ok", "resident:7", "nfc")
    ]
    assert rows[0]["credential"] == "****E5F6" and rows[0]["device"] == "north-gate"
    assert await eventually(lambda: len(rig.flashes()) == 1)
    assert (rig.flashes()[0].device_id, rig.flashes()[0].value) == (1, 3)  # 300 ms pulse


async def test_unknown_felica_idm_is_denied_once(rig: Rig) -> None:
    await rig.tap(FelicaCard(rig.field, idm=UNKNOWN_IDM), 1)
    assert rig.decisions() == [("denied", "unknown_credential")]
    assert rig.rows()[-1]["credential"] == "****F506"
    assert rig.flashes() == []


@pytest.mark.parametrize("rig", [{"ndef_tokens": True}, {"ndef_tokens": False}], indirect=True)
async def test_mifare_classic_uid_from_anticollision_is_granted(rig: Rig) -> None:
    card = ClassicCard(rig.field, uid=CLASSIC)
    await rig.tap(card, 1)
    assert rig.decisions() == [("granted", "ok")]
    assert rig.rows()[-1]["subject"] == "resident:1042"
    assert card.activations == 0  # never activated as a tag: nothing was sent past anticollision
    assert await eventually(lambda: len(rig.flashes()) == 1)


async def test_phone_ndef_text_token_is_decided_as_that_token(rig: Rig) -> None:
    code = rig.signer.code("t-phone-1", sub="resident:55", kind="resident", ttl=120)
    phone = FelicaCard(rig.field, idm="02FE0102030405AA", ndef=ndef_text(code))
    await rig.tap(phone, 1)
    rows = [r for r in rig.rows() if r["reader"] == "nfc-north"]
    assert [(r["result"], r["reason"], r["credential"], r["subject"]) for r in rows] == [
        ("granted", "ok", "t-phone-1", "resident:55")
    ]
    assert rows[0]["method"] == "nfc" and phone.connections > 0
    assert await eventually(lambda: len(rig.flashes()) == 1)


async def test_type2_sticker_with_a_uri_token(rig: Rig) -> None:
    code = rig.signer.code("t-sticker-1")
    await rig.tap(
        Type2Card(rig.field, uid="05112233445566", ndef=ndef_uri(f"https://gate.example/o?t={code}")), 1
    )
    assert [(r["reason"], r["credential"]) for r in rig.rows()] == [("ok", "t-sticker-1")]


@pytest.mark.parametrize("rig", [{"ndef_tokens": False}], indirect=True)
async def test_ndef_is_ignored_unless_asked(rig: Rig) -> None:
    phone = FelicaCard(rig.field, idm=UNKNOWN_IDM, ndef=ndef_text(rig.signer.code("t-unasked")))
    await rig.tap(phone, 1)
    assert rig.decisions() == [("denied", "unknown_credential")]
    assert phone.connections == 0  # not activated: the IDm from polling is all that was read


async def test_lift_and_tap_again_is_a_second_presentation(rig: Rig) -> None:
    await rig.tap(ClassicCard(rig.field, uid=CLASSIC), 1)
    await rig.tap(ClassicCard(rig.field, uid=CLASSIC), 2)
    await rig.tap(FelicaCard(rig.field, idm=UNKNOWN_IDM), 3)
    await rig.tap(FelicaCard(rig.field, idm=UNKNOWN_IDM), 4)
    assert rig.decisions() == [("granted", "ok")] * 2 + [("denied", "unknown_credential")] * 2
    assert await eventually(lambda: len(rig.flashes()) == 2)


class HotPlug:
    """nfcpy's device discovery with the reader unplugged or plugged in.

    The udp driver has no hot-plug: ``udp:`` always opens. This stands in for the USB bus only; the
    device that opens is nfcpy's real udp driver, and an unplugged device fails as a USB one does
    (IOError ENODEV from the driver, which ContactlessFrontend.connect turns into False)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.plugged = False
        self.opened: list[Any] = []
        real = nfc.clf.device.connect

        def connect(path: str) -> Any:
            if not self.plugged:
                return None  # what nfcpy returns for a path with no reader on it
            dev = real(path)
            self.opened.append(dev)
            return dev

        monkeypatch.setattr(nfc.clf.device, "connect", connect)

    def unplug(self) -> None:
        self.plugged = False

        def gone(*_: object) -> None:
            raise OSError(errno.ENODEV, "No such device")

        for dev in self.opened:
            dev.sense_tta = dev.sense_ttf = gone


async def test_reader_unplugged_is_offline_then_online(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plug = HotPlug(monkeypatch)
    monkeypatch.setattr("drivers.nfc.BACKOFF_MIN_S", 0.2)
    monkeypatch.setattr("drivers.nfc.BACKOFF_MAX_S", 0.4)
    board, port, field = RelayBoardSim(device_ids=[1]), free_port(), free_udp_port()
    cfg_path = gateway_config(
        tmp_path, signer=Signer(),
        bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": port, "timeout": 0.3, "retries": 0},
        readers={"nfc-north": {"type": "nfc", "device": f"udp:127.0.0.1:{field}"}},
    )  # fmt: skip
    data = tmp_path / "data"

    def reader_events() -> list[tuple[object, object]]:
        return [(r["result"], r["reason"]) for r in outbox_rows(data) if r["device"] == "nfc-north"]

    async with tcp_board(board, port):
        gw = Gateway(load_config(cfg_path))
        await gw.start()
        try:
            reader = gw.readers["nfc-north"]
            assert await eventually(lambda: reader_events() == [("alarm", "device_offline")])
            assert not reader.online
            await asyncio.sleep(1.0)  # several retries while unplugged: still one alarm
            assert reader_events() == [("alarm", "device_offline")]
            plug.plugged = True
            assert await eventually(lambda: reader.online)
            assert await eventually(lambda: reader_events()[-1] == ("info", "device_online"))
            with ClassicCard(field, uid="0A0B0C0D"):  # and it reads cards
                assert await eventually(
                    lambda: any(r["reason"] == "unknown_credential" for r in outbox_rows(data))
                )
            plug.unplug()  # pulled out while running
            assert await eventually(lambda: not reader.online)
            assert await eventually(lambda: reader_events()[-1] == ("alarm", "device_offline"))
            plug.plugged = True
            assert await eventually(lambda: reader.online)
            assert [e for e in reader_events() if e[0] != "denied"] == [
                ("alarm", "device_offline"), ("info", "device_online"),
                ("alarm", "device_offline"), ("info", "device_online"),
            ]  # fmt: skip
        finally:
            await gw.stop()


async def test_a_reader_nfcpy_cannot_open_is_offline_with_the_reason(tmp_path: Path) -> None:
    gw_cfg = gateway_config(
        tmp_path, signer=Signer(), bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": free_port()},
        readers={"nfc-north": {"type": "nfc", "device": "udp:nfc-north.invalid:54321"}},
    )  # fmt: skip
    gw = Gateway(load_config(gw_cfg))
    seen: list[tuple[str, bool, str | None]] = []
    gw.readers["nfc-north"].on_status(lambda *a: seen.append(a))
    await gw.start()
    try:
        assert await eventually(lambda: bool(seen))
        assert seen[0][:2] == ("nfc-north", False) and "gaierror" in str(seen[0][2])
        assert await eventually(lambda: ("alarm", "device_offline") in [
            (r["result"], r["reason"]) for r in outbox_rows(tmp_path / "data")])  # fmt: skip
    finally:
        await gw.stop()


def test_token_in_ndef_records() -> None:
    assert token_from_records([ndef.TextRecord(" a.b.c ")]) == "a.b.c"
    assert token_from_records([ndef.UriRecord("https://x.example/y?z=1&t=a.b.c")]) == "a.b.c"
    assert token_from_records([ndef.UriRecord("https://x.example/no-token")]) is None
    assert token_from_records([ndef.UriRecord("https://x/"), ndef.TextRecord("tok")]) == "tok"
    assert token_from_records([ndef.Record("application/octet-stream", "", b"t")]) is None
    assert token_from_uri("not a uri") == ""


def test_config_device_must_be_an_nfcpy_path() -> None:
    assert NfcConfig.model_validate({"type": "nfc", "device": "usb:072f:2200"}).ndef_tokens is False
    with pytest.raises(ValueError, match="nfcpy path"):
        NfcConfig.model_validate({"type": "nfc", "device": "/dev/ttyUSB0"})


def test_example_config_loads() -> None:
    cfg = load_config(Path(__file__).resolve().parents[1] / "config" / "example-nfc.yaml")
    reader = cfg.reader_models()["nfc-north"]
    assert isinstance(reader, NfcConfig) and reader.device == "usb" and reader.ndef_tokens is True
