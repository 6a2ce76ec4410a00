"""One Modbus bus (an RTU line or a TCP gateway) shared by every device on it.

Why a scheduler: an RS-485 line carries one request at a time and pymodbus clients are not safe for
concurrent requests, so every request goes through one worker in priority order: actuation (a lock
release someone is waiting at) ahead of probes, probes ahead of input polling. A device that stops
answering is marked offline after ``offline_after`` consecutive failures and then gets no normal traffic
(requests fail fast with :class:`DeviceUnavailable`) - only single-attempt probes with exponential
backoff - so one dead board cannot stall the doors beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.bit_message import ReadCoilsRequest, ReadDiscreteInputsRequest

from drivers.modbus import ModbusRtuBusConfig, ModbusTcpBusConfig

log = structlog.get_logger(__name__)

COIL_ON = 0xFF00
COIL_OFF = 0x0000

URGENT, PROBE, POLL = 0, 1, 2
"""Queue priorities: lower runs first."""

StatusCallback = Callable[[int, bool, "str | None"], None]


class DeviceUnavailable(Exception):
    """The device is offline or did not answer; ``str()`` is a short reason."""


class ModbusRequestError(DeviceUnavailable):
    """The device answered, but with a Modbus exception or a wrong echo (it is online; config error?)."""


class RawWriteCoil(ModbusPDU):
    """FC05 carrying any 16-bit value.

    pymodbus' own WriteSingleCoilRequest reduces the value to a bool, but common relay boards use
    FC05 to 0x0200+n with a time in 100 ms units ("flash"). Used for plain on/off writes too, so the
    client decoder needs only this one FC05 class.
    """

    function_code = 5
    rtu_frame_size = 8

    def __init__(self, address: int = 0, value: int = 0, dev_id: int = 0, transaction_id: int = 0) -> None:
        super().__init__(dev_id=dev_id, transaction_id=transaction_id, address=address)
        self.value = value

    def encode(self) -> bytes:
        self.verifyAddress()
        return struct.pack(">HH", self.address, self.value & 0xFFFF)

    def decode(self, data: bytes) -> None:
        self.address, self.value = struct.unpack(">HH", data[:4])
        self.bits = [self.value == COIL_ON]


@dataclass(order=True)
class _Job:
    priority: int
    seq: int
    device_id: int = field(compare=False)
    request: Callable[[], ModbusPDU] = field(compare=False)
    fut: asyncio.Future[ModbusPDU] = field(compare=False)
    probe: bool = field(default=False, compare=False)


@dataclass
class _Device:
    online: bool = True
    failures: int = 0
    error: str | None = None
    backoff: float = 0.0
    next_probe: float = 0.0
    last_ok: float = field(default_factory=time.monotonic)


class ModbusBus:
    """Serialised, priority-ordered access to one pymodbus client with per-device health."""

    def __init__(self, bus_id: str, cfg: ModbusRtuBusConfig | ModbusTcpBusConfig) -> None:
        self.bus_id = bus_id
        self.cfg = cfg
        self._devices: dict[int, _Device] = {}
        self._listeners: list[StatusCallback] = []
        self._queue: asyncio.PriorityQueue[_Job] = asyncio.PriorityQueue()
        self._seq = itertools.count()
        self._client: AsyncModbusSerialClient | AsyncModbusTcpClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wake_prober = asyncio.Event()
        self._running = False
        self._log = log.bind(bus=bus_id)

    @property
    def poll_interval_s(self) -> float:
        return self.cfg.poll_interval_s

    def on_status(self, cb: StatusCallback) -> None:
        """Add a listener for device online/offline transitions: ``cb(device_id, online, error)``."""
        self._listeners.append(cb)

    def register_device(self, device_id: int) -> None:
        """Make the bus track a device's health (probes, keepalive). Idempotent."""
        self._devices.setdefault(device_id, _Device())

    def is_online(self, device_id: int) -> bool:
        dev = self._devices.get(device_id)
        return dev is not None and dev.online

    def device_error(self, device_id: int) -> str | None:
        dev = self._devices.get(device_id)
        return None if dev is None else dev.error

    async def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._client = self._make_client()
        self._tasks = [
            asyncio.create_task(self._worker(), name=f"modbus-{self.bus_id}-worker"),
            asyncio.create_task(self._prober(), name=f"modbus-{self.bus_id}-prober"),
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

    def _fail_queued(self) -> None:
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.fut.done():
                job.fut.set_exception(DeviceUnavailable("bus stopped"))

    async def write_coil(self, device_id: int, address: int, value: bool, *, urgent: bool = True) -> None:
        await self.write_coil_raw(device_id, address, COIL_ON if value else COIL_OFF, urgent=urgent)

    async def write_coil_raw(
        self, device_id: int, address: int, raw_value: int, *, urgent: bool = True
    ) -> None:
        """FC05 with any 16-bit value (e.g. the relay-board flash command). Checks the echo."""
        if not 0 <= raw_value <= 0xFFFF:
            raise ValueError(f"FC05 value out of range: {raw_value}")
        resp = await self._submit(
            URGENT if urgent else POLL,
            device_id,
            lambda: RawWriteCoil(address=address, value=raw_value, dev_id=device_id),
        )
        if getattr(resp, "address", None) != address or getattr(resp, "value", None) != raw_value:
            raise ModbusRequestError(f"bad echo for coil {address}")

    async def read_discrete_inputs(self, device_id: int, address: int, count: int) -> list[bool]:
        """FC02, queued behind actuation."""
        resp = await self._submit(POLL, device_id, lambda: _read_di(device_id, address, count))
        bits = list(resp.bits)
        if len(bits) < count:
            raise ModbusRequestError("short discrete input reply")
        return bits[:count]

    # ---------------------------------------------------------------- internals

    def _make_client(self) -> AsyncModbusSerialClient | AsyncModbusTcpClient:
        cfg = self.cfg
        client: AsyncModbusSerialClient | AsyncModbusTcpClient
        # reconnect_delay=0: pymodbus' own reconnect task is off; the worker reconnects on demand.
        if isinstance(cfg, ModbusRtuBusConfig):
            client = AsyncModbusSerialClient(
                cfg.port,
                baudrate=cfg.baud,
                parity=cfg.parity,
                stopbits=cfg.stopbits,
                bytesize=cfg.bytesize,
                timeout=cfg.timeout,
                retries=cfg.retries,
                reconnect_delay=0,
                name=self.bus_id,
            )
        else:
            client = AsyncModbusTcpClient(
                cfg.host,
                port=cfg.port,
                timeout=cfg.timeout,
                retries=cfg.retries,
                reconnect_delay=0,
                name=self.bus_id,
            )
        client.register(RawWriteCoil)
        # pymodbus drops a TCP link after retries+3 unanswered requests; one dead unit behind a gateway
        # must not cut off its neighbours, so that is disabled and device health is tracked here instead.
        client.set_max_no_responses(1 << 30)
        return client

    async def _submit(self, priority: int, device_id: int, request: Callable[[], ModbusPDU]) -> ModbusPDU:
        if not self._running:
            raise DeviceUnavailable("bus not started")
        self.register_device(device_id)
        dev = self._devices[device_id]
        if not dev.online:
            raise DeviceUnavailable(f"offline: {dev.error}")
        fut: asyncio.Future[ModbusPDU] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Job(priority, next(self._seq), device_id, request, fut))
        return await fut

    async def _worker(self) -> None:
        while True:
            job = await self._queue.get()
            if job.fut.done():  # caller gave up
                continue
            dev = self._devices[job.device_id]
            if not job.probe and not dev.online:
                job.fut.set_exception(DeviceUnavailable(f"offline: {dev.error}"))
                continue
            try:
                resp = await self._execute(job)
            except asyncio.CancelledError:
                if not job.fut.done():
                    job.fut.set_exception(DeviceUnavailable("bus stopped"))
                raise
            except Exception as exc:  # any failure is a failed request, never a dead bus
                reason = _reason(exc)
                self._failed(job.device_id, reason)
                if not job.fut.done():
                    job.fut.set_exception(DeviceUnavailable(reason))
                continue
            self._succeeded(job.device_id)
            if job.fut.done():
                continue
            if resp.isError():
                job.fut.set_exception(ModbusRequestError(f"modbus exception {resp.exception_code}"))
            else:
                job.fut.set_result(resp)

    async def _execute(self, job: _Job) -> ModbusPDU:
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
        # A probe makes a single attempt: a dead unit then costs one timeout per probe, not retries+1.
        retries = 0 if job.probe else self.cfg.retries
        client.ctx.retries = retries
        budget = self.cfg.timeout * (retries + 1) + 1.0  # guard in case pymodbus itself never returns
        try:
            async with asyncio.timeout(budget):  # asyncio.timeout, unlike 3.11's wait_for, never eats a cancel
                return await client.execute(False, job.request())
        finally:
            client.ctx.retries = self.cfg.retries

    def _succeeded(self, device_id: int) -> None:
        dev = self._devices[device_id]
        dev.failures = 0
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
                self._notify(device_id, False, reason)
                self._wake_prober.set()
        else:
            dev.backoff = min(max(dev.backoff * 2, self.cfg.probe_min_s), self.cfg.probe_max_s)
            dev.next_probe = time.monotonic() + dev.backoff

    def _notify(self, device_id: int, online: bool, error: str | None) -> None:
        for cb in list(self._listeners):
            try:
                cb(device_id, online, error)
            except Exception:  # a listener bug must not stop the bus
                self._log.exception("modbus_status_callback_failed", device_id=device_id)

    async def _prober(self) -> None:
        """Probe offline devices on their backoff schedule; keepalive-probe quiet online ones."""
        while self._running:
            self._wake_prober.clear()
            now = time.monotonic()
            wait = 1.0
            for device_id, dev in list(self._devices.items()):
                if dev.online:
                    if self.cfg.keepalive_s <= 0:
                        continue
                    due = dev.last_ok + self.cfg.keepalive_s
                else:
                    due = dev.next_probe
                if due <= now:
                    await self._probe(device_id)
                    now = time.monotonic()
                else:
                    wait = min(wait, due - now)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wait, 0.01)):  # not wait_for: it can swallow a cancel
                    await self._wake_prober.wait()

    async def _probe(self, device_id: int) -> None:
        if not self._running:
            return
        dev = self._devices[device_id]
        if dev.online:
            dev.last_ok = time.monotonic()  # next keepalive one period later, whatever the outcome
        else:
            dev.next_probe = time.monotonic() + max(dev.backoff, self.cfg.probe_min_s)  # until the result
        fut: asyncio.Future[ModbusPDU] = asyncio.get_running_loop().create_future()
        job = _Job(PROBE, next(self._seq), device_id, lambda: _read_coil0(device_id), fut, probe=True)
        self._queue.put_nowait(job)
        # Any answer, even a Modbus exception, proves the device is alive; failures are counted by the worker.
        with contextlib.suppress(DeviceUnavailable):
            await fut


def _read_di(device_id: int, address: int, count: int) -> ModbusPDU:
    return ReadDiscreteInputsRequest(address=address, count=count, dev_id=device_id)


def _read_coil0(device_id: int) -> ModbusPDU:
    return ReadCoilsRequest(address=0, count=1, dev_id=device_id)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ModbusException):
        text = str(exc)
        if "No response" in text:
            return "no response"
        return text.split("]", 1)[-1].strip()[:80] or type(exc).__name__
    return (str(exc) or type(exc).__name__)[:80]


__all__ = [
    "COIL_OFF",
    "COIL_ON",
    "DeviceUnavailable",
    "ModbusBus",
    "ModbusRequestError",
    "RawWriteCoil",
    "StatusCallback",
]
