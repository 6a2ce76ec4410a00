"""ModbusBus against real pymodbus servers (the simulated relay board) over TCP and RTU-over-pty."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable

import pytest

from drivers.modbus import ModbusRtuBusConfig, ModbusTcpBusConfig
from drivers.modbus_bus import COIL_OFF, COIL_ON, DeviceUnavailable, ModbusBus, ModbusRequestError
from edge.sim.relay_board import RelayBoardSim
from tests.support.modbus import eventually, free_port, rtu_board, tcp_board
from tests.support.ptys import PtyPair

FAST = {"timeout": 0.15, "retries": 1, "offline_after": 2, "probe_min_s": 0.1, "probe_max_s": 0.4}


def rtu_cfg(port: str, **kw: object) -> ModbusRtuBusConfig:
    return ModbusRtuBusConfig.model_validate({"type": "modbus_rtu", "port": port, **FAST, **kw})


def tcp_cfg(port: int, **kw: object) -> ModbusTcpBusConfig:
    return ModbusTcpBusConfig.model_validate(
        {"type": "modbus_tcp", "host": "127.0.0.1", "port": port, **FAST, **kw}
    )


class Status:
    def __init__(self, bus: ModbusBus) -> None:
        self.seen: list[tuple[int, bool, str | None]] = []
        bus.on_status(lambda d, online, err: self.seen.append((d, online, err)))

    def has(self, device_id: int, online: bool) -> bool:
        return any(d == device_id and o == online for d, o, _ in self.seen)


@pytest.fixture
async def tcp_bus() -> AsyncIterator[tuple[RelayBoardSim, ModbusBus]]:
    sim = RelayBoardSim([1])
    port = free_port()
    async with tcp_board(sim, port):
        bus = ModbusBus("tcp0", tcp_cfg(port))
        await bus.start()
        try:
            yield sim, bus
        finally:
            await bus.stop()


async def test_tcp_coil_write_and_inputs(tcp_bus: tuple[RelayBoardSim, ModbusBus]) -> None:
    sim, bus = tcp_bus
    await bus.write_coil(1, 3, True)
    assert sim.coil(1, 3)
    await bus.write_coil(1, 3, False)
    assert not sim.coil(1, 3)
    assert [w.value for w in sim.writes_to(1, 3)] == [COIL_ON, COIL_OFF]

    sim.set_input(1, 5, True)
    assert await bus.read_discrete_inputs(1, 4, 3) == [False, True, False]
    assert bus.is_online(1)


async def test_exception_reply_is_an_error_but_device_stays_online(
    tcp_bus: tuple[RelayBoardSim, ModbusBus],
) -> None:
    sim, bus = tcp_bus
    for _ in range(3):
        with pytest.raises(ModbusRequestError):
            await bus.write_coil(1, 40, True)  # the board has 8 channels
    assert bus.is_online(1)
    await bus.write_coil(1, 0, True)
    assert sim.coil(1, 0)


async def test_urgent_write_goes_ahead_of_queued_polls(tcp_bus: tuple[RelayBoardSim, ModbusBus]) -> None:
    sim, bus = tcp_bus
    done_reads: list[int] = []
    reads_done_when_written: list[int] = []
    sim.on_write(lambda w: reads_done_when_written.append(len(done_reads)))

    async def read(i: int) -> None:
        await bus.read_discrete_inputs(1, 0, 8)
        done_reads.append(i)

    polls = [asyncio.create_task(read(i)) for i in range(20)]
    await asyncio.sleep(0)  # the polls are queued first
    await bus.write_coil(1, 0, True)
    await asyncio.gather(*polls)
    assert len(done_reads) == 20
    assert reads_done_when_written[0] < 20


async def test_rtu_over_pty(pty_pair: PtyPair) -> None:
    sim = RelayBoardSim([1])
    async with rtu_board(sim, str(pty_pair.a)):
        bus = ModbusBus("rtu0", rtu_cfg(str(pty_pair.b)))
        await bus.start()
        try:
            await bus.write_coil(1, 2, True)
            await bus.write_coil_raw(1, 0x0202, 7)
            sim.set_input(1, 0, True)
            assert await bus.read_discrete_inputs(1, 0, 2) == [True, False]
        finally:
            await bus.stop()
    assert [(w.address, w.value) for w in sim.writes] == [(2, COIL_ON), (0x0202, 7)]


async def test_dead_device_beside_live_one_on_rtu(pty_pair: PtyPair) -> None:
    sim = RelayBoardSim([1])  # unit 2 is wired but dead: nobody answers for it
    async with rtu_board(sim, str(pty_pair.a)):
        bus = ModbusBus("rtu0", rtu_cfg(str(pty_pair.b)))
        status = Status(bus)
        bus.register_device(2)
        await bus.start()
        try:
            for _ in range(2):
                with pytest.raises(DeviceUnavailable):
                    await bus.write_coil(2, 0, True)
            assert status.has(2, False)
            assert not bus.is_online(2)
            with pytest.raises(DeviceUnavailable, match="offline"):
                await bus.write_coil(2, 0, True)  # fails fast, never reaches the line

            # Unit 1 keeps working while unit 2 is probed in the background.
            ok = 0
            for i in range(30):
                try:
                    await bus.write_coil(1, i % 8, i % 2 == 0)
                    ok += 1
                except DeviceUnavailable:
                    pass
                await asyncio.sleep(0.02)
            assert ok == 30
            assert len(sim.writes_to(1)) == 30
            assert bus.is_online(1)
            assert not status.has(1, False)

            sim.add_device(2)  # the board comes back
            assert await eventually(lambda: bus.is_online(2), timeout=10)
            assert status.seen[-1] == (2, True, None)
            await bus.write_coil(2, 0, True)
            assert sim.coil(2, 0)
        finally:
            await bus.stop()


async def test_serial_port_vanishing_does_not_kill_the_bus(pty_pair: PtyPair) -> None:
    sim = RelayBoardSim([1])
    bus = ModbusBus("rtu0", rtu_cfg(str(pty_pair.b), keepalive_s=0.1))
    status = Status(bus)
    bus.register_device(1)
    async with rtu_board(sim, str(pty_pair.a)):
        await bus.start()
        await bus.write_coil(1, 0, True)
    try:
        pty_pair.stop()  # USB adapter unplugged
        assert await eventually(lambda: status.has(1, False), timeout=10)
        with pytest.raises(DeviceUnavailable):
            await bus.write_coil(1, 0, False)

        pty_pair.start()  # plugged back in (new pty, same path)
        async with rtu_board(sim, str(pty_pair.a)):
            assert await eventually(lambda: bus.is_online(1), timeout=10)
            await bus.write_coil(1, 0, False)
            assert not sim.coil(1, 0)
    finally:
        await bus.stop()


async def test_tcp_server_restart_reconnects() -> None:
    sim = RelayBoardSim([1])
    port = free_port()
    bus = ModbusBus("tcp0", tcp_cfg(port, keepalive_s=0.1))
    status = Status(bus)
    bus.register_device(1)
    try:
        async with tcp_board(sim, port):
            await bus.start()
            await bus.write_coil(1, 1, True)
        assert await eventually(lambda: status.has(1, False), timeout=10)
        async with tcp_board(sim, port):
            assert await eventually(lambda: bus.is_online(1), timeout=10)
            await bus.write_coil(1, 1, False)
        assert [w.value for w in sim.writes_to(1, 1)] == [COIL_ON, COIL_OFF]
    finally:
        await bus.stop()


async def test_requests_fail_cleanly_when_stopped() -> None:
    bus = ModbusBus("tcp0", tcp_cfg(free_port()))
    with pytest.raises(DeviceUnavailable):
        await bus.write_coil(1, 0, True)


# ------------------------------------------------------------ a dead unit beside a healthy one


@contextlib.asynccontextmanager
async def two_units(
    transport: str, request: pytest.FixtureRequest, **kw: object
) -> AsyncIterator[tuple[RelayBoardSim, ModbusBus]]:
    """Units 1 and 2 behind one TCP server, or both on one RTU line; both registered, the bus started."""
    sim = RelayBoardSim([1, 2])
    if transport == "tcp":
        port = free_port()
        board, cfg = tcp_board(sim, port), tcp_cfg(port, **kw)
    else:
        pair: PtyPair = request.getfixturevalue("pty_pair")
        board, cfg = rtu_board(sim, str(pair.a)), rtu_cfg(str(pair.b), **kw)
    async with board:
        bus = ModbusBus(transport, cfg)
        for d in (1, 2):
            bus.register_device(d)
        await bus.start()
        try:
            await bus.write_coil(1, 7, False)  # link up before the scenario starts
            yield sim, bus
        finally:
            await bus.stop()


async def fails(coro: Awaitable[object]) -> bool:
    try:
        await coro
    except DeviceUnavailable:
        return True
    return False


@pytest.mark.parametrize("transport", ["tcp", "rtu"])
async def test_healthy_write_waits_behind_at_most_one_request_to_a_silent_unit(
    transport: str, request: pytest.FixtureRequest
) -> None:
    async with two_units(transport, request, timeout=0.3, retries=2, offline_after=5) as (sim, bus):
        await bus.read_discrete_inputs(2, 0, 1)  # unit 2 answers once: the bus knows its round trip
        sim.remove_device(2)  # unit 2 goes silent while it still looks healthy
        order: list[str] = []
        sim.on_write(lambda w: order.append(f"write {w.device_id}"))
        start = len(sim.requests)

        async def poll_dead() -> None:
            order.append("poll failed" if await fails(bus.read_discrete_inputs(2, 0, 2)) else "poll ok")

        before = len(sim.requests_to(2))
        poller = asyncio.create_task(poll_dead())
        assert await eventually(lambda: len(sim.requests_to(2)) > before)  # the poll is on the line
        await bus.write_coil(1, 0, True)
        await poller
        line = [r.device_id for r in sim.requests[start:]]
        assert line[: line.index(1)].count(2) == 1  # the write went out after one unit-2 request, no retry
        assert "poll failed" in order
        # The write preempts the in-flight poll: at once on TCP (transaction ids make the abandoned read
        # harmless), on RTU once unit 2 is overdue by three of its round trips - well before the timeout.
        assert order.index("write 1") < order.index("poll failed")


async def test_on_rtu_a_unit_that_answers_late_is_marked_slow_and_no_longer_cut(pty_pair: PtyPair) -> None:
    async with two_units("rtu", _Req(pty_pair), timeout=0.4, retries=2, offline_after=5) as (sim, bus):
        assert await bus.read_discrete_inputs(2, 0, 1) == [False]  # a fast answer: its round trip is known
        sim.set_delay(2, 0.15)  # now it answers well after 3 round trips, within the timeout

        async def round_trip() -> int:
            start = len(sim.requests)
            poll = asyncio.create_task(bus.read_discrete_inputs(2, 0, 1))
            assert await eventually(lambda: len(sim.requests) > start)  # the poll is on the line
            await bus.write_coil(1, 3, True)  # an actuation while unit 2's poll is in flight
            assert await poll == [False]
            return sum(r.device_id == 2 for r in sim.requests[start:])

        first = await round_trip()
        assert first >= 2  # overdue: cut for the write, then sent again
        assert await eventually(lambda: bus._devices[2].slow)
        assert await round_trip() == 1  # slow now: the write waits for its answer, no second request
        assert sim.coil(1, 3)


class _Req:
    """Stands in for pytest's request so two_units can take an RTU pty pair given directly."""

    def __init__(self, pair: PtyPair) -> None:
        self.pair = pair

    def getfixturevalue(self, name: str) -> PtyPair:
        assert name == "pty_pair"
        return self.pair


