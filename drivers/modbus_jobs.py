"""The records a ModbusBus schedules with: a queued request (Job) and a unit's health (UnitState).

Kept apart from the scheduler (drivers/modbus_bus.py) and the prober (drivers/modbus_probe.py) that
both read them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pymodbus.pdu import ModbusPDU

URGENT, PROBE, POLL = 0, 1, 2
"""Job priorities within a tier: lower runs first."""

StatusCallback = Callable[[int, bool, "str | None"], None]


class Preempted(Exception):
    """The in-flight poll/probe was cancelled for an actuation (TCP only); it goes back in the queue."""


class StrayReply(Exception):
    """RTU has no transaction id: a late reply to an earlier request of the same unit came back."""


@dataclass
class Job:
    priority: int
    seq: int
    device_id: int
    request: Callable[[], ModbusPDU]
    fut: asyncio.Future[ModbusPDU]
    probe: bool = False
    retries: int | None = None  # extra attempts left; set at the first dispatch
    waited: float = 0.0  # seconds this attempt already waited before being preempted
    cut: bool = False  # preempted at least once


@dataclass
class UnitState:
    online: bool = True
    failures: int = 0
    error: str | None = None
    backoff: float = 0.0
    next_probe: float = 0.0
    last_ok: float = field(default_factory=time.monotonic)
    slow: bool = False  # answered after probe_timeout once: its probes wait the full timeout
    stalled: bool = False  # its request outlived the preemption grace: cut at once until it answers
