"""Licence-plate cameras (`type: lpr` readers) and the one HTTP listener they push to (`lpr` section).

Gate cameras recognise plates themselves and push each read over HTTP. One aiohttp listener serves
every camera: Vzenith `AlarmInfoPlate` JSON and Hikvision ANPR multipart on ``path`` (told apart by
content), Dahua ITSAPI on its fixed ``/NotificationInfo/...`` paths. A push is routed to its reader by
the camera's own identifier (``serialno`` in config; see each vendor's parser module), then decided by
the reader once per record: cameras re-push a read they got no answer for, and replay reads stored
while offline. Replays (marked offline, or older than ``MAX_AGE_S`` by the camera's clock) open nothing
and become events; reads below ``min_confidence`` are denied `low_confidence`; everything else goes to
``env.present`` like a card, whose grant drives the device wired to the reader. Bad pushes get a 4xx
with a reason and a log line, and nothing else happens. Plate cameras are exempt from rate limiting: a
queue of cars is no brute-force attack.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator

from drivers import lpr_dahua, lpr_hikvision, lpr_vzenith
from drivers.device import Service, ServiceEnv
from drivers.lpr_push import MAX_BODY, BadPush, PlateRead, ident
from drivers.reader import Reader, ReaderEnv
from drivers.registry import register_reader, register_section
from edge.model import Method, Presentation
from edge.normalize import BadCredential, mask_credential, normalize_plate
from edge.plates import match_plate

log = structlog.get_logger(__name__)

MAX_AGE_S = 60.0  # a read older than this by the camera's clock is a replay, not a car at the gate
SEEN_KEEP = 1024  # records remembered per camera, to answer re-pushes the same
SEEN_TTL_S = 300.0  # ... for this long: a camera that restarts may reuse its plateids
REBIND_S = 5.0  # a port in use is tried again this often
OFFLINE_RECORD = "expired"  # reason of the info event for a replayed read: too old to act on (a spec code)
_NO_PLATE = {"", "UNKNOWN", "NOPLATE", "NONE", "NULL"}


class LprReaderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["lpr"]
    serialno: str = Field(min_length=1, max_length=64, description="the camera's id in its pushes")
    min_confidence: int = Field(80, ge=0, le=100, description="reads below it are denied low_confidence")
    tolerant: bool = Field(
        False, description="accept one confusable substitution (0/D/Q, 8/B, 1/I, 2/Z, 5/S)"
    )

    @field_validator("serialno")
    @classmethod
    def _has_id(cls, v: str) -> str:
        if not ident(v):
            raise ValueError("serialno must contain letters or digits")
        return v

    def describe(self) -> str:
        tol = ", tolerant" if self.tolerant else ""
        return f"plate camera {self.serialno} (min confidence {self.min_confidence}{tol})"


class LprSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    listen: str = Field("0.0.0.0:8480", description="host:port of the HTTP listener")
    path: str = Field("/lpr/push", description="push path of Vzenith and Hikvision cameras")

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("listen must be host:port (e.g. 0.0.0.0:8480)")
        return v

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/") or v.startswith("/NotificationInfo/"):
            raise ValueError("path must start with / and not be a Dahua /NotificationInfo/ path")
        return v

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    def describe(self) -> str:
        return f"plate camera listener on {self.listen}, push path {self.path} (+ Dahua ITSAPI paths)"


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one record: ``granted`` drives the camera's answer; ``what`` is for the log."""

    granted: bool
    what: str


