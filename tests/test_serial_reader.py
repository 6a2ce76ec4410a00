"""SerialReader over a real socat pty pair: the test writes to side a, the reader opens side b."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from drivers.serial_reader import LineFramer, SerialReader, SerialReaderConfig
from edge.model import Presentation
from edge.normalize import BadCredential, mask_credential, normalize_card, normalize_plate
from tests.support.ptys import PtyPair

WAIT = 10.0  # generous: a wait only ends early, it never decides the outcome


@dataclass
class Harness:
    pair: PtyPair
    reader: SerialReader
    presented: asyncio.Queue[Presentation] = field(default_factory=asyncio.Queue)
    rejected: asyncio.Queue[tuple[str, str, str]] = field(default_factory=asyncio.Queue)
    status: asyncio.Queue[tuple[str, bool, str | None]] = field(default_factory=asyncio.Queue)
    fd: int | None = None

    def write(self, data: bytes) -> None:
        if self.fd is None:
            self.fd = os.open(self.pair.a, os.O_RDWR | os.O_NOCTTY)
        os.write(self.fd, data)

    def close_writer(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None

    async def next_presentation(self) -> Presentation:
        return await asyncio.wait_for(self.presented.get(), WAIT)

    async def next_reject(self) -> tuple[str, str, str]:
        return await asyncio.wait_for(self.rejected.get(), WAIT)

    async def wait_status(self, online: bool) -> tuple[str, bool, str | None]:
        async def get() -> tuple[str, bool, str | None]:
            while True:
                st = await self.status.get()
                if st[1] == online:
                    return st

        return await asyncio.wait_for(get(), WAIT)


def make_cfg(port: Path, **kw: Any) -> SerialReaderConfig:
    base: dict[str, Any] = {"type": "serial", "port": str(port), "content": "qr", "reopen_interval_s": 0.05}
    return SerialReaderConfig.model_validate(base | kw)


@contextlib.asynccontextmanager
async def running(pair: PtyPair, **kw: Any) -> AsyncIterator[Harness]:
    h: Harness
    reader = SerialReader(
        "qr-north",
        make_cfg(pair.b, **kw),
        lambda p: h.presented.put_nowait(p),
        lambda rid, reason, detail: h.rejected.put_nowait((rid, reason, detail)),
    )
    h = Harness(pair, reader)
    reader.on_status(lambda rid, online, err: h.status.put_nowait((rid, online, err)))
    await reader.start()
    try:
        yield h
    finally:
        h.close_writer()
        await reader.stop()


async def test_qr_line_becomes_token_presentation(pty_pair: PtyPair) -> None:
    async with running(pty_pair) as h:
        assert h.reader.online
        assert (await h.wait_status(True)) == ("qr-north", True, None)
        h.write(b"eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln\r")
        p = await h.next_presentation()
        assert (p.kind, p.method, p.reader) == ("token", "qr", "qr-north")
        assert p.value == "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln"
        assert p.t_mono > 0


@pytest.mark.parametrize(
    ("terminators", "wire"),
    [
        (["CR"], b"one\rtwo\rthree\rend\r"),
        (["LF"], b"one\ntwo\nthree\nend\n"),
        (["CRLF"], b"one\r\ntwo\r\nthree\r\nend\r\n"),
        (["TAB"], b"one\ttwo\tthree\tend\t"),
        (["CR", "LF"], b"one\r\ntwo\r\nthree\r\nend\r\n"),
        (["CR", "LF", "CRLF"], b"one\rtwo\nthree\r\nend\r\n"),
        (["CR", "CRLF"], b"one\r\ntwo\rthree\r\nend\r"),
        (["LF", "TAB"], b"one\ttwo\nthree\tend\n"),
    ],
)
async def test_terminators(pty_pair: PtyPair, terminators: list[str], wire: bytes) -> None:
    async with running(pty_pair, terminators=terminators) as h:
        h.write(wire)
        got = [(await h.next_presentation()).value for _ in range(4)]
        assert got == ["one", "two", "three", "end"]
        h.write(b"x" + wire[3:4] + (b"\n" if terminators == ["CRLF"] else b""))
        assert (await h.next_presentation()).value == "x"  # nothing (no empty line) came in between
        assert h.rejected.empty()  # CRLF never yielded a stray-LF line


async def test_crlf_split_across_reads_is_one_line(pty_pair: PtyPair) -> None:
    """CR and LF in separate writes: the LF still belongs to the CR, no second (empty) line."""
    async with running(pty_pair, terminators=["CR", "CRLF"]) as h:
        h.write(b"first\r")
        assert (await h.next_presentation()).value == "first"
        h.write(b"\nsecond\r\n")
        assert (await h.next_presentation()).value == "second"
        assert h.rejected.empty()


async def test_crlf_only_lone_cr_is_not_a_terminator(pty_pair: PtyPair) -> None:
    async with running(pty_pair, terminators=["CRLF"]) as h:
        h.write(b"ab\rcd\r\nok\r")
        h.write(b"\n")
        _, reason, detail = await h.next_reject()
        assert reason == "malformed" and "control byte 0x0d" in detail
        assert (await h.next_presentation()).value == "ok"


async def test_empty_lines_are_ignored_silently(pty_pair: PtyPair) -> None:
    async with running(pty_pair) as h:
        h.write(b"\r\r\n\n  \rcode\r")
        assert (await h.next_presentation()).value == "code"
        assert h.rejected.empty() and h.presented.empty()


async def test_overlong_line_reported_once_then_reader_recovers(pty_pair: PtyPair) -> None:
    async with running(pty_pair, max_line=16) as h:
        h.write(b"X" * 40)  # unterminated: over max_line already
        h.write(b"Y" * 40 + b"\r")  # still the same line
        h.write(b"Z" * 17 + b"\r")  # a second, terminated over-long line
        h.write(b"good-one\r")
        assert (await h.next_presentation()).value == "good-one"
        rejects = [h.rejected.get_nowait() for _ in range(h.rejected.qsize())]
        assert [r[1] for r in rejects] == ["malformed", "malformed"]
        assert all("over 16 bytes" in r[2] for r in rejects)
        assert h.presented.empty()


async def test_line_of_exactly_max_line_is_accepted(pty_pair: PtyPair) -> None:
    async with running(pty_pair, max_line=16, terminators=["CRLF"]) as h:
        h.write(b"A" * 16 + b"\r")
        h.write(b"\n")
        assert (await h.next_presentation()).value == "A" * 16
        assert h.rejected.empty()


@pytest.mark.parametrize(
    ("garbage", "why"),
    [
        (b"ab\x00cd\r", "control byte 0x00"),
        (b"\x1b[A\r", "control byte 0x1b"),
        (b"\xff\xfe\xfa\r", "not UTF-8"),
        (b"caf\xc3\r", "not UTF-8"),
        (b"x\xc2\x85y\r", "C1 control"),
    ],
)
async def test_binary_garbage_rejected_and_reader_continues(
    pty_pair: PtyPair, garbage: bytes, why: str
) -> None:
    async with running(pty_pair) as h:
        h.write(garbage + b"after\r")
        rid, reason, detail = await h.next_reject()
        assert (rid, reason) == ("qr-north", "malformed") and why in detail
        assert (await h.next_presentation()).value == "after"
        assert h.presented.empty()


async def test_utf8_text_is_accepted(pty_pair: PtyPair) -> None:
    async with running(pty_pair) as h:
        h.write("京A12345\r".encode())
        assert (await h.next_presentation()).value == "京A12345"


@pytest.mark.parametrize(
    ("fmt", "wire", "expected"),
    [
        ("hex", b"04a1b2c3\r", "04A1B2C3"),
        ("hex", b"04:A1:B2:C3:D4:E5:F6\r", "04A1B2C3D4E5F6"),
        ("hex", b"0000abcd\r", "0000ABCD"),
        ("decimal", b"43981\r", "0000ABCD"),
        ("decimal", b"3735928559\r", "DEADBEEF"),
        ("decimal", b"1208925819614629174706175\r", "FFFFFFFFFFFFFFFFFFFF"),
        ("decimal", b"4294967296\r", "0100000000"),
    ],
)
async def test_card_numbers_normalised(pty_pair: PtyPair, fmt: str, wire: bytes, expected: str) -> None:
    async with running(pty_pair, content="card", card_format=fmt) as h:
        h.write(wire)
        p = await h.next_presentation()
        assert (p.kind, p.method, p.value, p.reader) == ("card", "nfc", expected, "qr-north")


@pytest.mark.parametrize(
    ("fmt", "wire"),
    [
        ("hex", b"04A1B2C\r"),  # odd length
        ("hex", b"04G1B2C3\r"),
        ("hex", b"AB\r"),
        ("hex", b"00112233445566778899AA\r"),  # 22 digits
        ("decimal", b"12a45\r"),
        ("decimal", b"1208925819614629174706176\r"),  # 2**80
    ],
)
async def test_bad_card_numbers_rejected(pty_pair: PtyPair, fmt: str, wire: bytes) -> None:
    async with running(pty_pair, content="card", card_format=fmt) as h:
        h.write(wire + b"01020304\r")
        rid, reason, detail = await h.next_reject()
        assert (rid, reason) == ("qr-north", "malformed")
        assert wire.strip().decode() not in detail  # the number itself is not logged
        p = await h.next_presentation()
        assert p.value == normalize_card("01020304", fmt)  # type: ignore[arg-type]
        assert h.presented.empty()


async def test_unplug_then_replug(pty_pair: PtyPair) -> None:
    async with running(pty_pair) as h:
        await h.wait_status(True)
        h.write(b"before\rPARTIAL")  # the partial line must not survive the unplug
        assert (await h.next_presentation()).value == "before"
        h.close_writer()
        pty_pair.stop()  # unplug: socat dies, the pty link disappears, reads raise EIO
        rid, online, reason = await h.wait_status(False)
        assert rid == "qr-north" and not online and reason
        assert not h.reader.online
        pty_pair.start()  # replug at the same path (a new /dev/pts/N behind it)
        assert (await h.wait_status(True)) == ("qr-north", True, None)
        assert h.reader.online
        h.write(b"after\r")
        assert (await h.next_presentation()).value == "after"
        assert h.presented.empty() and h.rejected.empty()


async def test_port_missing_at_start_then_appears(tmp_path: Path) -> None:
    pair = PtyPair(tmp_path, "late")
    try:
        async with running(pair) as h:
            _, online, reason = await h.wait_status(False)  # start() did not raise
            assert not online and reason and not h.reader.online
            pair.start()
            await h.wait_status(True)
            h.write(b"late-code\r")
            assert (await h.next_presentation()).value == "late-code"
    finally:
        pair.stop()


async def test_callback_errors_do_not_stop_the_reader(pty_pair: PtyPair) -> None:
    seen: list[str] = []

    def present(p: Presentation) -> None:
        seen.append(p.value)
        if p.value == "boom":
            raise RuntimeError("bug downstream")
        done.set()

    def reject(rid: str, reason: str, detail: str) -> None:
        raise RuntimeError("bug downstream")

    done = asyncio.Event()
    reader = SerialReader("r", make_cfg(pty_pair.b), present, reject)
    reader.on_status(lambda *a: 1 / 0)
    await reader.start()
    fd = os.open(pty_pair.a, os.O_RDWR | os.O_NOCTTY)
    try:
        os.write(fd, b"boom\r\x00\rfine\r")
        await asyncio.wait_for(done.wait(), WAIT)
        assert seen == ["boom", "fine"] and reader.online
    finally:
        os.close(fd)
        await reader.stop()
    assert not reader.online


# --- pure helpers ------------------------------------------------------------------------------


def test_framer_crlf_split_and_overflow_tail() -> None:
    f = LineFramer(["CRLF"], max_line=8)
    assert f.feed(b"abc\r") == []
    assert f.feed(b"\nabcdefghij") == [b"abc", 10]
    assert f.feed(b"klm\r") == []
    assert f.feed(b"\nok\r\n") == [b"ok"]
    f.feed(b"half")
    f.reset()
    assert f.feed(b"new\r\n") == [b"new"]
    g = LineFramer(["CR", "CRLF"], max_line=8)
    assert g.feed(b"abc\r") == [b"abc"]
    assert g.feed(b"\nxyz\r") == [b"xyz"]  # the LF of a split CR LF is swallowed, not kept
    assert g.feed(b"\r\n") == []


def test_normalize_card_and_plate() -> None:
    assert normalize_card(" 04-a1-b2-c3 ", "hex") == "04A1B2C3"
    assert normalize_card("0", "decimal") == "00000000"
    assert normalize_card("255", "decimal") == "000000FF"
    for bad, fmt in [
        ("", "hex"),
        ("12345", "hex"),
        ("-", "decimal"),
        ("１２", "decimal"),
        ("1" * 26, "decimal"),
    ]:
        with pytest.raises(BadCredential) as ei:
            normalize_card(bad, fmt)  # type: ignore[arg-type]
        assert ei.value.reason == "malformed"
    assert normalize_plate("京a·123 45") == "京A12345"
    assert normalize_plate("京Ａ-１２３４５") == "京A12345"
    assert normalize_plate("ab.c") == "ABC"
    for bad in ["A", "京A/12345", "X" * 13, " - "]:
        with pytest.raises(BadCredential):
            normalize_plate(bad)


def test_mask_credential_never_shows_a_full_uid() -> None:
    assert mask_credential("card", "04A1B2C3") == "****B2C3"
    assert mask_credential("card", "ABCD") == "****CD"
    assert mask_credential("plate", "京A12345") == "京***45"
    assert mask_credential("plate", "AB") == "A***"
    assert mask_credential("token", "jti-1") == "jti-1"
    assert mask_credential("other", "secret") == "****"
    assert mask_credential("card", "") == ""
