"""Proof: Mosquitto down for M minutes while a real `edge run` decides E presentations; then it returns.

Codes arrive on a pty scanner at E / (M x 60) per second, each a grant that pulses a RelayBoardSim door;
the broker is stopped before the first and started after the last. Prints counts, order violations as
the cloud saw them (first arrival of each id vs presentation order and vs `ts`) and the time to drain;
exits 1 when an event is missing or out of order.

    .venv/bin/python scripts/proof_broker_down.py [--minutes 10] [--events 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
from pathlib import Path

import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.proof_outage import outage_run  # noqa: E402
from tests.support.proof_rig import open_rig  # noqa: E402


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0, help="how long the broker stays down")
    ap.add_argument("--events", type=int, default=100_000, help="presentations made while it is down")
    a = ap.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("pymodbus").setLevel(logging.ERROR)
    tmp = Path(tempfile.mkdtemp(prefix="proof-broker-down-"))
    print(f"work dir {tmp}; minting {a.events} codes, then the broker goes down", flush=True)
    async with open_rig(tmp) as rig:
        r = await outage_run(
            rig, events=a.events, down_s=a.minutes * 60, drain_within=max(600.0, a.minutes * 60)
        )
    for line in r.lines():
        print(line)
    bad = len(r.missing) + r.order_violations + r.ts_violations
    print("RESULT", "OK" if bad == 0 and r.decided_while_down > 0 else "FAIL")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
