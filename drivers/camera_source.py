"""Frame grabbing for camera readers: opens a V4L2 device, a video file or a stream URL with OpenCV in
a worker thread, reconnects with backoff, and hands the newest frame to the decoder through a slot.

The grabber reads every frame the camera sends (a V4L2 queue or a TCP stream left unread fills up and
the picture falls seconds behind) but converts one to pixels only when the decoder wants it, which
caps the CPU at the configured frame rate. OpenCV is imported only here and only when a camera reader
starts, and its own logging is silenced: the gateway's log lines stay one JSON object each.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

BACKOFF_MAX_S = 30.0
IO_TIMEOUT_MS = 5000  # a stream that stops sending without closing is lost after this long
FILE_FPS_FALLBACK = 25.0

StatusFn = Callable[[bool, "str | None"], None]


def is_file_source(source: int | str) -> bool:
    """A video file (played at its own frame rate) rather than a device or a stream URL."""
    return (
        isinstance(source, str)
        and not source.isdigit()
        and not source.startswith("/dev/")
        and "://" not in source
    )


def load_cv2() -> Any:
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg quiet: no raw lines on stderr
    os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    cv2.setNumThreads(1)  # one camera = one decoder core at most; the box has two for everything
    return cv2


def open_capture(source: int | str) -> tuple[Any, str | None]:
    """(an opened cv2.VideoCapture, None) or (None, why not)."""
    cv2 = load_cv2()
    if isinstance(source, int) or source.isdigit():
        cap = cv2.VideoCapture(int(source), cv2.CAP_V4L2)
    elif source.startswith("/dev/"):
        cap = cv2.VideoCapture(source, cv2.CAP_V4L2)
    else:
        if is_file_source(source) and not os.path.exists(source):
            return None, f"no such file: {source}"
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, IO_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, IO_TIMEOUT_MS,
                  cv2.CAP_PROP_N_THREADS, 1]  # fmt: skip
        cap = cv2.VideoCapture(source, cv2.CAP_FFMPEG, params)
    if not cap.isOpened():
        cap.release()
        return None, f"cannot open {source}"
    return cap, None


class FrameSlot:
    """The newest frame, handed from the grabber to the decoder; also carries the decoder's frame-rate
    cap, so the grabber converts a frame to pixels only when one is due."""

    def __init__(self, fps: float) -> None:
        self._cond = threading.Condition()
        self._item: tuple[np.ndarray, float] | None = None
        self._period = 1.0 / fps
        self._due = 0.0
        self._closed = False

    def wanted(self, now: float) -> bool:
        return self._item is None and now >= self._due

    def put(self, frame: np.ndarray, t: float) -> None:
        with self._cond:
            self._item = (frame, t)
            self._cond.notify()

    def take(self, timeout: float) -> tuple[np.ndarray, float] | None:
        """The frame to decode (and schedule the next one), or None on timeout/close."""
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            if item is not None:
                now = time.perf_counter()
                self._due = max(self._due + self._period, now - self._period / 2)
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class Grabber:
    """Runs the capture in a thread: open, read, hand frames to ``slot``, reconnect with backoff.

    ``status(online, error)`` is called from the thread on every change. A live source (device, URL)
    that stops delivering frames is lost: offline, then retried after ``reconnect_s``, doubling up to
    30 s. A file plays at its own frame rate; at its end it starts again (``loop``) or the grabber
    idles, online: a demo video that has ended is not a broken camera.
    """

    def __init__(self, source: int | str, *, loop: bool, reconnect_s: float, slot: FrameSlot,
                 status: StatusFn, name: str) -> None:  # fmt: skip
        self.source = source
        self.loop = loop
        self.reconnect_s = reconnect_s
        self.slot = slot
        self._status = status
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.ended = threading.Event()  # a file played to its end (loop: false)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        backoff = self.reconnect_s
        while not self._stop.is_set():
            cap, error = open_capture(self.source)
            if cap is not None:
                try:
                    error = self._pump(cap)
                except Exception as exc:  # OpenCV raising: treat like a lost camera, never die
                    error = f"capture failed: {exc}"
                finally:
                    cap.release()
                if error is None:  # a file ended or stop() was called
                    if self._stop.is_set() or not self.loop:
                        break
                    continue
                if error == "":
                    backoff = self.reconnect_s  # it was online: start the backoff over
                    error = "no frame (camera unplugged or stream ended)"
            if self._stop.is_set():
                break
            self._status(False, error)
            self._stop.wait(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)
        if self.ended.is_set():
            self._stop.wait()  # idle until stopped, reported online

    def _pump(self, cap: Any) -> str | None:
        """Read until stopped (None), a file's end (None) or a lost live source ("" once it was
        online, else the reason)."""
        is_file = is_file_source(self.source)
        period = 1.0 / (cap.get(load_cv2().CAP_PROP_FPS) or FILE_FPS_FALLBACK) if is_file else 0.0
        start = time.perf_counter()
        n = 0
        online = False
        while not self._stop.is_set():
            if is_file:
                delay = start + n * period - time.perf_counter()
                if delay > 0 and self._stop.wait(delay):
                    return None
                n += 1
            if not cap.grab():
                if is_file and online:
                    if not self.loop:
                        self.ended.set()
                    return None
                return "" if online else f"no frame from {self.source}"
            t = time.perf_counter()
            if not online:
                online = True
                self._status(True, None)
            if self.slot.wanted(t):
                ok, frame = cap.retrieve()
                if ok and frame is not None:
                    self.slot.put(frame, t)
        return None
