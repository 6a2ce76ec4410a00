"""SimScanner: a pty at a stable link path, read by the real SerialReader."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drivers.serial_reader import SerialReader, SerialReaderConfig
from edge.model import Presentation
from edge.sim.scanner import SimScanner

WAIT = 10.0


class Seen:
    def __init__(self) -> None:
        self.presented: asyncio.Queue[Presentation] = asyncio.Queue()
        self.rejected: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue()
        self.status: asyncio.Queue[bool] = asyncio.Queue()

    async def value(self) -> str:
        return (await asyncio.wait_for(self.presented.get(), WAIT)).value

    async def status_is(self, online: bool) -> None:
        async def get() -> None:
            while await self.status.get() != online:
                pass

        await asyncio.wait_for(get(), WAIT)


@contextlib.asynccontextmanager
async def reader_on(link: Path, **kw: object) -> AsyncIterator[Seen]:
    seen = Seen()
    cfg = SerialReaderConfig.model_validate(
        {"type": "serial", "port": str(link), "content": "qr", "reopen_interval_s": 0.05} | kw
    )
    r = SerialReader("qr-sim", cfg, seen.presented.put_nowait, lambda *a: seen.rejected.put_nowait(a))
    r.on_status(lambda _rid, online, _err: seen.status.put_nowait(online))
    await r.start()
    try:
        yield seen
    finally:
        await r.stop()


async def test_send_reaches_serial_reader(tmp_path: Path) -> None:
    link = tmp_path / "sim" / "qr-north"  # parent directory does not exist yet
    sc = SimScanner(link)
    await sc.start()
    try:
        assert link.is_symlink() and os.readlink(link) == sc.slave_name
        async with reader_on(link) as seen:
            await seen.status_is(True)
            sc.send("token-one")
            sc.send("京A12345 with spaces inside")
            assert await seen.value() == "token-one"
            assert await seen.value() == "京A12345 with spaces inside"
            assert seen.rejected.empty()
    finally:
        await sc.stop()
    assert not link.exists() and not link.is_symlink()


@pytest.mark.parametrize(("term", "names"), [(b"\n", ["LF"]), (b"\r\n", ["CRLF"]), (b"\t", ["TAB"])])
async def test_terminator_choice(tmp_path: Path, term: bytes, names: list[str]) -> None:
    sc = SimScanner(tmp_path / "qr", terminator=term)
    await sc.start()
    try:
        async with reader_on(tmp_path / "qr", terminators=names) as seen:
            await seen.status_is(True)
            sc.send("a")
            sc.send("b")
            assert [await seen.value(), await seen.value()] == ["a", "b"]
    finally:
        await sc.stop()


async def test_stop_is_an_unplug_and_restart_a_replug(tmp_path: Path) -> None:
    link = tmp_path / "qr"
    sc = SimScanner(link)
    await sc.start()
    try:
        async with reader_on(link) as seen:
            await seen.status_is(True)
            await sc.stop()
            await seen.status_is(False)
            await sc.start()  # a new pty behind the same path
            await seen.status_is(True)
            sc.send("after-replug")
            assert await seen.value() == "after-replug"
    finally:
        await sc.stop()


async def test_feed_stdin_from_a_pipe_and_feed_file(tmp_path: Path) -> None:
    link = tmp_path / "qr"
    sc = SimScanner(link)
    await sc.start()
    rfd, wfd = os.pipe()
    try:
        async with reader_on(link) as seen:
            await seen.status_is(True)
            with os.fdopen(rfd, "r") as rf:
                task = asyncio.create_task(sc.feed_stdin(rf))
                os.write(wfd, b"typed-1\n\n   \ntyped-2\n")
                assert [await seen.value(), await seen.value()] == ["typed-1", "typed-2"]
                os.close(wfd)
                wfd = -1
                await asyncio.wait_for(task, WAIT)  # EOF ends it
            lines = tmp_path / "codes.txt"
            lines.write_text("file-1\n\nfile-2\r\n", encoding="utf-8")
            assert await sc.feed_file(lines) == 2
            assert [await seen.value(), await seen.value()] == ["file-1", "file-2"]
            with lines.open() as f:  # a regular file as "stdin"
                await asyncio.wait_for(sc.feed_stdin(f), WAIT)
            assert [await seen.value(), await seen.value()] == ["file-1", "file-2"]
            assert seen.presented.empty() and seen.rejected.empty()
    finally:
        if wfd >= 0:
            os.close(wfd)
        await sc.stop()


async def test_replaces_stale_link_but_never_a_real_path(tmp_path: Path) -> None:
    stale = tmp_path / "stale"
    os.symlink("/dev/pts/999999", stale)  # left behind by a killed simulator
    sc = SimScanner(stale)
    await sc.start()
    try:
        assert os.readlink(stale) == sc.slave_name
    finally:
        await sc.stop()

    real = tmp_path / "real-file"
    real.write_text("keep me")
    with pytest.raises(FileExistsError):
        await SimScanner(real).start()
    assert real.read_text() == "keep me"

    other = tmp_path / "by-id"
    os.symlink("/dev/ttyUSB0", other)
    with pytest.raises(FileExistsError):
        await SimScanner(other).start()
    assert os.readlink(other) == "/dev/ttyUSB0"


async def test_send_before_start_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        SimScanner(tmp_path / "x").send("nope")
