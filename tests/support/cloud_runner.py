"""Run a CloudLink in its own process (for kill -9 tests): the link, a real Outbox and store.

python -m tests.support.cloud_runner DATA_DIR PORT [--inflight N]
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from edge.logs import setup_logging
from tests.support.cloud import LinkHarness, make_config


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("port", type=int)
    ap.add_argument("--inflight", type=int, default=20)
    args = ap.parse_args()
    setup_logging("info", "json")
    cfg = make_config(args.data_dir, args.port, {}, inflight=args.inflight)
    h = LinkHarness(cfg)
    await h.start(wait_connected=False)
    assert h.task is not None
    await h.task


if __name__ == "__main__":
    asyncio.run(main())
