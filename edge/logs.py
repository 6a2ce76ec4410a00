"""structlog set-up: JSON lines for journald (no tty), readable console in a terminal.

Two rules a gate needs from its log:
- Logging never raises into its caller. The log goes to stderr, which the daemon does not control: a
  `| tee` whose reader died (EPIPE), `2>/dev/full` (ENOSPC), a stalled journald. A log call sits in the
  Modbus worker, the door timers and the shutdown path, so an exception there would leave a door
  dead. Lines are written straight to the file descriptor by :class:`SafeSink`, which drops (and
  counts) what it cannot write, never buffers it and never raises.
- One JSON object per line, always. Libraries log through the standard ``logging`` module (pymodbus
  dumps frames over several lines, asyncio prints tracebacks): those records are rendered by the same
  structlog processors into the same sink, and uncaught exceptions in threads, tasks and ``main`` too.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
from typing import Any

import structlog
import structlog.tracebacks

_LIBRARY_LOGGERS = ("pymodbus", "paho", "asyncio", "aiohttp", "nfc", "urllib3")


class SafeSink:
    """Write-only text sink on a raw file descriptor that never raises and never blocks on a dead pipe.

    Each ``write`` is one ``os.write`` loop of whole bytes (no Python-level buffer that could fail
    again at exit). Failures are counted in ``dropped``; after a broken pipe the sink stops trying
    (the reader is gone for good), after other errors (a full disk) it keeps trying.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.dropped = 0
        self.broken = False
        self._lock = threading.Lock()  # lines from worker threads must not interleave

    def write(self, text: str) -> int:
        if self.broken:
            self.dropped += 1
            return len(text)
        data = text.encode("utf-8", "backslashreplace")
        try:
            with self._lock:
                view = memoryview(data)
                while view:
                    n = os.write(self.fd, view)
                    view = view[n:]
        except BrokenPipeError:
            self.broken = True
            self.dropped += 1
        except (OSError, ValueError):
            self.dropped += 1
        return len(text)

    def flush(self) -> None:
        """Nothing is buffered."""

    def isatty(self) -> bool:
        try:
            return os.isatty(self.fd)
        except OSError:
            return False

    def fileno(self) -> int:
        return self.fd


class _SafeTextStream(io.TextIOBase):
    """Replacement for sys.stdout / sys.stderr: prints and tracebacks land in a SafeSink, so neither a
    print nor the interpreter's final flush at exit can fail (a failing final flush makes Python exit 120)."""

    def __init__(self, sink: SafeSink) -> None:
        super().__init__()
        self._sink = sink

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        return self._sink.write(s)

    def isatty(self) -> bool:
        return self._sink.isatty()

    def fileno(self) -> int:
        return self._sink.fileno()


class _SinkLogger:
    """structlog logger writing one rendered line per call to a SafeSink (its methods never raise)."""

    def __init__(self, sink: SafeSink) -> None:
        self._sink = sink

    def msg(self, message: str) -> None:
        self._sink.write(message + "\n")

    log = debug = info = warn = warning = error = critical = exception = fatal = failure = err = msg


class _SinkLoggerFactory:
    def __init__(self, sink: SafeSink) -> None:
        self._sink = sink

    def __call__(self, *args: Any) -> _SinkLogger:
        return _SinkLogger(self._sink)


class _SinkHandler(logging.Handler):
    """stdlib logging -> the sink; a formatting or write problem is swallowed, never printed."""

    def __init__(self, sink: SafeSink) -> None:
        super().__init__()
        self._sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._sink.write(self.format(record) + "\n")
        except Exception:
            self._sink.dropped += 1

    def handleError(self, record: logging.LogRecord) -> None:
        self._sink.dropped += 1


_sink: SafeSink | None = None


def sink() -> SafeSink | None:
    """The active sink (``dropped`` tells how many lines could not be written), once set up."""
    return _sink


def setup_logging(level: str = "info", fmt: str = "auto", *, fd: int | None = None) -> SafeSink:
    """``fmt``: auto (console on a tty, JSON otherwise), json or console. Logs go to ``fd`` (stderr)."""
    global _sink
    out = SafeSink(fd if fd is not None else _stderr_fd())
    _sink = out
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    lvl = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: list[structlog.typing.Processor]
    if use_json:
        # Tracebacks as data, without frame locals: on the decision path those hold raw tokens, card
        # numbers and plates, which never go into a log line (events mask them; tokens go by jti).
        tracebacks = structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        )
        renderer = [tracebacks, structlog.processors.JSONRenderer()]
    else:
        renderer = [structlog.dev.ConsoleRenderer(colors=out.isatty())]
    structlog.configure(
        processors=[*shared, *renderer],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=_SinkLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
    _route_stdlib(out, lvl, shared, renderer)
    if fd is None:
        safe = _SafeTextStream(out)
        sys.stderr = safe
        if not _is_tty(1):
            sys.stdout = _SafeTextStream(SafeSink(1))
    _route_uncaught()
    return out


def _stderr_fd() -> int:
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return 2


def _is_tty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def _route_stdlib(
    out: SafeSink, lvl: int, shared: list[structlog.typing.Processor], renderer: list[structlog.typing.Processor]
) -> None:
    """Every library's ``logging`` records through the same processors: one JSON object per line."""
    logging.raiseExceptions = False  # never print "--- Logging error ---" to a broken stderr
    handler = _SinkHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, structlog.stdlib.ExtraAdder(), *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
        )
    )
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(lvl)
    for name in _LIBRARY_LOGGERS:
        lib = logging.getLogger(name)
        for h in list(lib.handlers):  # a library's own handler would print past the renderer
            lib.removeHandler(h)
        lib.propagate = True
        lib.setLevel(lvl if lvl <= logging.DEBUG else max(lvl, logging.WARNING))  # debug: frame dumps too
    logging.captureWarnings(True)


def _route_uncaught() -> None:
    """Tracebacks that would go raw to stderr become one JSON log line each."""
    log = structlog.get_logger("edge.uncaught")

    def excepthook(exc_type: type[BaseException], exc: BaseException, tb: object) -> None:
        log.critical("uncaught_exception", exc_info=(exc_type, exc, tb))

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        thread = args.thread.name if args.thread is not None else None
        log.error(
            "thread_exception", thread=thread, exc_info=(args.exc_type, args.exc_value, args.exc_traceback)
        )

    sys.excepthook = excepthook  # type: ignore[assignment]
    threading.excepthook = thread_hook


def loop_exception_handler(loop: object, context: dict[str, Any]) -> None:
    """asyncio's handler for errors nobody awaited (a task that died unobserved, a failing callback)."""
    exc = context.get("exception")
    fields: dict[str, Any] = {"message": context.get("message")}
    task = context.get("task") or context.get("future")
    if task is not None:
        fields["task"] = getattr(task, "get_name", lambda: repr(task))()
    if isinstance(exc, BaseException):
        fields["exc_info"] = exc
    structlog.get_logger("edge.asyncio").error("asyncio_error", **fields)

