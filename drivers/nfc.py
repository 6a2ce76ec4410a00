"""NFC readers through nfcpy (``type: nfc``): card UIDs and, optionally, NDEF tokens from phones and tags.

nfcpy blocks, so each reader owns one worker thread holding its ``ContactlessFrontend``; results reach
the loop only through ``loop.call_soon_threadsafe``. The thread runs ``clf.connect(rdwr=...)`` one sense
cycle at a time (``iterations: 1``): ``on-discover`` sees every target the field answers, ``terminate``
is called between cycles and is where presence is tracked and a stop is noticed.

One presentation per card resting on the reader: a target whose UID equals the resting card's is not
decided again (and not re-activated); the resting card is forgotten after ``ABSENT_CYCLES`` sense
cycles in a row without it, so a lift and a new tap is a new presentation while one missed poll is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator

from drivers.nfc_tags import Sensed, sensed, token_from_records
from drivers.reader import Reader, ReaderEnv
from drivers.registry import register_reader
from edge.model import Method, Presentation

log = structlog.get_logger(__name__)

TARGETS = ["106A", "212F"]  # ISO 14443-A (Type 2/4, MIFARE Classic UIDs) and FeliCa
ABSENT_CYCLES = 2  # sense cycles without the resting card before it counts as lifted
CYCLE_PAUSE_S = 0.1  # between sense cycles: a card is found within this, the CPU is not spun
BACKOFF_MIN_S, BACKOFF_MAX_S = 1.0, 30.0  # retrying a reader nfcpy cannot open
STOP_JOIN_S = 5.0  # the worker notices a stop within one sense cycle; this only bounds a wedged driver


class NfcConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["nfc"]
    device: str = Field(description="nfcpy path: usb, usb:072f:2200, tty:USB0:pn532, udp:127.0.0.1:54321")
    ndef_tokens: bool = Field(
        False, description="read NDEF from tags and phones: a text or URI (?t=) record is decided as a token"
    )

    @field_validator("device")
    @classmethod
    def _path(cls, v: str) -> str:
        if v.split(":", 1)[0] not in ("usb", "tty", "com", "udp"):
            raise ValueError("must be an nfcpy path starting usb, tty:, com: or udp:")
        return v


class NfcReader(Reader):
    """One nfcpy reader: a worker thread senses, the loop decides. Never raises into the loop."""

    def __init__(self, reader_id: str, cfg: NfcConfig, env: ReaderEnv) -> None:
        super().__init__(reader_id)
        self.cfg = cfg
        self._env = env
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        # Worker-thread state (only the worker touches these):
        self._resting: str | None = None  # key of the card on the reader, already decided
        self._missed = 0  # sense cycles in a row without it
        self._seen = False  # the resting card (or a new one) answered in this cycle
        self._session = False  # inside nfcpy's presence loop for an activated tag
        self._pending: tuple[Sensed, float] | None = None  # activated, waiting for on-connect

    @property
    def online(self) -> bool:
        return self._status is not None and self._status[0]

    @property
    def method(self) -> Method:
        return "nfc"

    @property
    def card_present(self) -> bool:
        """A card rests on the reader (decided once; lift it to present it again)."""
        return self._resting is not None

    async def start(self) -> None:
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"nfc-{self.reader_id}", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.join, STOP_JOIN_S)
            if thread.is_alive():
                log.error("nfc_thread_stuck", reader=self.reader_id, device=self.cfg.device)

    # --- worker thread ----------------------------------------------------------------------
    def _run(self) -> None:
        import nfc

        delay = BACKOFF_MIN_S
        while not self._stop.is_set():
            clf = nfc.ContactlessFrontend()
            try:
                opened = clf.open(self.cfg.device)
                error = None if opened else "no reader found on path"
            except Exception as exc:  # EACCES/EBUSY, no libusb, an unresolvable udp host, ...
                opened, error = False, _reason(exc)
            if opened:
                delay = BACKOFF_MIN_S
                self._post(self._set_status, True, None)
                error = self._serve(clf)
            with contextlib.suppress(Exception):
                clf.close()
            if self._stop.is_set():
                break
            self._post(self._set_status, False, error)
            self._stop.wait(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)
        self._resting = None

    def _serve(self, clf: Any) -> str:
        """Sense until stopped or the device fails; returns why it stopped."""
        options = {
            "targets": TARGETS,
            "on-discover": self._on_discover,
            "on-connect": self._on_connect,
            "on-release": self._on_release,
            "iterations": 1,
            "interval": CYCLE_PAUSE_S,
            "beep-on-connect": False,
        }
        self._resting, self._missed, self._seen, self._session, self._pending = None, 0, False, False, None
        while not self._stop.is_set():
            try:
                result = clf.connect(rdwr=options, terminate=self._terminate)
            except OSError as exc:  # a driver error nfcpy does not map to False: the device is lost
                log.warning("nfc_reader_failed", reader=self.reader_id, error=_reason(exc))
                return _reason(exc)
            except Exception as exc:  # a card nfcpy chokes on is no reason to drop the reader
                log.exception("nfc_cycle_failed", reader=self.reader_id, error=_reason(exc))
                self._pending = None
                self._stop.wait(CYCLE_PAUSE_S)
                continue
            finally:
                self._session = False
            if result is False:  # nfcpy caught an IOError: the device is gone (unplugged, reset)
                return "reader I/O error (unplugged?)"
        return "stopped"

    def _terminate(self) -> bool:
        """Called by nfcpy between sense cycles (and in an activated tag's presence loop)."""
        if self._stop.is_set():
            return True
        if self._session:
            return False
        if self._pending is not None:  # activation failed (tag went mute): decide it by its UID
            card, t = self._pending
            self._pending = None
            self._present("card", card.uid, t)
        if self._seen:
            self._missed = 0
        elif self._resting is not None:
            self._missed += 1
            if self._missed >= ABSENT_CYCLES:
                self._resting = None
        self._seen = False
        self._stop.wait(CYCLE_PAUSE_S)
        return self._stop.is_set()

    def _on_discover(self, target: Any) -> bool:
        t = time.perf_counter()
        card = sensed(target)
        if card is None:
            return False
        self._seen = True
        if card.key == self._resting:
            return False  # still resting: decided already, not even re-activated
        self._resting, self._missed = card.key, 0
        if self.cfg.ndef_tokens and card.activatable:
            self._pending = (card, t)
            return True  # nfcpy activates it; on_connect reads NDEF
        self._present("card", card.uid, t)
        return False

    def _on_connect(self, tag: Any) -> bool:
        pending, self._pending = self._pending, None
        self._session = True
        card, t = pending if pending is not None else (None, time.perf_counter())
        token = None
        try:
            ndef = tag.ndef
            if ndef is not None:
                token = token_from_records(ndef.records)
        except Exception as exc:  # a tag lifted mid-read, a malformed message: fall back to the UID
            log.info("nfc_ndef_unreadable", reader=self.reader_id, error=_reason(exc))
        if token is not None:
            self._present("token", token, t)
        elif card is not None:
            self._present("card", card.uid, t)
        return True  # nfcpy waits while the tag is present, then calls on_release

    def _on_release(self, tag: Any) -> bool:
        self._session = False
        self._seen = True  # it was there during this cycle; the next cycles tell whether it was lifted
        return True

    def _present(self, kind: Literal["token", "card"], value: str, t: float) -> None:
        self._post(self._deliver, Presentation(kind, value, "nfc", self.reader_id, t))

    def _post(self, fn: Any, *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: the gateway is gone
            loop.call_soon_threadsafe(fn, *args)

    # --- loop thread ------------------------------------------------------------------------
    def _deliver(self, pres: Presentation) -> None:
        if self._stop.is_set():
            return
        try:
            self._env.present(pres)
        except Exception as exc:
            log.exception("presentation_callback_failed", reader=self.reader_id, error=str(exc))

    def _set_status(self, online: bool, error: str | None) -> None:
        if not self._status_changed(online, error):
            return
        if online:
            log.info("reader_online", reader=self.reader_id, device=self.cfg.device)
        else:
            log.warning("reader_offline", reader=self.reader_id, device=self.cfg.device, error=error)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _build(reader_id: str, cfg: NfcConfig, env: ReaderEnv) -> NfcReader:
    return NfcReader(reader_id, cfg, env)


register_reader("nfc", NfcConfig, _build)
