"""Broker down while a real `edge run` decides presentations: after it returns, every event reaches the
cloud, oldest first (the short run of scripts/proof_broker_down.py)."""

from __future__ import annotations

from pathlib import Path

from tests.support.proof_outage import outage_run
from tests.support.proof_rig import open_rig


async def test_broker_down_then_back_everything_delivered_oldest_first(tmp_path: Path) -> None:
    async with open_rig(tmp_path) as rig:
        r = await outage_run(rig, events=3000, down_s=20, drain_within=180)
    report = "\n".join(r.lines())
    assert r.decided_while_down > 1000, f"too few events produced during the outage:\n{report}"
    assert r.missing == [], f"events missing at the cloud:\n{report}"
    assert r.order_violations == 0 and r.ts_violations == 0, f"backlog not oldest first:\n{report}"
    assert r.delivered >= r.decided
