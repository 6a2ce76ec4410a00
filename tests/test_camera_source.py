"""The camera reader's source handling with real parts (issue 8): a lost source retried with a doubling
backoff, the decode rate capped at ``fps`` whatever the camera sends, ``loop: true`` replaying a file,
and ``decoder: auto`` falling back to pyzbar when zxing-cpp cannot be imported."""

from __future__ import annotations

import asyncio
import itertools
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from drivers.camera_decode import make_decoder
from drivers.camera_source import FrameSlot, Grabber
from edge.sim.video import MjpegServer, blank_frame, qr_frame
from tests.support.gateway import Signer
from tests.support.modbus import eventually, free_port
from tests.test_camera import MILD, camera, gateway, granted, video


def test_a_lost_source_is_retried_with_a_doubling_backoff(tmp_path: Path) -> None:
    """Each failed open reports offline, then waits reconnect_s, 2x, 4x...: a dead camera is not
    hammered (12 attempts in 2.5 s without the backoff, 4 with it)."""
    attempts: list[float] = []
    lock = threading.Lock()

    def status(online: bool, error: str | None) -> None:
        assert not online and error is not None and "no such file" in error
        with lock:
            attempts.append(time.monotonic())

    grabber = Grabber(str(tmp_path / "gone.avi"), loop=False, reconnect_s=0.2, slot=FrameSlot(10),
                      status=status, name="test-grab")  # fmt: skip
    grabber.start()
    time.sleep(2.5)
    grabber.stop()
    assert grabber.join(5)
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert 2 <= len(attempts) <= 4, attempts
    for i, gap in enumerate(gaps):
        assert gap >= 0.2 * 2**i * 0.95, f"retry {i + 1} after {gap:.3f} s"


async def test_decoding_is_capped_at_fps_whatever_the_camera_sends(tmp_path: Path) -> None:
    signer = Signer()
    with MjpegServer(free_port(), fps=30, frame=blank_frame(noise=3)) as server:
        async with gateway(tmp_path, signer, {"cam": {"source": server.url, "fps": 4}}) as gw:
            reader = camera(gw)
            assert await eventually(lambda: reader.online and reader.frames_decoded > 0, timeout=10)
            start, t0 = reader.frames_decoded, time.monotonic()
            await asyncio.sleep(2.0)  # let it run
            n, spent = reader.frames_decoded - start, time.monotonic() - t0
            assert 1 <= n <= 4 * spent + 2, f"{n} frames decoded in {spent:.2f} s at fps 4 (sent at 30)"


async def test_loop_true_plays_a_file_again_and_a_code_counts_again_after_its_hold_off(tmp_path: Path) -> None:
    signer = Signer()
    path = video(tmp_path, [(qr_frame(signer.code("j-a", sub="visitor:a", uses=5), MILD), 0.4),
                            (blank_frame(), 0.6)])  # fmt: skip
    cfg = {"source": path, "fps": 10, "loop": True, "hold_off_s": 0.3}
    async with gateway(tmp_path, signer, {"cam": cfg}) as gw:
        reader = camera(gw)
        assert await eventually(lambda: len(granted(gw.data)) >= 3, timeout=15)  # type: ignore[attr-defined]
        assert not reader.finished and reader.online
        assert set(granted(gw.data)) == {"visitor:a"}  # type: ignore[attr-defined]


async def test_auto_falls_back_to_pyzbar_when_zxing_cannot_be_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "zxingcpp", None)  # import zxingcpp now fails, as when not installed
    name, decode = make_decoder("auto")
    assert name == "zbar"
    signer = Signer()
    code = signer.code("j-z", sub="visitor:z")
    gray = qr_frame(code, MILD)
    assert code in decode(gray if gray.ndim == 2 else np.ascontiguousarray(gray[..., 0]))
    path = video(tmp_path, [(blank_frame(), 0.2), (qr_frame(code, MILD), 0.6), (blank_frame(), 0.2)])
    async with gateway(tmp_path, signer, {"cam": {"source": path, "fps": 10}}) as gw:
        reader = camera(gw)
        assert await eventually(lambda: reader.finished, timeout=15)
        assert reader.decoder_name == "zbar"
        assert await eventually(lambda: granted(gw.data) == ["visitor:z"], timeout=3)  # type: ignore[attr-defined]