class LprReader(Reader):
    """One plate camera. It opens nothing itself: pushes reach it through :class:`LprService`."""

    rate_limit_exempt: ClassVar[bool] = True

    def __init__(self, reader_id: str, cfg: LprReaderConfig, env: ReaderEnv) -> None:
        super().__init__(reader_id)
        self.cfg = cfg
        self.env = env
        self.service: LprService | None = None
        self._running = False
        self._seen: OrderedDict[tuple[str, str], tuple[float, Outcome]] = OrderedDict()
        self.last_heard: float | None = None

    @property
    def method(self) -> Method:
        return "plate"

    @property
    def online(self) -> bool:
        return self._running and self.service is not None and self.service.listening

    async def start(self) -> None:
        self._running = True
        if self.cfg.tolerant and self.env.extra.get("lookup") is None:
            log.warning("lpr_tolerant_unavailable", reader=self.reader_id,
                        error="no whitelist lookup in ReaderEnv.extra['lookup']: exact matching only")  # fmt: skip
        self.report()

    async def stop(self) -> None:
        self._running = False
        self.report()

    def report(self) -> None:
        """Tell the status callbacks when (online, error) changed."""
        if self.service is None:
            error: str | None = "no `lpr` section in the config: nothing listens for plate cameras"
        else:
            error = (
                None if self.online else self.service.error or ("not started" if not self._running else None)
            )
        self._status_changed(self.online, error)

    # --- one record ----------------------------------------------------------------------
    def handle(self, read: PlateRead, t_mono: float, now: float | None = None) -> Outcome:
        """Decide a read once; a repeated record gets the outcome it got the first time."""
        now = time.time() if now is None else now
        self.last_heard = now
        while self._seen and (
            len(self._seen) > SEEN_KEEP or now - next(iter(self._seen.values()))[0] > SEEN_TTL_S
        ):
            self._seen.popitem(last=False)
        key = None if read.record is None else (read.record, read.plate)
        if key is not None and key in self._seen:
            outcome = self._seen[key][1]
            log.info("lpr_repeat", reader=self.reader_id, record=read.record, outcome=outcome.what)
            return outcome
        outcome = self._decide(read, t_mono, now)
        if key is not None:
            self._seen[key] = (now, outcome)
        return outcome

    def _decide(self, read: PlateRead, t_mono: float, now: float) -> Outcome:
        if _no_plate(read.plate):
            log.info("lpr_no_plate", reader=self.reader_id, record=read.record)
            return Outcome(False, "no_plate")
        try:
            plate = normalize_plate(read.plate)
        except BadCredential as exc:
            raise BadPush(422, f"plate: {exc}") from None
        masked = mask_credential("plate", plate)
        age = None if read.taken_at is None else now - read.taken_at
        if read.offline or (age is not None and age > MAX_AGE_S):
            why = "marked offline by the camera" if read.offline else f"{age:.0f} s old by the camera's clock"
            log.info("lpr_offline_record", reader=self.reader_id, plate=masked,
                     detail=f"{read.vendor} record {read.record}: {why}")  # fmt: skip
            self.env.note(Presentation("plate", plate, "plate", self.reader_id, t_mono), OFFLINE_RECORD)
            return Outcome(False, OFFLINE_RECORD)
        # the engine denies a read below min_confidence `low_confidence` before any lookup
        pres = Presentation("plate", plate, "plate", self.reader_id, t_mono, confidence=read.confidence,
                            min_confidence=self.cfg.min_confidence)  # fmt: skip
        lookup = self.env.extra.get("lookup")
        if self.cfg.tolerant and lookup is not None:
            m = match_plate(plate, lambda v: lookup("plate", v), tolerant=True)
            if m.kind == "tolerant":
                log.info("lpr_tolerant_match", reader=self.reader_id, read=masked,
                         matched=mask_credential("plate", m.value))  # fmt: skip
                pres = dataclasses.replace(pres, value=m.value)
            elif m.kind == "ambiguous":
                log.info(
                    "lpr_tolerant_ambiguous", reader=self.reader_id, read=masked, candidates=len(m.candidates)
                )
        decision = self.env.present(pres)
        granted = bool(getattr(decision, "granted", False))
        return Outcome(granted, "granted" if granted else str(getattr(decision, "reason", "denied")))


def _no_plate(text: str) -> bool:
    """Cameras push a read without a plate as 无牌车 / 无车牌 / _无_ / 未识别 / unknown."""
    return "无" in text or "未识别" in text or text.strip("_-*# ").upper() in _NO_PLATE


if TYPE_CHECKING:  # aiohttp is imported when the listener starts: a box without plate cameras skips it
    from aiohttp import web

Handler = Callable[["web.Request"], Awaitable["web.StreamResponse"]]