async def test_no_retries_for_a_unit_that_has_just_failed(pty_pair: PtyPair) -> None:
    sim = RelayBoardSim([1])  # unit 2 is dead
    async with rtu_board(sim, str(pty_pair.a)):
        bus = ModbusBus("rtu0", rtu_cfg(str(pty_pair.b), retries=2, offline_after=10))
        bus.register_device(2)
        await bus.start()
        try:
            assert await fails(bus.write_coil(2, 0, True))
            first = len(sim.requests_to(2))
            assert first == 3  # it was healthy: an actuation gets its retries
            assert await fails(bus.write_coil(2, 0, True))
            assert len(sim.requests_to(2)) == first + 1  # suspect now: one attempt
            assert await fails(bus.read_discrete_inputs(2, 0, 1))
            assert len(sim.requests_to(2)) == first + 2
            assert bus.is_online(2)  # 5 failures < offline_after
        finally:
            await bus.stop()


@pytest.mark.parametrize("transport", ["tcp", "rtu"])
async def test_a_suspect_units_queued_work_goes_after_other_units_work(
    transport: str, request: pytest.FixtureRequest
) -> None:
    async with two_units(transport, request, retries=1, offline_after=5) as (sim, bus):
        sim.remove_device(2)
        assert await fails(bus.read_discrete_inputs(2, 0, 1))  # one failure: unit 2 is suspect
        start = len(sim.requests)
        # Queued in one go, before the worker picks any: the dead unit's work first, in arrival order.
        jobs = [
            bus.read_discrete_inputs(2, 0, 1),
            bus.read_discrete_inputs(1, 0, 1),
            bus.read_discrete_inputs(1, 1, 1),
            bus.write_coil(2, 0, True),
            bus.write_coil(1, 0, True),
        ]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        assert [isinstance(r, DeviceUnavailable) for r in results] == [True, False, False, True, False]
        line = [(r.device_id, r.function_code) for r in sim.requests[start:]]
        # healthy actuation, then the suspect's actuation (one attempt), healthy polls, the suspect's poll
        assert line == [(1, 5), (2, 5), (1, 2), (1, 2), (2, 2)]


