"""A simulated serial QR scanner on a pty, for demos, installers and benchmarks.

The gateway config points a reader at a stable path (e.g. var/sim/qr-north); this module makes
that path a symlink to the *slave* side of a fresh pty, which the gateway opens like any serial
port. The simulator writes scans to the *master* side. No socat needed at run time.

    python -m edge.sim.scanner var/sim/qr-north            # type lines, each one is a scan
    python -m edge.sim.scanner var/sim/qr-north -f codes.txt --interval 0.5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import stat
import sys
import termios
import tty
from collections.abc import Iterable
from pathlib import Path
from typing import IO

import structlog

log = structlog.get_logger(__name__)


class SimScanner:
    """One pty "scanner". ``send()`` is a scan: the line plus the terminator, written at once, like a
    real scanner's burst. ``stop()`` closes the master, which the gateway sees as an unplug (EIO)."""

    def __init__(self, link_path: Path, terminator: bytes = b"\r") -> None:
        self.link_path = Path(link_path)
        self.terminator = terminator
        self._master: int | None = None
        self._slave: int | None = None
        self._slave_name: str | None = None

    @property
    def slave_name(self) -> str | None:
        """The /dev/pts/N the link points at while started."""
        return self._slave_name

    async def start(self) -> None:
        if self._master is not None:
            return
        master, slave = os.openpty()
        try:
            # Raw, no echo: the gateway must see exactly the bytes sent (no CR->LF mapping), and
            # nothing is echoed back into a master nobody reads. pyserial sets this again on open;
            # doing it here too keeps the pty sane for other tools (cat, minicom) as well.
            tty.setraw(slave, termios.TCSANOW)
            os.set_blocking(master, False)
            name = os.ttyname(slave)
            self._link(name)
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        # The slave stays open here so the pty (and its settings) survive the gateway closing and
        # reopening the port; it is never read from this side.
        self._master, self._slave, self._slave_name = master, slave, name
        log.info("sim_scanner_started", link=str(self.link_path), tty=name)

    def _link(self, target: str) -> None:
        """Point link_path at ``target`` atomically. Only a stale simulator link (to /dev/pts/*) is
        replaced: a real device path (/dev/ttyUSB0, /dev/serial/by-id/...) is never touched."""
        p = self.link_path
        if p.is_symlink():
            if not os.readlink(p).startswith("/dev/pts/"):
                raise FileExistsError(
                    f"{p} is a link to {os.readlink(p)}, not a simulator pty: not replacing it"
                )
        elif p.exists():
            raise FileExistsError(f"{p} exists and is not a simulator link: not replacing it")
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(target, tmp)
        os.replace(tmp, p)

    async def stop(self) -> None:
        master, slave, name = self._master, self._slave, self._slave_name
        self._master = self._slave = self._slave_name = None
        if master is None:
            return
        with contextlib.suppress(OSError):
            if os.readlink(self.link_path) == name:
                self.link_path.unlink()
        for fd in (master, slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        log.info("sim_scanner_stopped", link=str(self.link_path))

    def send(self, line: str) -> None:
        """Write ``line`` + terminator to the scanner side. Never blocks: if the gateway is not
        reading and the pty buffer (about 4 KiB) is full, the rest is dropped with a warning."""
        if self._master is None:
            raise RuntimeError("SimScanner is not started")
        data = line.encode("utf-8") + self.terminator
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._master, view)
            except BlockingIOError:
                log.warning("sim_scanner_buffer_full", link=str(self.link_path), dropped=len(view))
                return
            view = view[n:]

    async def feed_lines(self, lines: Iterable[str], interval_s: float = 0.0) -> int:
        """Send each non-empty line (trailing newline removed), ``interval_s`` apart. Returns the count."""
        n = 0
        for line in lines:
            text = line.rstrip("\r\n")
            if not text.strip():
                continue
            if n and interval_s > 0:
                await asyncio.sleep(interval_s)
            self.send(text)
            n += 1
        return n

    async def feed_file(self, path: Path, interval_s: float = 0.0) -> int:
        text = await asyncio.to_thread(Path(path).read_text, encoding="utf-8")
        return await self.feed_lines(text.splitlines(), interval_s)

    async def feed_stdin(self, stream: IO[str] | IO[bytes] | None = None) -> None:
        """Send each typed line until EOF. ``stream`` defaults to stdin (any pipe/tty/file works).

        Pipes and ttys are read on the loop (a thread stuck in readline would hang shutdown);
        regular files cannot be polled, never block, and are read in a thread instead.
        """
        src = sys.stdin if stream is None else stream
        fd = os.dup(src.fileno())
        if stat.S_ISREG(os.fstat(fd).st_mode):
            with os.fdopen(fd, "rb") as f:
                lines = await asyncio.to_thread(f.readlines)
            await self.feed_lines(b.decode("utf-8", "replace") for b in lines)
            return
        was_blocking = os.get_blocking(fd)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
        )
        try:
            while line := await reader.readline():
                text = line.decode("utf-8", "replace").rstrip("\r\n")
                if text.strip() and self._master is not None:
                    self.send(text)
        finally:
            transport.close()
            # the dup shares the file description with stdin: leave the terminal as we found it
            with contextlib.suppress(OSError):
                os.set_blocking(src.fileno(), was_blocking)


async def _main(args: argparse.Namespace) -> int:
    sc = SimScanner(
        Path(args.link), terminator={"CR": b"\r", "LF": b"\n", "CRLF": b"\r\n", "TAB": b"\t"}[args.terminator]
    )
    await sc.start()
    print(
        f"scanner at {args.link} -> {sc.slave_name}; point a serial reader's `port` at the link", flush=True
    )
    try:
        if args.file:
            n = await sc.feed_file(Path(args.file), args.interval)
            print(f"sent {n} lines", flush=True)
            await asyncio.sleep(args.linger)
        else:
            print("type a code and press Enter; Ctrl-D ends", flush=True)
            await sc.feed_stdin()
    finally:
        await sc.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edge.sim.scanner", description=__doc__.splitlines()[0])
    ap.add_argument("link", help="path of the symlink the gateway's reader config points at")
    ap.add_argument("-f", "--file", help="send the lines of this file instead of reading stdin")
    ap.add_argument("--interval", type=float, default=0.0, help="seconds between lines of --file")
    ap.add_argument("--linger", type=float, default=1.0, help="seconds to keep the pty after --file")
    ap.add_argument("--terminator", choices=["CR", "LF", "CRLF", "TAB"], default="CR")
    try:
        return asyncio.run(_main(ap.parse_args(argv)))
    except KeyboardInterrupt:
        return 130
    except FileExistsError as exc:
        print(exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
