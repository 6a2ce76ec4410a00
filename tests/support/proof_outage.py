"""Proof: the broker is down while a real `edge run` decides presentations; all arrive after, oldest first.

Shared by scripts/proof_broker_down.py and tests/test_proof_broker_down.py. Events are produced the
real way (distinct signed codes on the pty scanner, each one a grant that pulses the door), the outage
is Mosquitto stopped, and order is judged by the cloud: the first arrival of each event id, in
arrival order, must follow the presentation order (the code numbers) and the events' `ts`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass

from tests.support.daemon import Daemon
from tests.support.proof_rig import Presenter, Rig

PREFIX = "bd-"


@dataclass
class OutageReport:
    down_s: float
    written: int
    decided: int  # decision log lines for our codes
    decided_while_down: int
    delivered: int  # distinct ids of our codes at the cloud
    missing: list[str]
    grants: int  # of those delivered, grants (the rest: denials, failed-actuation follow-ups)
    order_violations: int  # grants, in first-arrival order, whose code number is below the one before
    ts_violations: int  # first arrivals whose ts is below the one before
    duplicate_ids: int
    drain_s: float  # broker back -> the cloud has every decided event
    messages: int  # R/events messages received

    def lines(self) -> list[str]:
        return [
            f"broker down                   {self.down_s:.0f} s",
            f"presentations written         {self.written}",
            f"events decided                {self.decided}  ({self.decided_while_down} while the broker was down)",
            f"delivered to the cloud        {self.delivered}  in {self.messages} messages"
            f" ({self.grants} grants, {self.delivered - self.grants} other: e.g. device_unavailable)",
            f"missing at the cloud          {len(self.missing)}  {self.missing[:5]}",
            f"order violations (code order) {self.order_violations}",
            f"order violations (ts)         {self.ts_violations}",
            f"duplicate event ids at cloud  {self.duplicate_ids}",
            f"time to drain after broker up {self.drain_s:.1f} s",
        ]


def _decided(gw: Daemon) -> list[str]:
    return [
        str(ln["credential"])
        for ln in list(gw.lines)
        if ln.get("event") == "decision" and str(ln.get("credential", "")).startswith(PREFIX)
    ]


class Arrivals:
    """Our events in order of first arrival at the cloud, parsed incrementally (polled while draining)."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.first: dict[str, dict[str, object]] = {}
        self.dups: set[str] = set()
        self.messages = 0

    def update(self) -> Arrivals:
        msgs = self.rig.cloud.on("events")
        for r in msgs[self.messages :]:
            for e in r.json()["events"]:
                if not str(e.get("credential", "")).startswith(PREFIX):
                    continue
                if e["id"] in self.first:
                    self.dups.add(e["id"])
                else:
                    self.first[e["id"]] = e
        self.messages = len(msgs)
        return self

    def credentials(self) -> set[str]:
        return {str(e["credential"]) for e in self.first.values()}


async def outage_run(rig: Rig, *, events: int, down_s: float, drain_within: float = 600.0) -> OutageReport:
    """``events`` presentations at events/down_s per second while the broker is down for ``down_s``."""
    gw = Daemon(rig.cfg)
    try:
        await gw.wait_for("mqtt_connected", timeout=60)
        await gw.wait_for("device_status", device="qr-north", online=True)
        pres = Presenter(
            rig, events / down_s, events, prefix=PREFIX, premint=True
        )  # minted before the clock starts
        rig.cloud.c.reconnect_delay_set(0.2, 1)  # the cloud back within 1 s of the broker: drain is ours
        rig.broker.stop()
        await gw.wait_for("mqtt_connection_lost", timeout=30)
        t_down = time.monotonic()
        pres.start()
        while pres.is_alive() and time.monotonic() - t_down < down_s + 5:
            await asyncio.sleep(0.2)
        await asyncio.sleep(max(0.0, down_s - (time.monotonic() - t_down)))
        pres.stop()
        await asyncio.sleep(1.0)  # the last lines decided
        while_down = len(_decided(gw))
        rig.broker.start()
        t_up = time.monotonic()
        down = t_up - t_down
        want = set(_decided(gw))
        deadline = t_up + drain_within
        drain = float("nan")
        arrivals = Arrivals(rig)
        while time.monotonic() < deadline:
            if want <= arrivals.update().credentials():
                drain = time.monotonic() - t_up
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # late duplicates, if any, would show now
    finally:
        gw.finish()
    decided = _decided(gw)
    arrivals.update()
    got, dups, msgs = list(arrivals.first.values()), len(arrivals.dups), arrivals.messages
    # a grant whose actuation failed is followed by a `device_unavailable` event with the same code:
    # later in seq and ts, so code order is judged on the grants, ts order on every event
    grants = [e for e in got if e.get("result") == "granted"]
    nums = [int(str(e["credential"])[len(PREFIX) :]) for e in grants]
    (rig.tmp / "cloud-first-arrivals.ndjson").write_text("".join(json.dumps(e) + "\n" for e in got))
    ts = [int(e["ts"]) for e in got]  # type: ignore[call-overload]
    return OutageReport(
        down_s=down,
        written=pres.written,
        decided=len(decided),
        decided_while_down=while_down,
        delivered=len(got),
        grants=len(grants),
        missing=sorted(set(decided) - {str(e["credential"]) for e in got}),
        order_violations=sum(1 for a, b in itertools.pairwise(nums) if b < a),
        ts_violations=sum(1 for a, b in itertools.pairwise(ts) if b < a),
        duplicate_ids=dups,
        drain_s=drain,
        messages=msgs,
    )
