"""Is the wall clock trustworthy? Asks the kernel (adjtimex), which NTP/chrony/timesyncd keep informed.

A Pi has no RTC: after a power cut without network its clock restarts from the last saved time,
so time-bound credentials must not be judged on it (tokens.md: ``clock_unsynced``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time

STA_UNSYNC = 0x0040
TIME_ERROR = 5


class _Timex(ctypes.Structure):
    # struct timex from <sys/timex.h> (x86_64 and aarch64 share this layout); padding at the end.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long),
        ("time_usec", ctypes.c_long),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_pad", ctypes.c_int * 11),
    ]


def kernel_clock_synced() -> bool | None:
    """True/False from the kernel's NTP state, or None when it cannot be asked."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))  # modes=0: read only
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != TIME_ERROR and not (tx.status & STA_UNSYNC)


class ClockState:
    """Cached view of clock trust, refreshed at most every ``ttl`` seconds (it is read on the hot path).

    ``override`` (config or tests) replaces the kernel's answer.
    """

    def __init__(self, override: bool | None = None, ttl: float = 10.0) -> None:
        self.override = override
        self.ttl = ttl
        self._value = False
        self._at = -1e9

    def synced(self) -> bool:
        if self.override is not None:
            return self.override
        now = time.monotonic()
        if now - self._at > self.ttl:
            self._value = bool(kernel_clock_synced())
            self._at = now
        return self._value