def test_probe_timeout_defaults_short_and_never_exceeds_timeout() -> None:
    assert rtu_cfg("/dev/null", timeout=0.3).probe_timeout_s == 0.1
    assert rtu_cfg("/dev/null", timeout=0.05).probe_timeout_s == 0.05
    assert tcp_cfg(502, timeout=0.5, probe_timeout=0.2).probe_timeout_s == 0.2
    assert tcp_cfg(502, timeout=0.1, probe_timeout=0.2).probe_timeout_s == 0.1


async def test_a_late_reply_on_rtu_is_not_taken_as_the_answer_to_the_next_request(pty_pair: PtyPair) -> None:
    sim = RelayBoardSim([1])
    sim.set_delay(1, 0.25)  # a slow board: it switches at once, its echo comes after our timeout
    async with rtu_board(sim, str(pty_pair.a)):
        bus = ModbusBus("rtu0", rtu_cfg(str(pty_pair.b), retries=0, offline_after=5, probe_timeout=0.15))
        await bus.start()
        try:
            assert await fails(bus.write_coil(1, 0, True))
            assert sim.coil(1, 0)
            # The write's late echo arrives while this read waits; RTU frames carry no transaction id.
            try:
                bits = await bus.read_discrete_inputs(1, 0, 1)
            except ModbusRequestError:
                bits = None
            assert bits in (None, [False])  # input 0 is off: an echo of "coil on" is not its value
        finally:
            await bus.stop()


