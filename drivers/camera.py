"""Camera QR reader (``type: camera``): a USB/V4L2 camera, an IP camera stream or a video file whose
frames are decoded for QR codes, each code decided once per showing.

Two worker threads per camera, so neither OpenCV nor the decoder can stall the event loop: the grabber
(drivers/camera_source.py) reads frames and reconnects; the decoder takes the newest frame at most
``fps`` times a second, crops it to ``roi``, decodes it (drivers/camera_decode.py) and debounces the
texts by ``hold_off_s``. Only codes that count cross to the loop (``call_soon_threadsafe``), stamped
with the capture time of their frame, so the event's latency starts when the camera saw the code.
Decoded text that is no token is presented anyway: the engine denies it ``malformed`` and the app
summarises it like scanner noise; content that is not UTF-8 is rejected here.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from drivers.camera_decode import Decode, DecoderName, DecoderUnavailable, HoldOff, make_decoder
from drivers.camera_source import FrameSlot, Grabber, is_file_source, load_cv2
from drivers.reader import Reader, ReaderEnv
from drivers.registry import register_reader
from edge.model import Method, Presentation

if TYPE_CHECKING:
    import numpy as np

log = structlog.get_logger(__name__)

JOIN_TIMEOUT_S = 6.0  # longer than the capture's I/O timeout (camera_source.IO_TIMEOUT_MS)


class CameraConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["camera"]
    source: Annotated[StrictInt, Field(ge=0)] | Annotated[str, Field(min_length=1)] = Field(
        description="V4L2 index, /dev/videoN, a video file, or an rtsp:// / http:// (MJPEG) URL"
    )
    loop: bool = Field(False, description="a file source: play once (then idle, online) or loop")
    decoder: DecoderName = Field("auto", description="auto: zxing-cpp when installed, else pyzbar")
    fps: float = Field(10, gt=0, le=60, description="frames decoded per second at most")
    roi: tuple[StrictInt, StrictInt, StrictInt, StrictInt] | None = Field(
        None, description="[x, y, w, h] in pixels: only this part of the frame is decoded"
    )
    hold_off_s: float = Field(3, ge=0, le=3600, description="a code counts again after out of view this long")
    reconnect_s: float = Field(2, gt=0, le=30, description="first retry of a lost camera (backoff to 30 s)")

    @field_validator("roi")
    @classmethod
    def _roi(cls, v: tuple[int, int, int, int] | None) -> tuple[int, int, int, int] | None:
        if v is not None and (v[0] < 0 or v[1] < 0 or v[2] <= 0 or v[3] <= 0):
            raise ValueError("roi is [x, y, w, h]: x, y >= 0 and w, h > 0")
        return v

    def resolve_paths(self, base: Path) -> None:
        """A relative file source is relative to the config file (edge/config.py calls this)."""
        if isinstance(self.source, str) and is_file_source(self.source) and not os.path.isabs(self.source):
            self.source = os.path.abspath(base / self.source)


class CameraReader(Reader):
    """One camera: grabber and decoder threads; presentations and status changes handed to the loop."""

    def __init__(self, reader_id: str, cfg: CameraConfig, env: ReaderEnv) -> None:
        super().__init__(reader_id)
        self.cfg = cfg
        self._env = env
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._slot: FrameSlot | None = None
        self._grabber: Grabber | None = None
        self._decoder_thread: threading.Thread | None = None
        self._holdoff = HoldOff(cfg.hold_off_s)
        self.decoder_name: str | None = None
        self.frames_decoded = 0  # read by benches and `edge status`-like tooling

    @property
    def online(self) -> bool:
        return self._status is not None and self._status[0]

    @property
    def method(self) -> Method:
        return "qr"

    @property
    def finished(self) -> bool:
        """A file source (``loop: false``) played to its end; the reader idles, online."""
        return self._grabber is not None and self._grabber.ended.is_set()

    async def start(self) -> None:
        """Start the threads; a missing decoder library is reported offline (start-up goes on)."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        try:
            self.decoder_name, decode = make_decoder(self.cfg.decoder)
        except DecoderUnavailable as exc:
            self._set_status(False, str(exc))
            return
        self._stop.clear()
        self._slot = FrameSlot(self.cfg.fps)
        self._grabber = Grabber(self.cfg.source, loop=self.cfg.loop, reconnect_s=self.cfg.reconnect_s,
                                slot=self._slot, status=self._post_status, name=f"camera-grab-{self.reader_id}")  # fmt: skip
        self._decoder_thread = threading.Thread(
            target=self._decode_loop, args=(decode,), name=f"camera-decode-{self.reader_id}", daemon=True
        )
        self._decoder_thread.start()
        self._grabber.start()
        log.info(
            "camera_started", reader=self.reader_id, source=str(self.cfg.source), decoder=self.decoder_name
        )

    async def stop(self) -> None:
        self._stop.set()
        grabber, thread, slot = self._grabber, self._decoder_thread, self._slot
        if grabber is not None:
            grabber.stop()
        if slot is not None:
            slot.close()

        def join() -> bool:
            ok = grabber.join(JOIN_TIMEOUT_S) if grabber is not None else True
            if thread is not None:
                thread.join(JOIN_TIMEOUT_S)
                ok = ok and not thread.is_alive()
            return ok

        if not await asyncio.to_thread(join):  # daemon threads: a wedged driver cannot block exit
            log.error("camera_stop_timeout", reader=self.reader_id)
        self._grabber = self._decoder_thread = self._slot = None
        self._loop = None

    # --- decoder thread ---------------------------------------------------------------------
    def _decode_loop(self, decode: Decode) -> None:
        cv2 = load_cv2()
        slot = self._slot
        assert slot is not None
        roi_warned = False
        while not self._stop.is_set():
            item = slot.take(0.5)
            if item is None:
                continue
            frame, t = item
            try:
                gray = _crop(frame, self.cfg.roi)
                if gray is None:
                    if not roi_warned:
                        log.warning(
                            "camera_roi_outside_frame", reader=self.reader_id, shape=list(frame.shape)
                        )
                        roi_warned = True
                    continue
                if gray.ndim == 3:
                    gray = cv2.cvtColor(gray, cv2.COLOR_BGR2GRAY)
                texts = decode(gray)
                self.frames_decoded += 1
                fresh = self._holdoff.new(texts, t) if texts else []
            except Exception as exc:  # a decoder bug on one frame must not stop the camera
                log.error("camera_decode_failed", reader=self.reader_id, error=str(exc))
                continue
            if fresh:
                self._post(self._deliver, fresh, t)

    # --- loop side --------------------------------------------------------------------------
    def _post(self, fn: object, *args: object) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(fn, *args)  # type: ignore[arg-type]
        except RuntimeError:  # the loop closed under us (shutdown): nothing left to tell
            pass

    def _post_status(self, online: bool, error: str | None) -> None:
        self._post(self._set_status, online, error)

    def _deliver(self, texts: list[str | bytes], t: float) -> None:
        if self._stop.is_set():
            return
        for text in texts:
            try:
                if isinstance(text, bytes):
                    self._env.reject(
                        self.reader_id, "malformed", f"QR content is not UTF-8 ({len(text)} bytes)"
                    )
                else:
                    self._env.present(Presentation("token", text, "qr", self.reader_id, t))
            except Exception as exc:
                log.exception("presentation_callback_failed", reader=self.reader_id, error=str(exc))

    def _set_status(self, online: bool, error: str | None) -> None:
        if (self._stop.is_set() and self._loop is None) or not self._status_changed(online, error):
            return
        if online:
            log.info("reader_online", reader=self.reader_id, source=str(self.cfg.source))
        else:
            log.warning("reader_offline", reader=self.reader_id, source=str(self.cfg.source), error=error)


def _crop(frame: np.ndarray, roi: tuple[int, int, int, int] | None) -> np.ndarray | None:
    """The ROI of the frame (clipped to it), or None when the ROI lies outside the frame."""
    if roi is None:
        return frame
    x, y, w, h = roi
    part = frame[y : y + h, x : x + w]
    return part if part.size else None


def _build(reader_id: str, cfg: CameraConfig, env: ReaderEnv) -> CameraReader:
    return CameraReader(reader_id, cfg, env)


register_reader("camera", CameraConfig, _build)
