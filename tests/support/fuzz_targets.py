"""The five fuzzed input families, each wired to the gateway's real entry points.

A family makes an input from a ``random.Random`` (``generate``) and runs it (``run``), which returns
("accepted" | "rejected" | "other", reason). The contract checked: the product answers every input
with a decision, a rejection with a reason, or its one documented error type; anything else raised,
and any log record carrying a traceback (``log.exception``), is a crash (:class:`Crash`).

Real components only: SQLite stores in a temp dir, real readers on real pipes, the real engine.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import random
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from edge.engine import Clock, DeviceContext, decide_entry, decide_token
from edge.model import Decision, Presentation
from edge.normalize import mask_credential
from edge.store import WhitelistStore
from edge.store_codec import entry_from_wire
from edge.tokens import TokenClaims, TokenDenied, TrustPolicy, b64url_encode, verify_command, verify_token
from tests.support.fuzz_mutate import dump_json, mutate_bytes, mutate_json, mutate_yaml

ROOT = Path(__file__).resolve().parent.parent.parent
VECTORS = Path("/work/shared/spec/vectors/tokens.json")
TZ = ZoneInfo("Asia/Shanghai")
Outcome = tuple[str, str]


class Crash(Exception):
    """An input broke the contract; ``trace`` is the traceback text (raised or logged)."""

    def __init__(self, what: str, trace: str) -> None:
        super().__init__(what)
        self.trace = trace


# --- log capture: a record with a traceback is a crash ------------------------------------------

LOGGED: list[str] = []


def _record(_logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    exc = event.get("exc_info")
    if method in ("exception", "critical") or exc:
        trace = (
            "".join(traceback.format_exception(*exc)) if isinstance(exc, tuple) else traceback.format_exc()
        )
        LOGGED.append(f"{event.get('event')}: {trace}")
    raise structlog.DropEvent


class _StdlibRecorder(logging.Handler):
    """asyncio and libraries log through the standard library: an error record there counts too."""

    def emit(self, record: logging.LogRecord) -> None:
        LOGGED.append(
            f"{record.name}: {record.getMessage()}\n{logging.Formatter().formatException(record.exc_info) if record.exc_info else ''}"
        )


def quiet_logs() -> None:
    """Route structlog through the recorder only: fuzzing prints nothing, tracebacks are counted."""
    structlog.configure(processors=[_record], cache_logger_on_first_use=False)
    root = logging.getLogger()
    if not any(isinstance(h, _StdlibRecorder) for h in root.handlers):
        root.addHandler(_StdlibRecorder(logging.ERROR))


def checked(fn: Callable[[], Outcome]) -> Outcome:
    """Run one input: a raised exception or a logged traceback becomes a Crash."""
    LOGGED.clear()
    try:
        out = fn()
    except Crash:
        raise
    except BaseException as exc:  # the whole point: nothing may escape
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise Crash(f"{type(exc).__name__}: {exc}"[:300], traceback.format_exc()) from None
    if LOGGED:
        raise Crash("logged traceback: " + LOGGED[0].splitlines()[0][:250], LOGGED[0])
    return out


def need(cond: bool, what: str) -> None:
    if not cond:
        raise Crash("contract: " + what, "")


def workdir() -> Path:
    """A temp dir for a family's SQLite files: under $EDGE_FUZZ_DIR (whoever set it removes it), else
    on tmpfs when there is one (fsyncs of a million inputs are not what is tested), removed at exit."""
    base = os.environ.get("EDGE_FUZZ_DIR")
    if base is None and os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        base = "/dev/shm"
    path = Path(tempfile.mkdtemp(prefix="edge-fuzz-", dir=base))
    atexit.register(shutil.rmtree, path, True)
    return path


# --- shared facts -------------------------------------------------------------------------------


def demo_store(path: Path) -> WhitelistStore:
    store = WhitelistStore(path)
    entries = json.loads((ROOT / "config" / "demo-whitelist.json").read_text(encoding="utf-8"))
    store.import_entries([entry_from_wire(e) for e in entries], version=1)
    return store


def decide_card_or_plate(store: WhitelistStore, pres: Presentation, zone: str) -> Decision:
    """What Flow does for a card or plate: store lookup, then the pure engine."""
    entry = store.lookup(pres.kind, pres.value)
    clock = Clock(time.time(), TZ, True, False)
    return decide_entry(pres, entry, DeviceContext(zone, zone), clock, mask_credential(pres.kind, pres.value))


def decision_outcome(d: Decision) -> Outcome:
    need(d.result in ("granted", "denied") and bool(d.reason), f"decision without a reason: {d}")
    return ("accepted", "granted") if d.granted else ("rejected", d.reason)


class Keys:
    """The cloud's signing key for fresh tokens, plus the spec vectors' keys and tokens."""

    def __init__(self) -> None:
        from tests.support.gateway import Signer

        self.signer = Signer()
        self.vectors = json.loads(VECTORS.read_text()) if VECTORS.exists() else {"keys": {}, "cases": []}
        keys = {self.signer.kid: self.signer.public_b64, **self.vectors["keys"]}
        self.policy = TrustPolicy.build("c42", keys, 5)

    def mint(self, claims: dict[str, Any]) -> str:
        from edge.tokens import mint_token

        return mint_token(self.signer.key, self.signer.kid, claims)


# --- tokens -------------------------------------------------------------------------------------

TOKEN_REASONS = {"malformed", "unsupported_alg", "unknown_key", "bad_signature", "wrong_site",
                 "clock_unsynced", "not_yet_valid", "expired", "lifetime_too_long", "revoked",
                 "zone_denied", "uses_exhausted", "device_unavailable", "no_floors", "passback"}  # fmt: skip
COMMAND_ERRORS = {"malformed", "unsupported_alg", "unknown_key", "bad_signature", "wrong_site",
                  "wrong_aud", "not_yet_valid", "expired", "lifetime_too_long", "unknown_action",
                  "clock_unsynced", "replay", "unknown_target", "unsupported", "device_unavailable"}  # fmt: skip


def _b64_json(seg: str) -> Any:
    import base64

    return json.loads(base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4)))


class TokenFamily:
    """A credential token through verify_token and the engine (steps 1-10), and through verify_command."""

    name = "tokens"

    def __init__(self) -> None:
        self.keys = Keys()
        s = self.keys.signer
        self.seeds = [
            s.code("fz-1"), s.code("fz-2", kind="resident", sub="resident:1", ttl=200),
            s.code("fz-3", kind="staff", zones=["*"], uses=2), s.code("fz-4", floors=[3, 5], uses=1),
            s.code("fz-5", zones=["north-gate", "bldg-3"], ttl=86000),
        ] + [c["token"] for c in self.keys.vectors["cases"] if isinstance(c.get("token"), str)]  # fmt: skip
        self.zones = ("north-gate", "bldg-3", "*")

    def generate(self, rng: random.Random) -> str:
        seed = rng.choice(self.seeds)
        try:
            return self._structured(seed, rng)
        except (ValueError, TypeError, IndexError, UnicodeError, RecursionError):
            return self._bytes(seed, rng)

    def _structured(self, seed: str, rng: random.Random) -> str:
        r = rng.random()
        if r < 0.35:  # signed claims that are valid JSON but wrong: reaches the checks after the signature
            claims = mutate_json(_b64_json(seed.split(".")[1]), rng)
            return self.keys.mint(claims) if isinstance(claims, dict) else seed
        if r < 0.45:  # a well-formed header that lies, a claims segment of any JSON
            h, c, sig = seed.split(".")
            header = mutate_json(_b64_json(h), rng)
            return ".".join((b64url_encode(dump_json(header, rng)), c, sig))
        return self._bytes(seed, rng)

    def _bytes(self, seed: str, rng: random.Random) -> str:

        raw = mutate_bytes(seed.encode(), rng, [x.encode() for x in self.seeds])
        return raw.decode("utf-8", "surrogateescape" if rng.random() < 0.3 else "replace")

    def run(self, token: str) -> Outcome:
        return checked(lambda: self._run(token))

    def _run(self, token: str) -> Outcome:
        policy, now = self.keys.policy, time.time()
        outs: list[Outcome] = []
        for t_now in (now, 1795000000.0):
            v = verify_token(token, policy, t_now, clock_trusted=True)
            need(isinstance(v, TokenClaims | TokenDenied), f"verify_token returned {type(v)}")
            if isinstance(v, TokenDenied):
                need(v.reason in TOKEN_REASONS, f"unknown denial reason {v.reason!r}")
            zone = self.zones[len(token) % 3]
            pres = Presentation("token", token, "qr", "qr-north", 0.0)
            ctx = DeviceContext(zone, zone, floors=(3, 4) if len(token) % 2 else None)
            d = decide_token(pres, v, ctx, revoked=len(token) % 7 == 0, used=len(token) % 3)
            outs.append(decision_outcome(d))
        c = verify_command(token, policy, "gw-test", now)
        if not isinstance(c, TokenClaims) and hasattr(c, "error"):
            need(c.error in COMMAND_ERRORS, f"unknown command error {c.error!r}")
        return next((o for o in outs if o[0] == "accepted"), outs[0])


# --- serial lines -------------------------------------------------------------------------------


class SerialFamily:
    """Bytes on a real fd (a pipe) read by a real SerialReader: framing, decoding, normalising, deciding."""

    name = "serial"

    def __init__(self) -> None:
        from drivers.serial_reader import SerialReader, SerialReaderConfig

        self.dir = workdir()
        self.store = demo_store(self.dir / "wl.db")
        self.tokens = TokenFamily()
        self.events: list[Outcome] = []
        shapes = [("qr", {}), ("card", {"card_format": "hex"}), ("card", {"card_format": "decimal"}),
                  ("plate", {}), ("qr", {"terminators": ["CRLF"], "max_line": 64}),
                  ("card", {"terminators": ["TAB", "CR"], "max_line": 16})]  # fmt: skip
        self.readers = []
        for i, (content, extra) in enumerate(shapes):
            cfg = SerialReaderConfig(type="serial", port=f"/dev/null-{i}", content=content, **extra)
            rd = SerialReader(f"r{i}", cfg, self._present, self._reject)
            r, w = os.pipe()
            os.set_blocking(r, False)
            rd._fd = r  # the reader's data path on a real fd; its port handling is not under test here
            self.readers.append((rd, w))
        s = self.tokens.keys.signer
        self.seeds = [s.code("ser-1").encode() + b"\r", s.code("ser-2").encode() + b"\r\n", b"04A1B2C3\r\n",
                      b"04:a1:b2:c3\n", b"12345678\r", b"0000043981\n", "京A12345\r".encode(),
                      "京Ａ１２３４５\n".encode(), b"5EC0FFEE\t0BADCAFE\t", b"\r\n\r\n  \r", b"x" * 70 + b"\r"]  # fmt: skip

    def generate(self, rng: random.Random) -> tuple[int, list[bytes]]:

        data = b"".join(rng.choice(self.seeds) for _ in range(rng.randrange(1, 4)))
        if rng.random() < 0.9:
            data = mutate_bytes(data, rng, self.seeds)
        if rng.random() < 0.05:
            data = rng.randbytes(rng.randrange(1, 3000))
        chunks, i = [], 0
        while i < len(data):
            n = rng.choice((1, 2, 7, 64, 4096))
            chunks.append(data[i : i + n])
            i += n
        return rng.randrange(len(self.readers)), chunks

    def _present(self, pres: Presentation) -> object:
        if pres.kind == "token":
            v = verify_token(pres.value, self.tokens.keys.policy, time.time())
            d = decide_token(pres, v, DeviceContext("north-gate", "north-gate"), revoked=False, used=0)
        else:
            d = decide_card_or_plate(self.store, pres, "north-gate")
        self.events.append(decision_outcome(d))
        return d

    def _reject(self, reader: str, reason: str, detail: str) -> None:
        need(bool(reason) and isinstance(detail, str), f"reject without a reason: {reason!r} {detail!r}")
        self.events.append(("rejected", reason))

    def run(self, inp: tuple[int, list[bytes]]) -> Outcome:
        return checked(lambda: self._run(inp))

    def _run(self, inp: tuple[int, list[bytes]]) -> Outcome:
        idx, chunks = inp
        rd, w = self.readers[idx]
        self.events.clear()
        rd._framer.reset()
        for chunk in chunks:
            if chunk:
                os.write(w, chunk)
                rd._readable()
        need(rd.online, "the reader went offline on data")
        if any(e[0] == "accepted" for e in self.events):
            return "accepted", "granted"
        if self.events:
            return self.events[-1]
        return "other", "no complete line"


# --- plate pushes -------------------------------------------------------------------------------

PlateInput = tuple[str, str, bytes]  # route (push | dahua | keepalive), content type, body


class PlateFamily:
    """Camera pushes through the vendor parsers and the real LprReader (dedupe, normalise, decide)."""

    name = "plates"

    def __init__(self) -> None:
        from drivers.lpr import LprReader, LprReaderConfig
        from drivers.reader import ReaderEnv
        from tests.support import lpr_pushes as lp

        self.dir = workdir()
        self.store = demo_store(self.dir / "wl.db")
        env = ReaderEnv(present=lambda p: decide_card_or_plate(self.store, p, "car-north"),
                        reject=lambda *a: None, note=lambda p, r: None)  # fmt: skip
        self.reader = LprReader("lpr-1", LprReaderConfig(type="lpr", serialno="a1b2c3d4"), env)
        self.json_seeds = [lp.vzenith("a1b2c3d4", "京A12345"), lp.vzenith("a1b2c3d4", "沪B7C316", image_bytes=64),
                           lp.dahua("6J0A2B3C4D5E6", "京A12345"), {"DeviceID": "6J0A2B3C4D5E6"}]  # fmt: skip
        xml = lp.hik_xml("44:19:b6:6d:24:85", "蓝京A12345")
        body, ctype = lp.multipart(xml)
        self.raw_seeds: list[PlateInput] = [("push", "application/xml", xml), ("push", ctype, body),
                                            ("push", ctype, lp.multipart(lp.hik_xml("44:19", "x", event="heartBeat"))[0])]  # fmt: skip

    def generate(self, rng: random.Random) -> PlateInput:

        if rng.random() < 0.5:
            i = rng.randrange(len(self.json_seeds))
            doc = self.json_seeds[i]
            route = ("push", "push", "dahua", "keepalive")[i]
            body = dump_json(mutate_json(doc, rng), rng)
            return route, "application/json", body if rng.random() < 0.8 else mutate_bytes(body, rng)
        route, ctype, body = rng.choice(self.raw_seeds)
        if rng.random() < 0.2:
            ctype = mutate_bytes(ctype.encode(), rng).decode("latin-1")
        return route, ctype, mutate_bytes(body, rng, [s[2] for s in self.raw_seeds])

    def run(self, inp: PlateInput) -> Outcome:
        return checked(lambda: self._run(inp))

    def _run(self, inp: PlateInput) -> Outcome:
        from drivers import lpr_dahua, lpr_hikvision, lpr_vzenith
        from drivers.lpr_push import BadPush

        route, ctype, body = inp
        try:
            if route == "keepalive":
                lpr_dahua.keepalive_device(body)
                return "accepted", "keepalive"
            if route == "dahua":
                read = lpr_dahua.parse(body)
            elif lpr_vzenith.looks_like(body):
                read = lpr_vzenith.parse(body)
                outcome = self.reader.handle(read, 0.0)
                json.dumps(lpr_vzenith.answer(read, outcome.granted))
                return ("accepted" if outcome.granted else "rejected"), outcome.what
            elif lpr_hikvision.looks_like(body, ctype):
                try:
                    read = lpr_hikvision.parse(body, ctype)
                except lpr_hikvision.NotAnpr as exc:
                    return "other", f"not a plate read: {exc.event}"[:60]
            else:
                return "rejected", "neither vendor format"
            outcome = self.reader.handle(read, 0.0)
            return ("accepted" if outcome.granted else "rejected"), outcome.what
        except BadPush as exc:
            need(400 <= exc.status < 500 and bool(exc.reason), f"BadPush {exc.status} {exc.reason!r}")
            return "rejected", f"http {exc.status}"


# --- config files -------------------------------------------------------------------------------

ConfigInput = tuple[str, bytes]  # ("text" | "file", content)


class ConfigFamily:
    """Config text through parse_config, or bytes through load_config on a real file."""

    name = "config"

    def __init__(self) -> None:
        self.dir = workdir()
        self.seeds = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "config").glob("*.yaml"))]

    def generate(self, rng: random.Random) -> ConfigInput:

        seed = rng.choice(self.seeds)
        if rng.random() < 0.85:
            return "text", mutate_yaml(seed, rng).encode("utf-8", "surrogatepass")
        return "file", mutate_bytes(seed.encode(), rng, [s.encode() for s in self.seeds])

    def run(self, inp: ConfigInput) -> Outcome:
        return checked(lambda: self._run(inp))

    def _run(self, inp: ConfigInput) -> Outcome:
        from edge.config import ConfigError, load_config, parse_config

        mode, data = inp
        path = self.dir / "gateway.yaml"
        try:
            if mode == "text":
                parse_config(data.decode("utf-8", "surrogatepass"), path)
            else:
                path.write_bytes(data)
                load_config(path)
        except ConfigError as exc:
            need(bool(exc.problems) and all(msg for _, _, msg in exc.problems), f"empty ConfigError {exc!r}")
            text = exc.render()
            need(str(path) in text, "ConfigError does not name the file")
            located = any(line or key for line, key, _ in exc.problems)
            first = exc.problems[0][2].split(":")[0].split("(")[0].strip()[:36]
            return "rejected", (first if located else "UNLOCATED " + first)
        return "accepted", "valid"


def run_async(loop: asyncio.AbstractEventLoop, coro: Any) -> Any:
    return loop.run_until_complete(coro)
