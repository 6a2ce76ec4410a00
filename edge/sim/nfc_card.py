"""Contactless cards over nfcpy's ``udp:`` driver, for tests and the demo: no reader hardware needed.

nfcpy's udp driver carries one RF field over UDP: the reader end (``device: udp:127.0.0.1:PORT``)
sends to PORT, a card end listens on PORT. Each emulator here is such a card end, run in its own thread
with its own ``ContactlessFrontend``: :meth:`CardEmulator.place` puts the card on the reader and
:meth:`CardEmulator.lift` takes it away (the port is freed, so the reader's polls go unanswered).
Only one card can lie on a port at a time, as on a real reader's antenna.

* :class:`FelicaCard`: a Type 3 tag through nfcpy's own ``Type3TagEmulation``, optionally holding an
  NDEF message (a phone showing a code, or a programmed FeliCa Lite tag).
* :class:`Type2Card`: a small Type 2 responder (NTAG/Ultralight-like, 7-byte UID by default) on
  nfcpy's ``listen_tta``: it answers anticollision and the READ command, optionally with an NDEF message.
* :class:`ClassicCard`: answers anticollision like a MIFARE Classic 1K (SAK 0x08, 4-byte UID) and
  nothing else, as a real Classic answers no reader that cannot do Crypto1.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import ndef
import nfc
import nfc.clf
import nfc.tag.tt3

log = logging.getLogger(__name__)

_LISTEN_S = 0.5  # one listen call: the most a lift waits for the emulator thread


def ndef_text(text: str) -> bytes:
    """An NDEF message of one text record (what a phone app or a programmed tag carries)."""
    return b"".join(ndef.message_encoder([ndef.TextRecord(text)]))


def ndef_uri(uri: str) -> bytes:
    """An NDEF message of one URI record."""
    return b"".join(ndef.message_encoder([ndef.UriRecord(uri)]))


class CardEmulator:
    """A card on the udp field at 127.0.0.1:``port``, served by a thread while it is placed."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.path = f"udp:{host}:{port}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []  # unexpected exceptions of the emulator thread (tests assert none)

    def place(self) -> CardEmulator:
        """Put the card on the reader (start answering)."""
        if self._thread is not None:
            raise RuntimeError("card already placed")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"card-{type(self).__name__}", daemon=True)
        self._thread.start()
        return self

    def lift(self) -> None:
        """Take the card away: the thread ends within one listen period and the port is free again."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(5.0)

    def __enter__(self) -> CardEmulator:
        return self.place()

    def __exit__(self, *_: object) -> None:
        self.lift()

    def _run(self) -> None:
        clf = nfc.ContactlessFrontend()
        try:
            if not clf.open(self.path):
                raise OSError(f"cannot open {self.path}")
            _bind(clf.device)
            while not self._stop.is_set():
                self.serve(clf)
        except Exception as exc:
            log.exception("card emulator failed")
            self.errors.append(repr(exc))
        finally:
            clf.close()

    def serve(self, clf: nfc.ContactlessFrontend) -> None:
        """One listen period; subclasses answer the reader."""
        raise NotImplementedError


class FelicaCard(CardEmulator):
    """A FeliCa card or phone (Type 3) via nfcpy's Type3TagEmulation.

    Without ``ndef`` it has only an IDm (sensf_res system code 0x88B4, a plain FeliCa card: the reader
    sees no NDEF service); with ``ndef`` it is an NFC Forum Type 3 tag (system code 0x12FC) whose NDEF
    service 0x000B holds the message, read-only.
    """

    def __init__(self, port: int, idm: str = "01010501B00AC30B", ndef: bytes | None = None) -> None:
        super().__init__(port)
        self.idm = bytes.fromhex(idm)
        self.ndef = ndef
        self.connections = 0  # commands beyond polling: the reader activated the tag

    def _blocks(self) -> list[bytes]:
        data = self.ndef or b""
        nblocks = (len(data) + 15) // 16
        attr = bytearray(16)
        attr[0], attr[1], attr[2] = 0x10, 4, 1  # version 1.0, Nbr 4, Nbw 1
        attr[3:5] = max(nblocks, 1).to_bytes(2, "big")  # Nmaxb
        attr[10] = 0x00  # read-only
        attr[11:14] = len(data).to_bytes(3, "big")
        attr[14:16] = sum(attr[0:14]).to_bytes(2, "big")
        padded = data + bytes(nblocks * 16 - len(data))
        return [bytes(attr)] + [padded[i : i + 16] for i in range(0, len(padded), 16)]

    def serve(self, clf: nfc.ContactlessFrontend) -> None:
        # nfcpy's Type3TagEmulation answers every command, polling (SENSF_REQ) included. The transport
        # loop is ours, not clf.connect(card=...): that one re-creates the socket at each listen timeout
        # and on every RF off, and a reader command arriving in that instant is lost (seen as a tag that
        # fails its first read). One bound socket answers every poll while the card is placed.
        system = "12FC" if self.ndef is not None else "88B4"
        pmm = "FFFFFFFFFFFFFFFF" if self.ndef is not None else "033242828247AAFF"
        sensf_res = bytearray.fromhex("01" + self.idm.hex() + pmm + system)
        emu = nfc.tag.tt3.Type3TagEmulation(clf, nfc.clf.LocalTarget("212F", sensf_res=sensf_res,
                                                                      tt3_cmd=bytearray()))  # fmt: skip
        if self.ndef is not None:
            blocks = self._blocks()

            def read(block: int, rb: bool, re: bool) -> bytes | None:
                return blocks[block] if block < len(blocks) else None

            emu.add_service(0x0009, read, None)
            emu.add_service(0x000B, read, None)
        dev = clf.device
        while not self._stop.is_set():
            try:
                brty, data, addr = dev._recv_data(_LISTEN_S, "212F", "424F")
            except nfc.clf.CommunicationError:  # timeout, RF off (the reader polls again) or noise
                continue
            if not data or len(data) != data[0]:
                continue
            rsp = emu.process_command(data)
            if rsp is not None:
                if data[1] != 0x00:
                    self.connections += 1  # a command beyond polling: the reader activated the tag
                dev._send_data(brty, rsp, addr)


class _TypeACard(CardEmulator):
    """Common part of the ISO 14443-A responders: nfcpy's udp listen_tta answers SENS/SDD/SEL itself."""

    sens_res = "4400"
    sel_res = 0x00

    def __init__(self, port: int, uid: str) -> None:
        super().__init__(port)
        self.uid = bytes.fromhex(uid)
        self.activations = 0  # commands after anticollision: the reader activated the card as a tag

    def _target(self) -> Any:
        return nfc.clf.LocalTarget("106A", sens_res=bytearray.fromhex(self.sens_res),
                                   sdd_res=bytearray(self.uid), sel_res=bytearray([self.sel_res]))  # fmt: skip

    def serve(self, clf: nfc.ContactlessFrontend) -> None:
        # nfcpy's udp listen_tta answers SENS_REQ/SDD_REQ/SEL_REQ (cascade levels for 7 and 10-byte UIDs)
        # and returns at the first other command. Its socket-keeping inner loop is used, not clf.listen,
        # for the reason given in FelicaCard.serve.
        dev = clf.device
        found = dev._listen_tta(self._target(), time.time() + _LISTEN_S)
        if found is None:
            return
        self.activations += 1
        cmd = found.tt2_cmd
        try:
            while cmd is not None and not self._stop.is_set():
                cmd = dev.send_rsp_recv_cmd(found, self.respond(bytes(cmd)), _LISTEN_S)
        except nfc.clf.CommunicationError:
            pass  # RF off (the reader polls again, answered on the same socket) or silence

    def respond(self, cmd: bytes) -> bytes | None:
        """The answer to a command after activation; None = stay mute (like a card that does not know it)."""
        return None


