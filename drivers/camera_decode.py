"""QR decoders for camera frames (zxing-cpp preferred, pyzbar the fallback) and the hold-off debouncer.

Both decoders take a greyscale numpy frame and return the texts of the QR codes in it; both release
the GIL inside their C code, so a decoder thread never stalls the event loop. zxing-cpp measured ~5x
faster than pyzbar here and reads tilted/blurred codes pyzbar misses, hence ``auto`` picks it when
installed. The libraries are imported only when a camera reader is built: a gateway without a
camera does not pay their memory.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import numpy as np

DecoderName = Literal["auto", "zxing", "zbar"]
Decode = Callable[["np.ndarray"], list["str | bytes"]]  # text, or bytes that are not UTF-8


class DecoderUnavailable(RuntimeError):
    """The configured decoder library is not installed (or its native library is missing)."""


def resolve_decoder(name: DecoderName) -> Literal["zxing", "zbar"]:
    """``auto`` -> zxing when zxing-cpp is importable, else zbar."""
    if name != "auto":
        return name
    return "zxing" if importlib.util.find_spec("zxingcpp") is not None else "zbar"


def make_decoder(name: DecoderName) -> tuple[Literal["zxing", "zbar"], Decode]:
    """The decoder function for ``name``; DecoderUnavailable when its library cannot be loaded."""
    chosen = resolve_decoder(name)
    try:
        return chosen, (_zxing() if chosen == "zxing" else _zbar())
    except (ImportError, OSError) as exc:  # pyzbar raises ImportError when libzbar0 is missing
        raise DecoderUnavailable(f"{chosen} decoder not available: {exc}") from exc


def _zxing() -> Decode:
    import zxingcpp

    fmt = zxingcpp.BarcodeFormat.QRCode
    plain = zxingcpp.TextMode.Plain

    def decode(gray: np.ndarray) -> list[str | bytes]:
        out: list[str | bytes] = []
        for code in zxingcpp.read_barcodes(gray, formats=fmt, text_mode=plain):
            if code.valid:
                out.append(_text(code.bytes))
        return out

    return decode


def _zbar() -> Decode:
    from pyzbar import pyzbar

    symbols = [pyzbar.ZBarSymbol.QRCODE]

    def decode(gray: np.ndarray) -> list[str | bytes]:
        return [_text(code.data) for code in pyzbar.decode(gray, symbols=symbols)]

    return decode


def _text(raw: bytes) -> str | bytes:
    """The code's bytes as text; bytes that are not UTF-8 are kept so the reader can reject them."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


class HoldOff:
    """One scan = one decision: a code counts when it comes into view, and again only after it has been
    out of view for ``hold_off_s`` (a phone held up for three seconds is seen by thirty frames).

    Keyed by the decoded text. Times are the frames' capture times, so a slow decode does not make a
    code look absent. A decode that misses a code for a frame or two (blur) is shorter than the hold
    off and does not make it count twice.
    """

    def __init__(self, hold_off_s: float) -> None:
        self.hold_off_s = hold_off_s
        self._last_seen: dict[str | bytes, float] = {}

    def new(self, texts: list[str | bytes], t: float) -> list[str | bytes]:
        """The texts of a frame captured at ``t`` that count now; remembers all of them as seen."""
        fresh: list[str | bytes] = []
        for text in dict.fromkeys(texts):  # one frame can show the same code twice: count it once
            last = self._last_seen.get(text)
            if last is None or t - last >= self.hold_off_s:
                fresh.append(text)
            self._last_seen[text] = t
        if len(self._last_seen) > 64:  # forget codes long gone (bounded memory under a noisy scene)
            self._last_seen = {k: v for k, v in self._last_seen.items() if t - v < self.hold_off_s}
        return fresh
