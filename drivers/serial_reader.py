"""Line-oriented serial readers (QR scanners, RS-232/RS-485 card readers): config model and driver."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import termios
import time
from collections.abc import Callable
from typing import Literal

import serial
import structlog
from pydantic import BaseModel, ConfigDict, Field

from drivers.reader import Reader, ReaderEnv
from drivers.registry import register_reader
from edge.model import Method, Presentation
from edge.normalize import BadCredential, normalize_card, normalize_plate

log = structlog.get_logger(__name__)

Terminator = Literal["CR", "LF", "CRLF", "TAB"]


class SerialReaderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["serial"]
    port: str
    baud: int = Field(9600, gt=0)
    terminators: list[Terminator] = Field(default_factory=lambda: ["CR", "LF", "CRLF"], min_length=1)
    max_line: int = Field(1024, ge=8, le=65536, description="longest accepted line, bytes")
    content: Literal["qr", "card", "plate"] = Field(
        description="qr: lines are tokens; card: card numbers; plate: licence plates (a line is a plate)"
    )
    card_format: Literal["hex", "decimal"] = Field(
        "hex", description="card lines: hex UID or decimal number (no guessing: '12345678' is both)"
    )
    reopen_interval_s: float = Field(1.0, gt=0, description="how often to look for a vanished port")


# --- driver ----------------------------------------------------------------------------------

_TERMINATOR_BYTES: dict[str, bytes] = {"CR": b"\r", "LF": b"\n", "CRLF": b"\r\n", "TAB": b"\t"}
_EDGE_WHITESPACE = b" \t\r\n\x0b\x0c"
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
_C1 = re.compile("[\x80-\x9f]")
_READ_SIZE = 4096
_MAX_EMPTY_READS = 100

Overflow = int  # a frame that is an int: an over-long line of at least that many bytes was dropped


class LineFramer:
    """Splits a byte stream into lines by the configured terminators. Pure; no I/O.

    With both CR and LF (or CR and CRLF) enabled, CR LF gives one line: the LF right after a CR
    terminator is swallowed even when it arrives in the next read. A line longer than ``max_line``
    is reported once (as an int frame) and its bytes are dropped up to the next terminator.
    """

    def __init__(self, terminators: list[Terminator], max_line: int) -> None:
        names = set(terminators)
        # Longest first, so CRLF wins over CR when both are enabled.
        alts = [re.escape(_TERMINATOR_BYTES[t]) for t in ("CRLF", "CR", "LF", "TAB") if t in names]
        self._re = re.compile(b"|".join(alts))
        self._crlf = "CRLF" in names
        self._cr_only_crlf = self._crlf and "CR" not in names  # a trailing CR may start a CRLF
        self._max = max_line
        self._buf = b""
        self._skip_lf = False
        self._discarding = False

    def reset(self) -> None:
        """Forget any partial line (the port went away mid-line)."""
        self._buf = b""
        self._skip_lf = False
        self._discarding = False

    def feed(self, data: bytes) -> list[bytes | Overflow]:
        if self._skip_lf and data[:1] == b"\n":
            data = data[1:]
        self._skip_lf = False
        buf = self._buf + data if self._buf else data
        out: list[bytes | Overflow] = []
        pos = 0
        last = b""
        for m in self._re.finditer(buf):
            line = buf[pos : m.start()]
            pos, last = m.end(), m.group()
            if self._discarding:
                self._discarding = False  # the tail of an over-long line: already reported
            elif len(line) > self._max:
                out.append(len(line))
            elif line:
                out.append(line)
        rest = buf[pos:]
        # A CR terminator at the very end: an LF in the next read belongs to it (CR LF split).
        self._skip_lf = self._crlf and last == b"\r" and not rest
        # With CRLF-only framing a trailing CR may be the first half of the terminator: keep it.
        pending_cr = self._cr_only_crlf and rest.endswith(b"\r")
        if not self._discarding and len(rest) - pending_cr > self._max:
            out.append(len(rest))
            self._discarding = True
        if self._discarding:
            rest = b"\r" if pending_cr else b""
        self._buf = rest
        return out


def decode_line(raw: bytes) -> str:
    """Line bytes -> text, or ValueError saying why it is garbage. Edge whitespace is dropped (a
    scanner configured for CR+LF on a CR-only reader must still work); inner control bytes are not."""
    s = raw.strip(_EDGE_WHITESPACE)
    m = _CONTROL.search(s)
    if m is not None:
        raise ValueError(f"control byte 0x{m.group()[0]:02x} at offset {m.start()}")
    try:
        text = s.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 (byte 0x{s[exc.start]:02x} at offset {exc.start})") from None
    if _C1.search(text):
        raise ValueError("C1 control character")
    return text


class SerialReader(Reader):
    """One line-oriented serial reader: frames lines, turns them into Presentations, survives unplugs.

    Reads with the loop's ``add_reader`` on the port's fd (no thread, no polling): the bytes are
    handled on the loop the moment the kernel has them, which is the lowest latency available and
    keeps every callback on the loop thread. A vanished port is closed, reported offline and looked
    for again every ``reopen_interval_s`` until it is back. Nothing here raises into the loop.
    """

    def __init__(
        self,
        reader_id: str,
        cfg: SerialReaderConfig,
        on_presentation: Callable[[Presentation], object],
        on_reject: Callable[[str, str, str], None],
    ) -> None:
        super().__init__(reader_id)
        self.cfg = cfg
        self._on_presentation = on_presentation
        self._on_reject = on_reject
        self._framer = LineFramer(cfg.terminators, cfg.max_line)
        self._serial: serial.Serial | None = None
        self._fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reopen_task: asyncio.Task[None] | None = None
        self._running = False
        self._empty_reads = 0

    @property
    def online(self) -> bool:
        return self._fd is not None

    @property
    def method(self) -> Method:
        return {"qr": "qr", "card": "nfc", "plate": "plate"}[self.cfg.content]  # type: ignore[return-value]

    @property
    def rate_limit_exempt(self) -> bool:
        """A serial plate reader is a camera too: a queue of cars is no brute-force attack."""
        return self.cfg.content == "plate"

    async def start(self) -> None:
        """Open the port, or report it offline and keep looking: a missing scanner must not stop the
        gateway from starting."""
        if self._running:
            return
        self._running = True
        self._loop = asyncio.get_running_loop()
        if not self._open():
            self._schedule_reopen()

    async def stop(self) -> None:
        self._running = False
        task, self._reopen_task = self._reopen_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._close()

    # --- port handling --------------------------------------------------------------------
    def _open(self) -> bool:
        try:
            # pyserial opens O_NONBLOCK, sets raw mode and flushes stale input; exclusive=True takes
            # a flock so two gateway processes cannot split one scanner's bytes between them.
            port = serial.Serial(self.cfg.port, self.cfg.baud, timeout=0, exclusive=True)
        except (serial.SerialException, OSError, ValueError) as exc:
            self._set_status(False, _reason(exc))
            return False
        try:
            fd = port.fileno()
            assert self._loop is not None
            self._loop.add_reader(fd, self._readable)
        except Exception as exc:
            with contextlib.suppress(Exception):
                port.close()
            self._set_status(False, _reason(exc))
            return False
        self._serial, self._fd = port, fd
        self._framer.reset()
        self._empty_reads = 0
        log.info("reader_online", reader=self.reader_id, port=self.cfg.port)
        self._set_status(True, None)
        return True

    def _close(self) -> None:
        if self._fd is not None and self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._fd)
        if self._serial is not None:
            with contextlib.suppress(Exception):
                self._serial.close()
        self._serial, self._fd = None, None
        self._framer.reset()

    def _lost(self, reason: str) -> None:
        log.warning("reader_lost", reader=self.reader_id, port=self.cfg.port, error=reason)
        self._close()
        self._set_status(False, reason)
        if self._running:
            self._schedule_reopen()

    def _schedule_reopen(self) -> None:
        if self._reopen_task is None or self._reopen_task.done():
            assert self._loop is not None
            self._reopen_task = self._loop.create_task(self._reopen(), name=f"reader-reopen-{self.reader_id}")

    async def _reopen(self) -> None:
        while self._running and self._fd is None:
            await asyncio.sleep(self.cfg.reopen_interval_s)
            if self._running and self._fd is None:
                try:
                    self._open()
                except Exception as exc:  # never let the retry loop die
                    log.error("reader_reopen_failed", reader=self.reader_id, error=str(exc))

    def _set_status(self, online: bool, error: str | None) -> None:
        if self._status == (online, error):
            return
        if not online:  # logged before the listeners hear of it, as ever
            log.warning("reader_offline", reader=self.reader_id, port=self.cfg.port, error=error)
        self._status_changed(online, error)

    # --- data path --------------------------------------------------------------------------
    def _readable(self) -> None:
        fd = self._fd
        if fd is None:
            return
        try:
            data = os.read(fd, _READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # EIO: the pty master or the USB adapter is gone
            self._lost(_reason(exc))
            return
        t = time.perf_counter()
        if not data:
            # pyserial leaves VMIN=VTIME=0, so a tty read can return 0 bytes without EOF; a hung-up
            # tty (USB unplug, pty master closed) also returns 0 but fails every ioctl: ask it.
            self._empty_reads += 1
            try:
                termios.tcgetattr(fd)
            except (OSError, termios.error):
                self._lost("hung up (device gone)")
                return
            if self._empty_reads >= _MAX_EMPTY_READS:  # readable yet empty, again and again
                self._lost("end of file")
            return
        self._empty_reads = 0
        try:
            for frame in self._framer.feed(data):
                if isinstance(frame, int):
                    self._reject(f"line over {self.cfg.max_line} bytes ({frame}+ bytes dropped)")
                else:
                    self._line(frame, t)
        except Exception as exc:  # a bug in one line must not stop the reader
            log.exception("reader_line_failed", reader=self.reader_id, error=str(exc))

    def _line(self, raw: bytes, t: float) -> None:
        try:
            text = decode_line(raw)
        except ValueError as exc:
            self._reject(str(exc))
            return
        if not text:
            return  # whitespace only: treated like an empty line
        if self.cfg.content == "qr":
            pres = Presentation("token", text, "qr", self.reader_id, t)
        elif self.cfg.content == "plate":
            try:
                plate = normalize_plate(text)
            except BadCredential as exc:
                self._reject(str(exc), exc.reason)
                return
            pres = Presentation("plate", plate, "plate", self.reader_id, t)
        else:
            try:
                value = normalize_card(text, self.cfg.card_format)
            except BadCredential as exc:
                self._reject(str(exc), exc.reason)
                return
            pres = Presentation("card", value, "nfc", self.reader_id, t)
        try:
            self._on_presentation(pres)
        except Exception as exc:
            log.exception("presentation_callback_failed", reader=self.reader_id, error=str(exc))

    def _reject(self, detail: str, reason: str = "malformed") -> None:
        # Not logged here: the callback bounds the log lines and events of a noisy line (issue 6).
        try:
            self._on_reject(self.reader_id, reason, detail)
        except Exception as exc:
            log.exception("reject_callback_failed", reader=self.reader_id, error=str(exc))


def _reason(exc: BaseException) -> str:
    errno_ = getattr(exc, "errno", None)
    if isinstance(errno_, int) and errno_ in errno.errorcode:
        return f"{errno.errorcode[errno_]}: {getattr(exc, 'strerror', None) or exc}"
    return str(exc) or type(exc).__name__


def _build(reader_id: str, cfg: SerialReaderConfig, env: ReaderEnv) -> SerialReader:
    return SerialReader(reader_id, cfg, env.present, env.reject)


register_reader("serial", SerialReaderConfig, _build)