class Type2Card(_TypeACard):
    """A Type 2 tag (NTAG-like) answering READ (0x30) from its memory; 7-byte UID by default."""

    def __init__(self, port: int, uid: str = "05A1B2C3D4E5F6", ndef: bytes | None = None) -> None:
        super().__init__(port, uid)
        mem = bytearray(self.uid[:3]) + bytes([0x88 ^ self.uid[0] ^ self.uid[1] ^ self.uid[2]])
        mem += self.uid[3:7].ljust(4, b"\0") + bytes(4)
        if ndef is None:
            mem += bytes(4)  # no capability container: not NDEF formatted
            body = bytearray(48)
        else:
            size = len(ndef)
            tlv_len = bytes([size]) if size < 0xFF else b"\xff" + size.to_bytes(2, "big")
            body = bytearray(b"\x03" + tlv_len + ndef + b"\xfe")
            body += bytes(-len(body) % 8)
            mem += bytes([0xE1, 0x10, len(body) // 8, 0x0F])  # CC: NDEF 1.0, data area size, read-only
        self.memory = bytes(mem + body)

    def respond(self, cmd: bytes) -> bytes | None:
        if len(cmd) == 2 and cmd[0] == 0x30:
            start = cmd[1] * 4
            if start < len(self.memory):
                return (self.memory + self.memory)[start : start + 16]
            return b"\x00"  # NAK: address out of range
        return None


class ClassicCard(_TypeACard):
    """Anticollision like a MIFARE Classic 1K (ATQA 0004, SAK 0x08, 4-byte UID); mute to anything else."""

    sens_res = "0400"
    sel_res = 0x08

    def __init__(self, port: int, uid: str = "A1B2C3D4") -> None:
        super().__init__(port, uid)


def _bind(dev: Any) -> None:
    """Bind the udp device's socket to the field's port once per placement (the card is "on" the reader)."""
    dev._create_socket()
    if not dev._bind_socket(time.time() + 1.0):
        raise OSError(f"port {dev.addr[1]} is taken: another card lies on this reader")
