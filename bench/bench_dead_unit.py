"""A dead unit beside a healthy door on one bus: the healthy door's actuation latency per 10 s window.

Two relay boards (unit 1 healthy, unit 2 about to die) share one bus: Modbus TCP on loopback with both
unit ids behind one pymodbus server, and Modbus RTU over a socat pty with both unit ids on the line.
Both units have their inputs polled like doors with sensors. Unit 1 is actuated at a steady rate
through ModbusBus (open loop: a stalled write does not delay the next submission); after the baseline
window unit 2 stops answering. Latency is submission -> the FC05 seen by the server (its monotonic
timestamp), per 10 s window; the bus uses the production defaults of drivers/modbus.py.

    .venv/bin/python bench/bench_dead_unit.py [--transport tcp|rtu|both] [--rate 20] [--after 30]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import structlog  # noqa: E402

from drivers.modbus import ModbusRtuBusConfig, ModbusTcpBusConfig  # noqa: E402
from drivers.modbus_bus import DeviceUnavailable, ModbusBus  # noqa: E402
from edge.sim.relay_board import RelayBoardSim  # noqa: E402
from tests.support.modbus import free_port, rtu_board, tcp_board  # noqa: E402
from tests.support.ptys import PtyPair  # noqa: E402

HEALTHY, DEAD = 1, 2
WINDOW_S = 10.0
FLASH_ON = 0x0200  # flash writes carry a unique value per tap, so each server write maps to its tap


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


async def poll(bus: ModbusBus, device_id: int, stop: asyncio.Event) -> None:
    """A door's input poller: FC02 every poll_interval_s, failures ignored (the bus tracks health)."""
    while not stop.is_set():
        try:
            await bus.read_discrete_inputs(device_id, 0, 2)
        except DeviceUnavailable:
            pass
        await asyncio.sleep(bus.poll_interval_s)


async def run(bus: ModbusBus, sim: RelayBoardSim, rate: float, after_s: float) -> list[str]:
    seen: dict[int, float] = {}
    sim.on_write(lambda w: seen.setdefault(w.value, w.t) if w.device_id == HEALTHY else None)
    offline_at: list[float] = []
    bus.on_status(
        lambda d, online, _e: offline_at.append(time.monotonic()) if d == DEAD and not online else None
    )
    for d in (HEALTHY, DEAD):
        bus.register_device(d)
    await bus.start()
    stop = asyncio.Event()
    pollers = [asyncio.create_task(poll(bus, d, stop)) for d in (HEALTHY, DEAD)]
    submitted: dict[int, float] = {}
    failed = 0
    tasks: list[asyncio.Task[None]] = []

    async def tap(value: int) -> None:
        nonlocal failed
        submitted[value] = time.monotonic()
        try:
            await bus.write_coil_raw(HEALTHY, FLASH_ON, value)
        except DeviceUnavailable:
            failed += 1

    warmup, baseline = 2.0, WINDOW_S
    t0 = time.monotonic()
    death = t0 + warmup + baseline
    end = death + after_s
    k = 0
    died = False
    while True:
        due = t0 + k / rate
        if due >= end:
            break
        if not died and due >= death:
            sim.remove_device(DEAD)  # unit 2 goes silent, like a dead board
            died = True
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        k += 1
        tasks.append(asyncio.create_task(tap(k % 60000 + 1)))
    await asyncio.gather(*tasks)
    stop.set()
    for p in pollers:
        p.cancel()
    await asyncio.gather(*pollers, return_exceptions=True)
    await bus.stop()

    rows: list[str] = []
    starts = [death - baseline + i * WINDOW_S for i in range(round((end - death) / WINDOW_S) + 1)]
    base_p99 = 0.0
    for i, ws in enumerate(starts):
        lat = [(seen[v] - t) * 1000 for v, t in submitted.items() if ws <= t < ws + WINDOW_S and v in seen]
        if not lat:
            continue
        name = "healthy baseline" if i == 0 else f"dead +{(ws - death):.0f}-{(ws - death + WINDOW_S):.0f} s"
        p99 = pct(lat, 99)
        if i == 0:
            base_p99 = p99
        ratio = p99 / base_p99 if base_p99 else float("nan")
        rows.append(
            f"  {name:<18} n {len(lat):4d}  p50 {pct(lat, 50):7.2f} ms  p99 {p99:7.2f} ms  "
            f"max {max(lat):7.2f} ms  p99/baseline {ratio:5.1f}x"
        )
    off = f"{offline_at[0] - death:.2f} s after it went silent" if offline_at else "never"
    rows.append(f"  unit {DEAD} marked offline {off}; failed healthy writes {failed}; taps {k}")
    return rows


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--transport", choices=["tcp", "rtu", "both"], default="both")
    ap.add_argument("--rate", type=float, default=20.0, help="healthy-door actuations per second")
    ap.add_argument("--after", type=float, default=30.0, help="seconds measured after the unit dies")
    a = ap.parse_args()
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # its "no response" errors are expected here
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    print(
        f"$ .venv/bin/python bench/bench_dead_unit.py --transport {a.transport} --rate {a.rate:g} "
        f"--after {a.after:g}"
    )
    if a.transport in ("tcp", "both"):
        sim = RelayBoardSim([HEALTHY, DEAD])
        port = free_port()
        async with tcp_board(sim, port):
            cfg = ModbusTcpBusConfig.model_validate({"type": "modbus_tcp", "host": "127.0.0.1", "port": port})
            rows = await run(ModbusBus("tcp", cfg), sim, a.rate, a.after)
        print(
            f"modbus tcp (loopback, timeout {cfg.timeout} s), {a.rate:g} taps/s on unit {HEALTHY}, "
            f"unit {DEAD} silent after the baseline; latency = submit -> write seen at the server"
        )
        print("\n".join(rows))
    if a.transport in ("rtu", "both"):
        sim = RelayBoardSim([HEALTHY, DEAD])
        with PtyPair(Path(tempfile.mkdtemp(prefix="bench-dead-")), "rtu") as pty:
            async with rtu_board(sim, str(pty.a)):
                rcfg = ModbusRtuBusConfig.model_validate({"type": "modbus_rtu", "port": str(pty.b)})
                rows = await run(ModbusBus("rtu", rcfg), sim, a.rate, a.after)
        print(
            f"modbus rtu (socat pty, timeout {rcfg.timeout} s), {a.rate:g} taps/s on unit {HEALTHY}, "
            f"unit {DEAD} silent after the baseline; latency = submit -> write seen at the server"
        )
        print("\n".join(rows))


if __name__ == "__main__":
    asyncio.run(main())
