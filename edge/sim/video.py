"""Simulated cameras for tests, benches and demos: QR frames as a phone held up to a camera looks
(warped, blurred, noisy), video files written with OpenCV, and an MJPEG stream served over HTTP.

Everything is generated, so a test controls exactly which frame shows which code and when.
"""

from __future__ import annotations

import http.server
import socket
import socketserver
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import segno

WIDTH, HEIGHT = 640, 480
BACKGROUND = 150  # a grey wall: codes are dark modules on white, as on a phone screen


@dataclass(frozen=True)
class Look:
    """How a code appears in a frame: centre and size in pixels, tilt and blur/noise strength."""

    cx: float = WIDTH / 2
    cy: float = HEIGHT / 2
    size: float = 300.0  # side of the code including its quiet zone
    perspective: float = 0.0  # 0..~0.15: how far the far corners move in (fraction of size)
    rotate_deg: float = 0.0
    blur: float = 0.0  # Gaussian sigma, pixels
    noise: float = 0.0  # Gaussian noise sigma, grey levels
    seed: int = 0


def blank_frame(noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """A 640x480 BGR frame with no code in it."""
    grey = np.full((HEIGHT, WIDTH), BACKGROUND, np.uint8)
    return cv2.cvtColor(_noisy(grey, noise, seed), cv2.COLOR_GRAY2BGR)


def qr_frame(text: str, look: Look = Look(), *, error: str = "m") -> np.ndarray:
    """A 640x480 BGR frame showing ``text`` as a QR code placed, warped and degraded as ``look`` says."""
    qr = segno.make(text, error=error, micro=False)
    modules = np.pad(np.array(qr.matrix, dtype=np.uint8), 4)  # the 4-module quiet zone
    code = np.where(modules == 1, 0, 255).astype(np.uint8)
    n = code.shape[0]
    src = np.float32([[0, 0], [n, 0], [n, n], [0, n]])
    dst = _corners(look)
    m = cv2.getPerspectiveTransform(src, dst)
    # Warp a mask with the code so the background stays untouched outside the code.
    warped = cv2.warpPerspective(code, m, (WIDTH, HEIGHT), flags=cv2.INTER_NEAREST, borderValue=0)
    mask = cv2.warpPerspective(np.full_like(code, 255), m, (WIDTH, HEIGHT), flags=cv2.INTER_NEAREST)
    grey = np.full((HEIGHT, WIDTH), BACKGROUND, np.uint8)
    grey[mask > 0] = warped[mask > 0]
    if look.blur > 0:
        grey = cv2.GaussianBlur(grey, (0, 0), look.blur)
    return cv2.cvtColor(_noisy(grey, look.noise, look.seed), cv2.COLOR_GRAY2BGR)


def _corners(look: Look) -> np.ndarray:
    h = look.size / 2
    p = look.perspective * look.size
    # The top edge is further away: its corners move in by p, as a phone tilted back.
    pts = np.float32([[-h + p, -h], [h - p, -h], [h, h], [-h, h]])
    a = np.deg2rad(look.rotate_deg)
    rot = np.float32([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return (pts @ rot.T + np.float32([look.cx, look.cy])).astype(np.float32)


def _noisy(grey: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    if sigma <= 0:
        return grey
    rng = np.random.default_rng(seed)
    noisy = grey.astype(np.float32) + rng.normal(0, sigma, grey.shape).astype(np.float32)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def mild_look(rng: np.random.Generator, seed: int) -> Look:
    """A random mild look: the bench's blur/perspective set (a phone held steadily, 20-40 cm away)."""
    return Look(
        cx=WIDTH / 2 + rng.uniform(-80, 80),
        cy=HEIGHT / 2 + rng.uniform(-40, 40),
        size=rng.uniform(280, 380),
        perspective=rng.uniform(0, 0.08),
        rotate_deg=rng.uniform(-20, 20),
        blur=rng.uniform(0, 1.0),
        noise=rng.uniform(0, 6),
        seed=seed,
    )


# --- video files ---------------------------------------------------------------------------------


def write_video(path: Path, frames: Iterable[np.ndarray], fps: float) -> Path:
    """Write BGR frames as an MJPG AVI (decodable by every OpenCV FFmpeg build, cheap to decode)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise RuntimeError(f"cannot write video {path}")
    try:
        for frame in frames:
            writer.write(frame)
    finally:
        writer.release()
    return path


def scenes(parts: Sequence[tuple[np.ndarray, float]], fps: float) -> list[np.ndarray]:
    """``[(frame, seconds), ...]`` -> the frame list of a video at ``fps`` (each scene held that long)."""
    out: list[np.ndarray] = []
    for frame, seconds in parts:
        out.extend([frame] * max(1, round(seconds * fps)))
    return out


# --- MJPEG over HTTP -------------------------------------------------------------------------------

BOUNDARY = b"frame"


class MjpegServer:
    """An IP camera: serves the frame last given to :meth:`show` as multipart/x-mixed-replace JPEGs at
    ``fps`` on 127.0.0.1, from threads. :meth:`stop` drops every client (a stream cut off) and
    :meth:`start` serves again on the same port (the camera is back)."""

    def __init__(self, port: int, fps: float = 25.0, frame: np.ndarray | None = None) -> None:
        self.port = port
        self.fps = fps
        self._lock = threading.Lock()
        self._jpeg = b""
        self._version = 0
        self.first_sent: dict[int, float] = {}  # show() version -> perf_counter when its first frame went out
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._clients: set[socket.socket] = set()
        self.show(blank_frame() if frame is None else frame)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def show(self, frame: np.ndarray) -> int:
        """Put ``frame`` in view from the next sent frame on; returns its version (see ``first_sent``)."""
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        with self._lock:
            self._jpeg = buf.tobytes()
            self._version += 1
            return self._version

    def _current(self) -> tuple[bytes, int]:
        with self._lock:
            return self._jpeg, self._version

    def start(self) -> MjpegServer:
        self._server = _Server(("127.0.0.1", self.port), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, name="mjpeg-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            clients = list(self._clients)
        for sock in clients:  # cut the streams: the client sees the connection close
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> MjpegServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def _handler(cam: MjpegServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            with cam._lock:
                cam._clients.add(self.connection)
            period = 1.0 / cam.fps
            next_t = time.perf_counter()
            try:
                while cam._server is not None:
                    jpeg, version = cam._current()
                    head = b"--%s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % (
                        BOUNDARY,
                        len(jpeg),
                    )
                    self.wfile.write(head + jpeg + b"\r\n")
                    self.wfile.flush()
                    cam.first_sent.setdefault(version, time.perf_counter())
                    next_t += period
                    time.sleep(max(0.0, next_t - time.perf_counter()))
            except OSError:
                pass  # the client went away or the server cut the stream
            finally:
                with cam._lock:
                    cam._clients.discard(self.connection)

    return Handler
