"""One Modbus bus (an RTU line or a TCP gateway) shared by every device on it.

Why a scheduler: an RS-485 line carries one request at a time and pymodbus clients are not safe for
concurrent requests, so every request goes through one worker. A device that stops answering is marked
offline after ``offline_after`` consecutive failed attempts and then gets no normal traffic (requests
fail fast with :class:`DeviceUnavailable`) - only short single-attempt probes with exponential backoff.

The rule that keeps a dead board from stalling the doors beside it: an actuation for a healthy device
waits behind at most one request to a failing one. So jobs are picked by (tier, priority, arrival):
healthy actuation, then a suspect device's actuation (one that failed its last attempt), then healthy
probes/polls, then a suspect's polls and offline probes - those only when nothing else is queued, and
with ``probe_timeout``. A device that has failed gets no retries; an actuation retry for one that had
not is queued behind the work that arrived meanwhile. An actuation preempts an in-flight poll or probe
of another device, and the preempted job resumes later with the time it has already waited. On TCP,
transaction ids make pymodbus drop the abandoned reply. On RTU a request cannot be taken back, so the
cut waits until the unit is overdue: three times its last round trip (at least 20 ms; probe_timeout
before it has ever answered). A unit that is overdue that long is almost surely silent, so its later
requests are cut at once; one that answers after all is marked slow and never cut again, so its late
reply can cost at most one collision.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Sequence

import structlog
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.bit_message import ReadDiscreteInputsRequest

from drivers.modbus import ModbusRtuBusConfig, ModbusTcpBusConfig
from drivers.modbus_jobs import POLL, URGENT, Job, Preempted, StatusCallback, StrayReply, UnitState
from drivers.modbus_pdu import (
    COIL_OFF,
    COIL_ON,
    DeviceUnavailable,
    ModbusRequestError,
    RawWriteCoil,
    check_fc05_echo,
    check_fc15_echo,
    fc05_request,
    fc15_request,
    make_client,
    reason,
)
from drivers.modbus_probe import Prober
from edge.supervise import spawn as spawn_supervised

log = structlog.get_logger(__name__)

PREEMPT_GRACE_S = 0.02  # how long an actuation lets a healthy unit's in-flight poll finish (TCP)
RTU_OVERDUE_RTTS = 3  # an RTU unit this many of its round trips late is cut for an actuation


def _cancel_if(bus: ModbusBus, device_id: int, attempt: asyncio.Future[object]) -> None:
    if bus._inflight is not None and bus._inflight[1] is attempt and not attempt.done():
        bus._devices[device_id].stalled = True  # the next actuation does not wait for it again
        if isinstance(bus.cfg, ModbusRtuBusConfig):
            bus._late_from.add(device_id)  # a reply after all marks it slow: never cut again
        attempt.cancel()


class ModbusBus:
    """Serialised, priority-ordered access to one pymodbus client with per-device health."""

    def __init__(self, bus_id: str, cfg: ModbusRtuBusConfig | ModbusTcpBusConfig) -> None:
        self.bus_id = bus_id
        self.cfg = cfg
        self._devices: dict[int, UnitState] = {}
        self._listeners: list[StatusCallback] = []
        self._jobs: list[Job] = []  # a handful at most: picked by _rank at each dispatch
        self._work = asyncio.Event()
        self._inflight: tuple[Job, asyncio.Future[ModbusPDU]] | None = None
        self._inflight_at = 0.0  # monotonic time the in-flight request went out
        self._current: Job | None = None  # the job the worker holds (failed if the worker dies)
        self._seq = itertools.count()
        self._late_from: set[int] = set()  # devices whose last short attempt timed out
        self._rtt_ms: dict[int, float] = {}  # duration of each device's last answered request
        self._client: AsyncModbusSerialClient | AsyncModbusTcpClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._prober = Prober(self)
        self._running = False
        self._log = log.bind(bus=bus_id)

    @property
    def poll_interval_s(self) -> float:
        return self.cfg.poll_interval_s

    def on_status(self, cb: StatusCallback) -> Callable[[], None]:
        """Add a listener for device online/offline transitions: ``cb(device_id, online, error)``.
        Returns its remover: a device rebuilt by a reload must not leave its old self listening."""
        self._listeners.append(cb)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(cb)

        return remove

    def register_device(self, device_id: int) -> None:
        """Make the bus track a device's health (probes, keepalive). Idempotent."""
        self._devices.setdefault(device_id, UnitState())

    def is_online(self, device_id: int) -> bool:
        dev = self._devices.get(device_id)
        return dev is not None and dev.online

    def device_error(self, device_id: int) -> str | None:
        dev = self._devices.get(device_id)
        return None if dev is None else dev.error

    def device_rtt_ms(self, device_id: int) -> float | None:
        """Round trip of the device's last answered request (`edge doctor`), None before any answer."""
        return self._rtt_ms.get(device_id)

    async def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._client = self._make_client()
        # Supervised: a worker that died on a bug would leave every request on this bus waiting forever
        # (doors granted, nothing switched). It is logged and restarted; one that keeps dying is fatal.
        self._tasks = [
            spawn_supervised(f"modbus-{self.bus_id}-worker", self._worker),
            spawn_supervised(f"modbus-{self.bus_id}-prober", self._prober.run),
        ]
        self._log.info("modbus_bus_started", type=self.cfg.type)

    async def stop(self) -> None:
        """Stop the worker, fail queued requests, close the port. Stop doors first (they switch locks off)."""
        self._running = False
        for t in self._tasks:
            t.cancel()
        # Fail queued jobs before waiting: a task whose cancellation was swallowed (3.11's wait_for can
        # lose one) then finds its request answered and sees _running False, instead of waiting forever.
        self._fail_queued()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []
        self._fail_queued()
        if self._client is not None:
            self._client.close()
            self._client = None
        self._log.info("modbus_bus_stopped")

    def _fail_queued(self, device_id: int | None = None, reason: str = "bus stopped") -> None:
        """Fail queued jobs (of one device, probes excepted, when it goes offline)."""
        keep: list[Job] = []
        for job in self._jobs:
            if device_id is not None and (job.device_id != device_id or job.probe):
                keep.append(job)
            elif not job.fut.done():
                job.fut.set_exception(DeviceUnavailable(reason))
        self._jobs = keep

    async def write_coil(self, device_id: int, address: int, value: bool, *, urgent: bool = True) -> None:
        await self.write_coil_raw(device_id, address, COIL_ON if value else COIL_OFF, urgent=urgent)

    async def write_coil_raw(
        self, device_id: int, address: int, raw_value: int, *, urgent: bool = True
    ) -> None:
        """FC05 with any 16-bit value (e.g. the relay-board flash command). Checks the echo."""
        request = fc05_request(device_id, address, raw_value)
        resp = await self._submit(URGENT if urgent else POLL, device_id, request)
        check_fc05_echo(resp, address, raw_value)

    async def write_coils(
        self, device_id: int, address: int, values: Sequence[bool], *, urgent: bool = True
    ) -> None:
        """FC15: ``values`` to the coils from ``address`` on, in one request (many relays of one board
        switch together and cost one turn on the line). Scheduled and counted like write_coil."""
        request = fc15_request(device_id, address, values)
        resp = await self._submit(URGENT if urgent else POLL, device_id, request)
        check_fc15_echo(resp, address, len(values))

    async def read_discrete_inputs(self, device_id: int, address: int, count: int) -> list[bool]:
        """FC02, queued behind actuation."""
        resp = await self._submit(
            POLL, device_id, lambda: ReadDiscreteInputsRequest(address=address, count=count, dev_id=device_id)
        )
        bits = list(resp.bits)
        if len(bits) < count:
            raise ModbusRequestError("short discrete input reply")
        return bits[:count]

    # ---------------------------------------------------------------- internals

    def _make_client(self) -> AsyncModbusSerialClient | AsyncModbusTcpClient:
        return make_client(self.bus_id, self.cfg, self._trace_packet)

    async def _submit(self, priority: int, device_id: int, request: Callable[[], ModbusPDU]) -> ModbusPDU:
        if not self._running:
            raise DeviceUnavailable("bus not started")
        self.register_device(device_id)
        dev = self._devices[device_id]
        if not dev.online:
            raise DeviceUnavailable(f"offline: {dev.error}")
        fut: asyncio.Future[ModbusPDU] = asyncio.get_running_loop().create_future()
        self._enqueue(Job(priority, next(self._seq), device_id, request, fut))
        return await fut

    def _good(self, device_id: int) -> bool:
        dev = self._devices[device_id]
        return dev.online and dev.failures == 0

    def _rank(self, job: Job) -> tuple[int, int, int]:
        tier = (0 if job.priority == URGENT else 2) + (0 if self._good(job.device_id) else 1)
        return tier, job.priority, job.seq

    def _enqueue(self, job: Job) -> None:
        self._jobs.append(job)
        self._work.set()
        if job.priority != URGENT or self._inflight is None:
            return
        current, attempt = self._inflight
        if current.priority == URGENT or current.device_id == job.device_id:
            return
        dev = self._devices[current.device_id]
        later = asyncio.get_running_loop().call_later
        if isinstance(self.cfg, ModbusRtuBusConfig):
            if dev.slow:
                return  # it answers late: cut, its reply would land on the next request
            if dev.stalled and not current.probe:
                attempt.cancel()  # overdue on its last request too: it is not answering
                return
            rtt = self._rtt_ms.get(current.device_id)
            grace = self.cfg.probe_timeout_s if rtt is None else RTU_OVERDUE_RTTS * rtt / 1e3
            due = max(grace, PREEMPT_GRACE_S) - (time.monotonic() - self._inflight_at)
            later(max(due, 0.0), _cancel_if, self, current.device_id, attempt)
        elif current.probe or not self._good(current.device_id) or dev.stalled:
            attempt.cancel()  # the worker sees it cancelled and raises Preempted
        else:
            # A healthy unit answers in a few ms: give it that long. Cutting it at once left its
            # late reply to land beside the next reply, and pymodbus then dropped the next reply
            # too (a fire release held up by a whole timeout). A unit silent past the grace is cut.
            later(PREEMPT_GRACE_S, _cancel_if, self, current.device_id, attempt)

    async def _take(self) -> Job:
        while not self._jobs:
            self._work.clear()
            await self._work.wait()
        job = min(self._jobs, key=self._rank)
        self._jobs.remove(job)
        return job

    async def _worker(self) -> None:
        if self._current is not None and not self._current.fut.done():  # the job a dead worker held
            self._current.fut.set_exception(DeviceUnavailable("bus worker restarted"))
        while True:
            self._current = None
            job = self._current = await self._take()
            if job.fut.done():  # caller gave up
                continue
            dev = self._devices[job.device_id]
            if not job.probe and not dev.online:
                job.fut.set_exception(DeviceUnavailable(f"offline: {dev.error}"))
                continue
            good = self._good(job.device_id)
            if job.retries is None:  # first dispatch: only an actuation of a device in good standing
                job.retries = self.cfg.retries if job.priority == URGENT and good else 0
            short = not (job.priority == URGENT or good or dev.slow)
            timeout = self.cfg.probe_timeout_s if short else self.cfg.timeout
            self._late_from.discard(job.device_id)
            try:
                resp = await self._execute(job, timeout - job.waited)
            except Preempted:
                job.cut = True
                self._jobs.append(job)  # keeps its seq: first among its own tier again
                continue
            except asyncio.CancelledError:
                if not job.fut.done():
                    job.fut.set_exception(DeviceUnavailable("bus stopped"))
                raise
            except Exception as exc:  # any failure is a failed request, never a dead bus
                reason = _reason(exc)
                if short and isinstance(exc, TimeoutError):
                    self._late_from.add(job.device_id)
                if not isinstance(exc, StrayReply):  # a stray reply proves the device is there
                    self._failed(job.device_id, reason)
                if job.retries and dev.online and not job.fut.done():
                    job.retries -= 1
                    job.waited, job.seq = 0.0, next(self._seq)  # behind what was queued meanwhile
                    self._enqueue(job)
                elif not job.fut.done():
                    error = ModbusRequestError if isinstance(exc, StrayReply) else DeviceUnavailable
                    job.fut.set_exception(error(reason))
                continue
            self._succeeded(job.device_id)
            if job.cut and isinstance(self.cfg, ModbusRtuBusConfig):
                # Alive after all: its reply to the cut request was on the wire. Never cut it again.
                self._mark_slow(job.device_id)
            if job.fut.done():
                continue
            if resp.isError():
                job.fut.set_exception(ModbusRequestError(f"modbus exception {resp.exception_code}"))
            else:
                job.fut.set_result(resp)

    async def _execute(self, job: Job, timeout: float) -> ModbusPDU:
        client = self._client
        assert client is not None
        if job.probe and client.connected and not any(d.online for d in self._devices.values()):
            # Nothing on the bus answers: the link itself may be wedged (half-open TCP, a USB adapter
            # that re-enumerated), so reopen it rather than keep probing through it.
            client.close()
        if not client.connected and not await client.connect():
            raise ConnectionError(
                "port not open" if isinstance(self.cfg, ModbusRtuBusConfig) else "no tcp link"
            )
        if timeout <= 0:  # a preempted job that has already waited its whole timeout
            raise TimeoutError
        request = job.request()
        attempt = asyncio.ensure_future(client.execute(False, request))
        self._inflight = (job, attempt)
        self._inflight_at = started = time.monotonic()
        try:
            await asyncio.wait({attempt}, timeout=timeout)
        finally:
            self._inflight = None
            spent = time.monotonic() - started
            job.waited += spent
            if not attempt.done():
                attempt.cancel()  # timed out (or the bus is stopping): pymodbus releases its lock
                await asyncio.wait({attempt})  # unlike awaiting it, never swallows our own cancel
        if attempt.cancelled():
            if spent < timeout:
                raise Preempted
            raise TimeoutError
        try:
            resp = attempt.result()
        except ModbusIOException as exc:
            if "but received" in str(exc):  # pymodbus: a reply from another unit (a late one, on RTU)
                raise StrayReply(f"late reply from another unit to an earlier request: {exc}") from exc
            raise
        if resp.function_code & 0x7F != request.function_code:
            raise StrayReply(f"late reply (fc {resp.function_code}) to an earlier request")
        self._rtt_ms[job.device_id] = spent * 1e3
        return resp

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        """Spot a reply from a device after its short timeout: probe_timeout is too short for it."""
        if sending or not self._late_from:
            return data
        pos = 0 if isinstance(self.cfg, ModbusRtuBusConfig) else 6  # RTU address / MBAP unit id
        unit = data[pos] if len(data) > pos else None
        awaited = self._inflight[0].device_id if self._inflight is not None else None
        if unit in self._late_from and unit != awaited:
            self._late_from.discard(unit)
            self._mark_slow(unit)
        return data

    def _mark_slow(self, device_id: int) -> None:
        dev = self._devices[device_id]
        if not dev.slow:
            dev.slow = True
            timeout = self.cfg.probe_timeout_s
            self._log.warning("modbus_late_reply", device_id=device_id, probe_timeout=timeout)

    def _succeeded(self, device_id: int) -> None:
        dev = self._devices[device_id]
        dev.failures = 0
        dev.stalled = False
        dev.last_ok = time.monotonic()
        if not dev.online:
            dev.online, dev.error = True, None
            self._log.info("modbus_device_online", device_id=device_id)
            self._notify(device_id, True, None)

    def _failed(self, device_id: int, reason: str) -> None:
        dev = self._devices[device_id]
        dev.failures += 1
        dev.error = reason
        if dev.online:
            self._log.warning(
                "modbus_request_failed", device_id=device_id, error=reason, failures=dev.failures
            )
            if dev.failures >= self.cfg.offline_after:
                dev.online = False
                dev.backoff = self.cfg.probe_min_s
                dev.next_probe = time.monotonic() + dev.backoff
                self._log.warning("modbus_device_offline", device_id=device_id, error=reason)
                self._fail_queued(device_id, f"offline: {reason}")
                self._notify(device_id, False, reason)
                self._prober.wake()
        else:
            dev.backoff = min(max(dev.backoff * 2, self.cfg.probe_min_s), self.cfg.probe_max_s)
            dev.next_probe = time.monotonic() + dev.backoff

    def _notify(self, device_id: int, online: bool, error: str | None) -> None:
        for cb in list(self._listeners):
            try:
                cb(device_id, online, error)
            except Exception:  # a listener bug must not stop the bus
                self._log.exception("modbus_status_callback_failed", device_id=device_id)


def _reason(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, StrayReply) else reason(exc)


__all__ = [
    "COIL_OFF",
    "COIL_ON",
    "DeviceUnavailable",
    "ModbusBus",
    "ModbusRequestError",
    "RawWriteCoil",
    "StatusCallback",
]  # COIL_*, DeviceUnavailable, ModbusRequestError and RawWriteCoil live in drivers/modbus_pdu.py
