"""Remote open latency: R/cmd published by the cloud -> coil write seen by a simulated relay board.

A real Gateway (edge.app) in this process with one door on a Modbus TCP RelayBoardSim, a loopback
Mosquitto, and the cloud client signing commands. Each command is sent after the previous one's
coil write arrived; the latency includes broker hops, signature check, the durable replay mark
(fsync) and the Modbus write. The broker runs with `set_tcp_nodelay true` (docs/mqtt.md explains
why); --broker-nagle shows Mosquitto's default.

    .venv/bin/python bench/bench_remote_open.py [--n 200]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge.app import Gateway  # noqa: E402
from edge.config import load_config  # noqa: E402
from edge.logs import setup_logging  # noqa: E402
from edge.sim.cloud_client import CloudClient, command_claims  # noqa: E402
from edge.sim.relay_board import RelayBoardSim  # noqa: E402
from edge.tokens import mint_token  # noqa: E402
from tests.support.broker import Broker  # noqa: E402
from tests.support.gateway import SITE, Signer, free_port, gateway_config  # noqa: E402


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument(
        "--broker-nagle",
        action="store_true",
        help="broker without set_tcp_nodelay (its default): +~35 ms a command",
    )
    a = ap.parse_args()
    setup_logging("warning", "console")
    tmp = Path(tempfile.mkdtemp(prefix="bench-open-"))
    sim = RelayBoardSim([1])
    mport = free_port()
    started = asyncio.Event()
    srv = asyncio.create_task(sim.serve_tcp("127.0.0.1", mport, started=started))
    await started.wait()
    signer = Signer()
    extra = "" if a.broker_nagle else "set_tcp_nodelay true\n"
    with Broker(tmp / "broker", extra=extra) as broker:
        path = gateway_config(
            tmp,
            signer=signer,
            bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": mport},
            readers={},
            door={"pulse_ms": 100},
            mqtt={"host": "127.0.0.1", "port": broker.port},
        )
        cfg = load_config(path)
        gw = Gateway(cfg)
        await gw.start()
        while not getattr(gw.cloud, "connected", False):
            await asyncio.sleep(0.05)
        cloud = CloudClient("127.0.0.1", broker.port, SITE, cfg.gateway.id, persistent=False).connect()
        lat: list[float] = []
        opened: list[float] = []
        called: list[float] = []
        real_act = gw.act  # every remote command reaches the device through Gateway.act

        async def timed_act(target: str, action: str, args: Any) -> str | None:
            called.append(time.monotonic())
            return await real_act(target, action, args)

        gw.act = timed_act  # type: ignore[method-assign]
        try:
            for _ in range(a.n):
                token = mint_token(
                    signer.key, signer.kid, command_claims(SITE, cfg.gateway.id, "open", "north-gate")
                )
                before = len(sim.writes)
                t0 = time.monotonic()
                cloud.publish("cmd", token, wait=False)
                deadline = t0 + 5
                while len(sim.writes) == before and time.monotonic() < deadline:
                    await asyncio.sleep(0.0002)
                if len(sim.writes) == before:
                    print("no coil write within 5 s", file=sys.stderr)
                    continue
                lat.append((sim.writes[before].t - t0) * 1000)
                opened.append((called[-1] - t0) * 1000 if called else float("nan"))
                await asyncio.sleep(0.01)
        finally:
            cloud.close()
            await gw.stop()
            srv.cancel()
    print(f"remote open, R/cmd publish -> coil write at the relay board, n={len(lat)}: "
          f"p50 {pct(lat, 50):.2f} ms, p99 {pct(lat, 99):.2f} ms, max {max(lat):.2f} ms")  # fmt: skip
    print(
        f"  of which publish -> Gateway.act called: p50 {pct(opened, 50):.2f} ms, p99 {pct(opened, 99):.2f} ms"
    )


if __name__ == "__main__":
    asyncio.run(main())
