"""The prober of a ModbusBus: probes offline units on their backoff and keepalive-probes quiet ones.

Its probes go through the bus queue at PROBE priority, so they run only when no actuation waits, with
the short ``probe_timeout`` (the bus worker decides both); here is only when each unit is owed one."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.bit_message import ReadCoilsRequest

from drivers.modbus_jobs import PROBE, Job, UnitState
from drivers.modbus_pdu import DeviceUnavailable

if TYPE_CHECKING:
    from drivers.modbus_bus import ModbusBus


class Prober:
    def __init__(self, bus: ModbusBus) -> None:
        self.bus = bus
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """A unit just went offline: plan its first probe now rather than after the idle wait."""
        self._wake.set()

    async def run(self) -> None:
        """Probe offline devices on their backoff schedule; keepalive-probe quiet online ones."""
        while self.bus._running:
            self._wake.clear()
            next_due = time.monotonic() + 1.0
            for device_id, dev in list(self.bus._devices.items()):
                due = self.due(dev)
                if due is not None and due <= time.monotonic():
                    await self.probe(device_id)
                    due = self.due(dev)  # its next probe: the backoff, not the 1 s idle wait
                if due is not None:
                    next_due = min(next_due, due)
            wait = next_due - time.monotonic()  # measured after every probe of this round
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wait, 0.01)):  # not wait_for: it can swallow a cancel
                    await self._wake.wait()

    def due(self, dev: UnitState) -> float | None:
        """When the prober next owes this device a probe (None: keepalive off and it is online)."""
        if not dev.online:
            return dev.next_probe
        return None if self.bus.cfg.keepalive_s <= 0 else dev.last_ok + self.bus.cfg.keepalive_s

    async def probe(self, device_id: int) -> None:
        if not self.bus._running:
            return
        dev = self.bus._devices[device_id]
        if not dev.online:
            dev.next_probe = time.monotonic() + max(dev.backoff, self.bus.cfg.probe_min_s)  # until the result
        fut: asyncio.Future[ModbusPDU] = asyncio.get_running_loop().create_future()
        read = lambda: ReadCoilsRequest(address=0, count=1, dev_id=device_id)  # noqa: E731
        self.bus._enqueue(Job(PROBE, next(self.bus._seq), device_id, read, fut, probe=True))
        # Any answer, even a Modbus exception, proves the device is alive; failures are counted by the worker.
        with contextlib.suppress(DeviceUnavailable):
            await fut
        if dev.online:  # next keepalive one period after the probe's end, whatever the outcome
            dev.last_ok = max(dev.last_ok, time.monotonic())