async def test_a_board_slower_than_probe_timeout_still_comes_back(pty_pair: PtyPair) -> None:
    sim = RelayBoardSim([1])
    async with rtu_board(sim, str(pty_pair.a)):
        cfg = rtu_cfg(str(pty_pair.b), timeout=0.5, probe_timeout=0.1, retries=0, offline_after=1)
        bus = ModbusBus("rtu0", cfg)
        status = Status(bus)
        bus.register_device(1)
        await bus.start()
        try:
            sim.remove_device(1)
            assert await fails(bus.write_coil(1, 0, True))
            assert status.has(1, False)
            sim.add_device(1)
            sim.set_delay(1, 0.2)  # back, but it answers later than probe_timeout (within timeout)
            assert await eventually(lambda: bus.is_online(1), timeout=5)
        finally:
            await bus.stop()


# ------------------------------------------------------------ FC15: many coils in one request


@pytest.mark.parametrize("transport", ["tcp", "rtu"])
async def test_write_coils_is_one_fc15_request_with_write_coil_health(
    transport: str, request: pytest.FixtureRequest
) -> None:
    async with two_units(transport, request, retries=1, offline_after=2) as (sim, bus):
        sim.set_coil(1, 6, True)  # outside the span: FC15 leaves it alone
        start = len(sim.requests)
        await bus.write_coils(1, 2, [True, False, True, True])
        assert [(r.device_id, r.function_code, r.address) for r in sim.requests[start:]] == [(1, 15, 2)]
        assert [sim.coil(1, n) for n in range(8)] == [False, False, True, False, True, True, True, False]
        assert {w.function_code for w in sim.writes_to(1)} == {5, 15}  # the FC05 of two_units, then FC15
        assert [(w.address, w.on) for w in sim.writes if w.function_code == 15] == [
            (2, True), (3, False), (4, True), (5, True)
        ]  # fmt: skip
        with pytest.raises(ModbusRequestError):
            await bus.write_coils(1, 6, [True, True, True])  # past the 8 channels: an exception reply
        assert bus.is_online(1)
        with pytest.raises(ValueError):
            await bus.write_coils(1, 0, [])  # refused before it reaches the line

        sim.remove_device(2)  # a dead board: FC15 to it fails and counts towards offline like FC05
        assert await fails(bus.write_coils(2, 0, [True, True]))
        assert not bus.is_online(2)
        with pytest.raises(DeviceUnavailable, match="offline"):
            await bus.write_coils(2, 0, [True, True])
        await bus.write_coils(1, 0, [True, True])  # the live board beside it is untouched
        assert sim.coil(1, 0) and sim.coil(1, 1)


