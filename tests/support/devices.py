"""Device environments for driver tests: real buses, a real InputHub, events collected in a list."""

from __future__ import annotations

from drivers.device import DeviceEnv, EventSpec
from drivers.inputs import InputHub
from drivers.modbus_bus import ModbusBus

_hubs: list[InputHub] = []


class TestEnv(DeviceEnv):
    events: list[EventSpec]


def env_for(*buses: ModbusBus) -> TestEnv:
    """A DeviceEnv over ``buses`` whose input hub polls as soon as a device watches an input
    (stopped after each test by tests/conftest.py); emitted events land in ``env.events``."""
    hub = InputHub({b.bus_id: b for b in buses})
    hub._running = True  # boards start polling as their first watcher arrives
    _hubs.append(hub)
    events: list[EventSpec] = []
    env = TestEnv({b.bus_id: b for b in buses}, hub, events.append)
    env.events = events
    return env


async def stop_hubs() -> None:
    while _hubs:
        await _hubs.pop().stop()
