"""R/whitelist handling: Deltas and Snapshot parts into the WhitelistStore, strictly in arrival order.

Messages are queued and applied by one task on the loop (store writes never run on the paho
thread); big payloads are parsed in a worker thread so decisions keep flowing. Anything invalid
is logged with a reason and dropped: a payload can never stop the gateway.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from edge.limits import INT64_MAX, int_in
from edge.store import InvalidEntry, WhitelistStore

log = structlog.get_logger(__name__)

MAX_WHITELIST_BYTES = 16 * 1024 * 1024  # a snapshot part; the cloud splits bigger lists into parts
_PARSE_IN_THREAD_BYTES = 64 * 1024


class InvalidMessage(ValueError):
    """A message that is not a well-formed Delta or Snapshot part (the text says why)."""


def snapshot_parts(
    entries: list[dict[str, Any]], version: int, snap_id: str, part_size: int
) -> list[dict[str, Any]]:
    """The cloud's side of a Snapshot (mqtt.md): ``entries`` split into numbered parts of one id. Here,
    beside its parser, for every cloud that sends one (the simulator, the ejyy bridge)."""
    chunks = [entries[i : i + part_size] for i in range(0, len(entries), part_size)] or [[]]
    return [
        {"type": "snapshot", "id": snap_id, "version": version, "part": i + 1, "parts": len(chunks), "entries": c}
        for i, c in enumerate(chunks)
    ]


def parse_whitelist(payload: bytes) -> dict[str, Any]:
    """Shape and range checks of the top level; entries/ops are validated by the store's codec.
    Versions and part numbers are SQLite INTEGERs: beyond 64 bits they are refused here, by name."""
    if len(payload) > MAX_WHITELIST_BYTES:
        raise InvalidMessage(f"payload of {len(payload)} bytes exceeds {MAX_WHITELIST_BYTES}")
    try:
        msg = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # ValueError: bad UTF-8/JSON, a number of > 4300 digits
        raise InvalidMessage(f"not JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise InvalidMessage("not a JSON object")
    kind = msg.get("type")
    if kind == "delta":
        _bounded(msg, "delta", "from", 0)
        _bounded(msg, "delta", "to", msg["from"] + 1, "from+1")
        if not isinstance(msg.get("ops"), list):
            raise InvalidMessage("delta 'ops' must be a list")
    elif kind == "snapshot":
        if not isinstance(msg.get("id"), str) or not msg["id"]:
            raise InvalidMessage("snapshot 'id' must be a non-empty string")
        _bounded(msg, "snapshot", "version", 0)
        _bounded(msg, "snapshot", "parts", 1)
        _bounded(msg, "snapshot", "part", 1, hi=msg["parts"], hi_name="parts")
        if not isinstance(msg.get("entries"), list):
            raise InvalidMessage("snapshot 'entries' must be a list")
    else:
        raise InvalidMessage(f"unknown type {kind!r}")
    return msg


def _bounded(
    msg: dict[str, Any], kind: str, k: str, lo: int, lo_name: str = "", hi: int = INT64_MAX, hi_name: str = ""
) -> None:
    if not int_in(msg.get(k), lo, hi):
        raise InvalidMessage(f"{kind} '{k}' must be an integer in {lo_name or lo}..{hi_name or hi}")


class WhitelistSync:
    """Applies R/whitelist messages; ``request_sync(have)`` publishes R/sync/request."""

    def __init__(
        self,
        store: WhitelistStore,
        request_sync: Callable[[], None],
        on_keys_changed: Callable[[], None],
        on_snapshot: Callable[[float], None] | None = None,
    ) -> None:
        self._store = store
        self._request_sync = request_sync
        self._on_keys_changed = on_keys_changed
        self._on_snapshot = on_snapshot  # seconds spent on a snapshot, once swapped in (metrics)
        self._snap_work: tuple[str, float] = ("", 0.0)  # snapshot id, seconds spent on its parts so far
        self._queue: asyncio.Queue[tuple[bytes, Callable[[], None]]] = asyncio.Queue()
        self.applied = 0  # counters for health/diagnostics and tests
        self.dropped = 0

    def submit(self, payload: bytes, ack: Callable[[], None]) -> None:
        """From the transport callback: queue; the PUBACK goes out once the message is handled."""
        self._queue.put_nowait((payload, ack))

    async def run(self) -> None:
        while True:
            payload, ack = await self._queue.get()
            try:
                await self.handle(payload)
            except asyncio.CancelledError:
                raise
            except Exception:  # a store bug must not end whitelist sync
                self.dropped += 1
                log.exception("whitelist_message_failed")
            finally:
                ack()

    async def handle(self, payload: bytes) -> None:
        t0 = time.perf_counter()
        try:
            if len(payload) > _PARSE_IN_THREAD_BYTES:
                msg = await asyncio.to_thread(parse_whitelist, payload)
            else:
                msg = parse_whitelist(payload)
        except InvalidMessage as exc:
            self.dropped += 1
            log.warning("whitelist_message_dropped", reason=str(exc), size=len(payload))
            return
        if msg["type"] == "delta":
            await self._delta(msg)
        else:
            await self._snapshot(msg, t0)

    async def _delta(self, msg: dict[str, Any]) -> None:
        try:
            ok = await _call(self._store.apply_delta(msg))
        except (InvalidEntry, KeyError, TypeError, ValueError) as exc:
            self.dropped += 1
            log.warning("whitelist_delta_dropped", reason=str(exc), frm=msg["from"], to=msg["to"])
            return
        if not ok:
            log.info("whitelist_delta_gap", frm=msg["from"], to=msg["to"], have=self._store.version)
            self._request_sync()
            return
        self.applied += 1
        log.info("whitelist_delta_applied", version=self._store.version, ops=len(msg["ops"]))
        if any(isinstance(op, dict) and op.get("op") == "key" for op in msg["ops"]):
            self._on_keys_changed()

    async def _snapshot(self, msg: dict[str, Any], t0: float) -> None:
        try:
            swapped = await _call(self._store.add_snapshot_part(msg))
        except (InvalidEntry, KeyError, TypeError, ValueError) as exc:
            self.dropped += 1
            log.warning("whitelist_snapshot_part_dropped", reason=str(exc), id=msg["id"], part=msg["part"])
            return
        sid, spent = self._snap_work
        spent = (spent if sid == msg["id"] else 0.0) + time.perf_counter() - t0  # parse, stage, swap
        self._snap_work = ("", 0.0) if swapped else (msg["id"], spent)
        if swapped and self._on_snapshot is not None:
            self._on_snapshot(spent)
        log.info(
            "whitelist_snapshot_part", id=msg["id"], part=msg["part"], parts=msg["parts"], swapped=swapped
        )
        if swapped:
            self.applied += 1
            log.info("whitelist_snapshot_applied", version=self._store.version, entries=self._store.count())


async def _call(result: Awaitable[bool] | bool) -> bool:
    if isinstance(result, bool):
        return result
    return bool(await result)