async def test_a_bus_worker_that_dies_is_restarted_and_the_job_it_held_fails(
    tcp_bus: tuple[RelayBoardSim, ModbusBus],
) -> None:
    sim, bus = tcp_bus
    real = bus._succeeded
    calls = 0

    def buggy(device_id: int) -> None:  # a bug in the worker's own bookkeeping, once
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("bug")
        real(device_id)

    bus._succeeded = buggy  # type: ignore[method-assign]
    with pytest.raises(DeviceUnavailable, match="bus worker restarted"):
        await asyncio.wait_for(bus.write_coil(1, 2, True), 5)  # answered, not left waiting forever
    await asyncio.wait_for(bus.write_coil(1, 3, True), 5)  # the restarted worker serves the bus again
    assert sim.coil(1, 3)
    assert [w.address for w in sim.writes_to(1)][-2:] == [2, 3]


@pytest.mark.parametrize("transport", ["tcp", "rtu"])
async def test_probes_of_an_offline_unit_are_short_and_wait_behind_queued_actuations(
    transport: str, request: pytest.FixtureRequest
) -> None:
    """Issue 6 item 3: an offline unit is probed with probe_timeout, not timeout, and only when no
    actuation is queued: a burst of writes to a healthy unit goes out with no probe between them."""
    kw = {"timeout": 1.0, "probe_timeout": 0.05, "retries": 0, "offline_after": 1,
          "probe_min_s": 0.01, "probe_max_s": 0.01}  # fmt: skip
    async with two_units(transport, request, **kw) as (sim, bus):
        sim.remove_device(2)
        assert await fails(bus.read_discrete_inputs(2, 0, 1))
        assert not bus.is_online(2)
        before = len(sim.requests_to(2))
        # three probes in well under two full timeouts: each gives up after probe_timeout
        assert await eventually(lambda: len(sim.requests_to(2)) >= before + 3, timeout=0.9)
        sim.set_delay(1, 0.02)  # each write holds the line 20 ms: probes fall due meanwhile (backoff 0.01 s)
        start = len(sim.requests)

        def write(n: int) -> asyncio.Task[None]:
            return asyncio.create_task(bus.write_coil(1, n % 8, n % 2 == 0))

        # Writes always wait behind the one in flight: each new write is queued after probes that fell
        # due before it, so only the tiers (actuations first) keep the probes out of the burst.
        pending = [write(n) for n in range(4)]
        for n in range(4, 20):
            await pending.pop(0)  # three more still queued: the queue is never empty of writes
            pending.append(write(n))
        await asyncio.gather(*pending)
        line = [(r.device_id, r.function_code) for r in sim.requests[start:]]
        first = line.index((1, 5))
        last = len(line) - 1 - line[::-1].index((1, 5))
        assert line[first : last + 1] == [(1, 5)] * 20, line  # no probe between the queued writes
        assert line[:first].count((2, 1)) <= 1  # at most the probe that was on the line already
        assert await eventually(lambda: len(sim.requests_to(2)) > before + 3)  # probing goes on after