class LprService(Service):
    """The listener. Routes each push to its reader and answers in the camera's own dialect."""

    name: ClassVar[str] = "lpr"

    def __init__(self, cfg: LprSection, env: ServiceEnv) -> None:
        super().__init__(cfg, env)
        self.cfg: LprSection = cfg
        self.cameras: dict[str, LprReader] = {}
        for reader in env.readers.values():
            if isinstance(reader, LprReader):
                other = self.cameras.setdefault(ident(reader.cfg.serialno), reader)
                if other is not reader:
                    raise ValueError(f"readers {other.reader_id!r} and {reader.reader_id!r}: same serialno")
                reader.service = self
        self.listening = False
        self.error: str | None = None
        self.counts: Counter[str] = Counter()
        self._runner: web.AppRunner | None = None
        self._bind_task: asyncio.Task[None] | None = None

    # --- lifecycle -----------------------------------------------------------------------
    async def started(self) -> None:
        """Listen only once every device is in its safe state: a push may open one at once."""
        from aiohttp import web

        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post(self.cfg.path, self._guard(self._push))
        app.router.add_post(lpr_dahua.TOLLGATE_PATH, self._guard(self._dahua))
        app.router.add_post(lpr_dahua.KEEPALIVE_PATH, self._guard(self._keepalive))
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        if not await self._bind():
            self._bind_task = asyncio.get_running_loop().create_task(self._rebind(), name="lpr-rebind")

    async def _bind(self) -> bool:
        from aiohttp import web

        assert self._runner is not None
        try:
            await web.TCPSite(self._runner, self.cfg.host, self.cfg.port, reuse_address=True).start()
        except OSError as exc:
            self._set(False, f"cannot listen on {self.cfg.listen}: {exc.strerror or exc}")
            return False
        log.info("lpr_listening", listen=self.cfg.listen, path=self.cfg.path, cameras=len(self.cameras))
        self._set(True, None)
        return True

    async def _rebind(self) -> None:
        while not self.listening:
            await asyncio.sleep(REBIND_S)
            with contextlib.suppress(Exception):
                await self._bind()

    async def stop(self) -> None:
        if self._bind_task is not None:
            self._bind_task.cancel()
            await asyncio.gather(self._bind_task, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._set(False, "stopped")

    def _set(self, listening: bool, error: str | None) -> None:
        if error is not None and error != self.error and error != "stopped":
            log.error("lpr_listen_failed", error=error)
        self.listening, self.error = listening, error
        for reader in self.cameras.values():
            reader.report()

    def status(self) -> dict[str, Any]:
        return {"listen": self.cfg.listen, "listening": self.listening, "error": self.error,
                "pushes": dict(self.counts)}  # fmt: skip

    # --- HTTP ----------------------------------------------------------------------------
    def _guard(self, handler: Handler) -> Handler:
        """Body limit, and any bug answered 500 and logged instead of escaping into aiohttp."""

        async def run(request: web.Request) -> web.StreamResponse:
            from aiohttp import web

            if (request.content_length or 0) > MAX_BODY:
                return self._bad(request, 413, f"body over {MAX_BODY} bytes")
            try:
                return await handler(request)
            except web.HTTPRequestEntityTooLarge:
                return self._bad(request, 413, f"body over {MAX_BODY} bytes")
            except BadPush as exc:
                return self._bad(request, exc.status, exc.reason)
            except Exception as exc:
                log.exception("lpr_push_failed", path=request.path, error=str(exc))
                return self._bad(request, 500, "internal error")

        return run

    def _bad(self, request: web.Request, status: int, reason: str) -> web.Response:
        from aiohttp import web

        self.counts[f"http_{status}"] += 1
        log.warning("lpr_push_refused", status=status, reason=reason, path=request.path, peer=request.remote)
        return web.json_response({"error": reason}, status=status)

    def _reader(self, camera: str, key: str) -> LprReader:
        reader = self.cameras.get(ident(camera))
        if reader is None:
            raise BadPush(403, f"unknown camera {key} {camera!r}")
        if not reader.online:
            raise BadPush(503, f"reader {reader.reader_id} is not started")
        return reader

    def _decide(self, read: PlateRead, key: str) -> tuple[LprReader, Outcome]:
        t = time.perf_counter()
        reader = self._reader(read.camera, key)
        outcome = reader.handle(read, t)
        self.counts[f"{read.vendor}_{outcome.what}"] += 1
        return reader, outcome

    async def _push(self, request: web.Request) -> web.Response:
        from aiohttp import web

        body = await request.read()
        ctype = request.headers.get("Content-Type", "")
        if lpr_vzenith.looks_like(body):
            read = lpr_vzenith.parse(body)
            _, outcome = self._decide(read, "serialno")
            return web.json_response(lpr_vzenith.answer(read, outcome.granted))
        if lpr_hikvision.looks_like(body, ctype):
            try:
                read = lpr_hikvision.parse(body, ctype)
            except lpr_hikvision.NotAnpr as exc:
                self._reader(exc.camera, "macAddress").last_heard = time.time()
                self.counts["hikvision_other"] += 1
                log.debug("lpr_hikvision_event_ignored", kind=exc.event)
                return web.Response(text="OK")
            self._decide(read, "macAddress")
            return web.Response(text="OK")
        raise BadPush(400, "neither a Vzenith AlarmInfoPlate nor a Hikvision EventNotificationAlert push")

    async def _dahua(self, request: web.Request) -> web.Response:
        from aiohttp import web

        read = lpr_dahua.parse(await request.read())
        self._decide(read, "DeviceID")
        return web.json_response(lpr_dahua.ANSWER)

    async def _keepalive(self, request: web.Request) -> web.Response:
        from aiohttp import web

        device = lpr_dahua.keepalive_device(await request.read())
        if device is not None:
            self._reader(device, "DeviceID").last_heard = time.time()
        self.counts["dahua_keepalive"] += 1
        return web.json_response(lpr_dahua.ANSWER)


def _build_reader(reader_id: str, cfg: LprReaderConfig, env: ReaderEnv) -> LprReader:
    return LprReader(reader_id, cfg, env)


def _build_service(cfg: LprSection, env: ServiceEnv) -> LprService:
    return LprService(cfg, env)


register_reader("lpr", LprReaderConfig, _build_reader)
register_section("lpr", LprSection, _build_service)
