"""Camera QR reader with real parts: generated video files and an MJPEG stream over HTTP on 127.0.0.1
read by OpenCV, codes decided by the in-process gateway, grants seen as writes at a pymodbus board and
as rows in the outbox on disk."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from drivers.camera import CameraConfig, CameraReader
from edge.app import Gateway
from edge.config import ConfigError, load_config
from edge.sim.relay_board import RelayBoardSim
from edge.sim.video import Look, MjpegServer, blank_frame, qr_frame, scenes, write_video
from tests.support.gateway import Signer, gateway_config
from tests.support.modbus import eventually, free_port, tcp_board

FPS = 20  # of the generated videos
MILD = Look(perspective=0.05, rotate_deg=8, blur=0.7, noise=3)


def rows(data_dir: Path) -> list[dict[str, Any]]:
    con = sqlite3.connect(data_dir / "outbox.db")
    try:
        return [json.loads(r[0]) for r in con.execute("SELECT body FROM events ORDER BY seq")]
    finally:
        con.close()


def granted(data_dir: Path, reader: str | None = None) -> list[str]:
    return [
        r["subject"] for r in rows(data_dir) if r["result"] == "granted" and reader in (None, r["reader"])
    ]


def video(tmp_path: Path, parts: list[tuple[np.ndarray, float]], name: str = "cam.avi") -> str:
    return str(write_video(tmp_path / name, scenes(parts, FPS), FPS))


@contextlib.asynccontextmanager
async def gateway(
    tmp_path: Path, signer: Signer, readers: dict[str, dict[str, Any]]
) -> AsyncIterator[Gateway]:
    """The gateway with one door on a pymodbus board; yields it with ``gw.board`` and ``gw.data``."""
    port = free_port()
    board = RelayBoardSim(device_ids=[1])
    async with tcp_board(board, port):
        cfg = gateway_config(
            tmp_path,
            signer=signer,
            bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": port, "timeout": 0.3, "retries": 0},
            readers={rid: {"type": "camera", **r} for rid, r in readers.items()},
        )
        gw = Gateway(load_config(cfg))
        gw.board = board  # type: ignore[attr-defined]
        gw.data = tmp_path / "data"  # type: ignore[attr-defined]
        await gw.start()
        try:
            yield gw
        finally:
            await gw.stop()


def camera(gw: Gateway, rid: str = "cam") -> CameraReader:
    reader = gw.readers[rid]
    assert isinstance(reader, CameraReader)
    return reader


@pytest.mark.parametrize("decoder", ["zxing", "zbar"])
async def test_each_code_in_a_video_is_decided_once(tmp_path: Path, decoder: str) -> None:
    signer = Signer()
    codes = {s: signer.code(f"j-{s}", sub=f"visitor:{s}") for s in "abc"}
    blank = blank_frame(noise=3)
    path = video(tmp_path, [
        (blank, 0.3), (qr_frame(codes["a"], MILD), 0.7), (blank, 0.3),
        (qr_frame(codes["b"], Look(cx=250, size=320, blur=0.5)), 0.7), (blank, 0.3),
        (qr_frame("hello, not a token", MILD), 0.4), (blank, 0.2),
        (qr_frame(codes["c"], Look(cx=400, cy=260, rotate_deg=-15)), 0.7), (blank, 0.3),
    ])  # fmt: skip
    async with gateway(tmp_path, signer, {"cam": {"source": path, "decoder": decoder, "fps": 10}}) as gw:
        reader = camera(gw)
        assert await eventually(lambda: reader.finished, timeout=15)
        assert reader.decoder_name == decoder
        assert reader.online  # a file that ended is not a lost camera
        assert await eventually(lambda: len(gw.board.writes_to(1, 0x0200)) >= 3, timeout=3)  # type: ignore[attr-defined]
        assert sorted(granted(gw.data)) == ["visitor:a", "visitor:b", "visitor:c"]  # type: ignore[attr-defined]
        malformed = [r for r in rows(gw.data) if r["reason"] == "malformed"]  # type: ignore[attr-defined]
        assert [(r["reader"], r["method"]) for r in malformed] == [("cam", "qr")]
        assert len(gw.board.writes_to(1, 0x0200)) == 3  # type: ignore[attr-defined]


async def test_hold_off_counts_a_code_again_only_after_it_left_the_view_long_enough(tmp_path: Path) -> None:
    signer = Signer()
    a = qr_frame(signer.code("j-a", sub="visitor:a"), MILD)
    blank = blank_frame()
    # Shown, away 0.4 s (< hold_off_s: the same scan), shown, away 1.6 s (> hold_off_s), shown again.
    path = video(tmp_path, [(a, 0.5), (blank, 0.4), (a, 0.5), (blank, 1.6), (a, 0.5), (blank, 0.2)])
    async with gateway(tmp_path, signer, {"cam": {"source": path, "fps": 10, "hold_off_s": 1.0}}) as gw:
        assert await eventually(lambda: camera(gw).finished, timeout=15)
        assert await eventually(lambda: len(granted(gw.data)) >= 2, timeout=3)  # type: ignore[attr-defined]
        assert granted(gw.data) == ["visitor:a", "visitor:a"]  # type: ignore[attr-defined]


async def test_roi_excludes_a_code_outside_it(tmp_path: Path) -> None:
    signer = Signer()
    left = qr_frame(signer.code("j-l", sub="visitor:left"), Look(cx=160, size=260))
    right = qr_frame(signer.code("j-r", sub="visitor:right"), Look(cx=480, size=260))
    blank = blank_frame()
    path = video(tmp_path, [(blank, 0.2), (left, 0.6), (blank, 0.2), (right, 0.6), (blank, 0.2)])
    readers = {  # the same file: one camera sees the whole frame (the left code is readable), one its right half
        "cam-all": {"source": path, "fps": 10},
        "cam-right": {"source": path, "fps": 10, "roi": [320, 0, 320, 480]},
    }
    async with gateway(tmp_path, signer, readers) as gw:
        assert await eventually(lambda: all(camera(gw, r).finished for r in readers), timeout=15)
        assert await eventually(lambda: len(granted(gw.data)) >= 3, timeout=3)  # type: ignore[attr-defined]
        assert sorted(granted(gw.data, "cam-all")) == ["visitor:left", "visitor:right"]  # type: ignore[attr-defined]
        assert granted(gw.data, "cam-right") == ["visitor:right"]  # type: ignore[attr-defined]


async def test_mjpeg_stream_decided_lost_offline_and_back_online(tmp_path: Path) -> None:
    signer = Signer()
    server = MjpegServer(free_port(), fps=20).start()
    try:
        cfg = {"source": server.url, "fps": 10, "reconnect_s": 0.2}
        async with gateway(tmp_path, signer, {"cam": cfg}) as gw:
            data: Path = gw.data  # type: ignore[attr-defined]
            assert await eventually(lambda: camera(gw).online, timeout=10)
            server.show(qr_frame(signer.code("j-1", sub="visitor:1"), MILD))
            assert await eventually(lambda: granted(data) == ["visitor:1"], timeout=5)

            server.stop()
            assert await eventually(lambda: not camera(gw).online, timeout=10)
            assert await eventually(lambda: any(r["reason"] == "device_offline" for r in rows(data)))
            offline = [r for r in rows(data) if r["reason"] == "device_offline"]
            assert [(r["device"], r["result"]) for r in offline] == [("cam", "alarm")]

            server.show(qr_frame(signer.code("j-2", sub="visitor:2"), MILD))
            server.start()
            assert await eventually(lambda: camera(gw).online, timeout=10)
            assert await eventually(lambda: granted(data) == ["visitor:1", "visitor:2"], timeout=5)
            assert [r["device"] for r in rows(data) if r["reason"] == "device_online"] == ["cam"]
            # the event is committed before the relay is driven: wait for the write itself
            assert await eventually(lambda: len(gw.board.writes_to(1, 0x0200)) == 2)  # type: ignore[attr-defined]
    finally:
        server.stop()


def test_config_keys_validated_and_relative_file_source_resolved(tmp_path: Path) -> None:
    cfg = CameraConfig.model_validate({"type": "camera", "source": "videos/gate.avi"})
    assert (cfg.decoder, cfg.fps, cfg.roi, cfg.hold_off_s, cfg.reconnect_s, cfg.loop) == (
        "auto",
        10,
        None,
        3,
        2,
        False,
    )
    cfg.resolve_paths(tmp_path)
    assert cfg.source == str(tmp_path / "videos" / "gate.avi")
    for source in (0, "/dev/video0", "rtsp://10.0.0.5/stream"):
        live = CameraConfig.model_validate({"type": "camera", "source": source})
        live.resolve_paths(tmp_path)
        assert live.source == source
    path = gateway_config(
        tmp_path, signer=Signer(), bus={"type": "modbus_tcp", "host": "127.0.0.1"},
        readers={"cam": {"type": "camera", "source": 0, "roi": [0, 0, 0, 480], "decoder": "opencv"}},
    )  # fmt: skip
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert "readers.cam.roi" in text and "readers.cam.decoder" in text
