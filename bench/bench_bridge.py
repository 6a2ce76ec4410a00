"""Bridge ingest with 1,000 simulated gateways: events/s into MariaDB with 1 and 2 `edge-bridge run`
instances sharing ``$share/<group>/edge/v1/+/+/events``, end-to-end latency, and the whitelist
snapshot build for 100,000 residents.

Real Mosquitto (tests/support/broker.py), the MariaDB on 127.0.0.1:3306 (database
``ejyy_bench_<pid>``, dropped at the end), bridges as subprocesses with their own CLI, the fleet
(bridge/fleet_sim.py) in this process. Throughput = rows in ``bridge_event`` over the span of their
``written_at``; latency = ``written_at - ts`` per event (ts is stamped when the simulated gateway
publishes its batch; ``written_at`` is taken just before the COMMIT, which follows within the
same transaction).

    .venv/bin/python bench/bench_bridge.py [--gateways 1000] [--rate 30000] [--seconds 15]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge import whitelist  # noqa: E402
from bridge.config import BridgeConfig, DbConfig  # noqa: E402
from bridge.db import apply_schema, connect  # noqa: E402
from bridge.fleet_sim import Fleet, gateway_names, gateways_config, percentile  # noqa: E402
from tests.support.broker import Broker  # noqa: E402

SITE = "site-a"
PY = str(ROOT / ".venv" / "bin" / "python")
# The test broker saves its whole store on every change (kill -9 tests); a production broker does not.
BROKER_PROD = "autosave_on_changes false\nautosave_interval 1800\n"


def write_key(path: Path) -> Path:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    from edge.tokens import b64url_encode

    raw = Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    path.write_text(json.dumps({"kid": "bench", "private": b64url_encode(raw)}))
    return path


def create_db(srv: DbConfig, name: str) -> DbConfig:
    admin = connect(srv, database=False)
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    admin.commit()
    admin.close()
    db = srv.model_copy(update={"database": name})
    con = connect(db)
    apply_schema(con, "ejyy")
    apply_schema(con, "bridge")
    con.close()
    return db


def drop_db(srv: DbConfig, name: str) -> None:
    admin = connect(srv, database=False)
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    admin.commit()
    admin.close()


def seed(db: DbConfig, *, community: int, devices: int, residents: int, first_device: int = 1) -> None:
    """A community with ``devices`` entrances and ``residents`` bound users, each with a card."""
    now = int(time.time() * 1000)
    con = connect(db)
    with con.cursor() as cur:
        cur.execute(
            "INSERT INTO ejyy_community_info (id, name, phone, province, city, district, created_by, created_at)"
            " VALUES (%s, 'Bench', '0', 'SH', 'SH', 'PD', 1, %s)", (community, now))  # fmt: skip
        cur.execute(
            "INSERT INTO ejyy_building_info (id, community_id, type, building, number, construction_area,"
            " created_by, created_at) VALUES (%s, %s, 1, '1', '101', 80, 1, %s)",
            (community, community, now),
        )
        cur.executemany(
            "INSERT INTO ejyy_iot_entrance (id, community_id, name, category, sign, secret, created_by, created_at)"
            " VALUES (%s, %s, %s, 1, 's', 'x', 1, %s)",
            [(first_device + i, community, f"door {i}", now) for i in range(devices)],
        )
        base = community * 1_000_000
        for lo in range(0, residents, 5000):
            ids = range(base + lo + 1, base + min(lo + 5000, residents) + 1)
            cur.executemany("INSERT INTO ejyy_wechat_mp_user (id, open_id, union_id, status, created_at)"
                            " VALUES (%s, %s, %s, 1, %s)", [(u, f"o{u}", f"u{u}", now) for u in ids])  # fmt: skip
            cur.executemany("INSERT INTO ejyy_user_building (building_id, wechat_mp_user_id, status, created_at)"
                            " VALUES (%s, %s, 1, %s)", [(community, u, now) for u in ids])  # fmt: skip
            cur.executemany("INSERT INTO bridge_card (uid, wechat_mp_user_id, status, created_at)"
                            " VALUES (%s, %s, 1, %s)", [(f"{u:08X}", u, now) for u in ids])  # fmt: skip
    con.commit()
    con.close()


def bridge_yaml(d: Path, db: DbConfig, port: int, names: list[str], **extra: Any) -> Path:
    cfg = {"site": SITE, "db": db.model_dump(), "mqtt": {"host": "127.0.0.1", "port": port},
           "signing_key": str(write_key(d / "site.key")), "poll_s": 3600.0, "full_diff_s": 3600.0,
           "gateways": gateways_config(names), **extra}  # fmt: skip
    path = d / "bridge.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class BridgeProc:
    """One `python -m bridge.cli run` with a stable client id (so a restart resumes its session)."""

    def __init__(self, d: Path, base_cfg: Path, client_id: str) -> None:
        cfg = yaml.safe_load(base_cfg.read_text())
        cfg["mqtt"]["client_id"] = client_id
        self.cfg = d / f"{client_id}.yaml"
        self.cfg.write_text(yaml.safe_dump(cfg))
        self.log = d / f"{client_id}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> BridgeProc:
        mark = self.log.stat().st_size if self.log.exists() else 0
        self.proc = subprocess.Popen([PY, "-m", "bridge.cli", "run", "-c", str(self.cfg)], cwd=ROOT,
                                     stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"))  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if b"mqtt connected" in self.log.read_bytes()[mark:]:
                time.sleep(0.3)  # SUBACK
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"bridge did not connect: {self.log.read_text()[-2000:]}")

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill9()


def cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mariadbd_pids() -> list[int]:
    out = subprocess.run(["pgrep", "-x", "mariadbd"], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def count(db: DbConfig, sql: str) -> int:
    con = connect(db)
    try:
        with con.cursor() as cur:
            cur.execute(sql)
            return int(cur.fetchone()[0])
    finally:
        con.close()


def wait_rows(db: DbConfig, n: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    got = 0
    while time.monotonic() < deadline:
        got = count(db, "SELECT COUNT(*) FROM bridge_event")
        if got >= n:
            break
        time.sleep(0.5)
    return got


def ingest_run(d: Path, db: DbConfig, broker: Broker, cfg: Path, names: list[str], instances: int,
               rate: float, seconds: float) -> dict[str, Any]:  # fmt: skip
    port = broker.port
    con = connect(db)
    with con.cursor() as cur:
        for t in ("bridge_event", "ejyy_iot_entrance_log", "bridge_whitelist", "bridge_gateway_status"):
            cur.execute(f"TRUNCATE {t}")
    con.commit()
    bridges = [BridgeProc(d, cfg, f"bench-bridge-{i}").start() for i in range(instances)]
    fleet = Fleet("127.0.0.1", port, SITE, names, events_per_s=rate, residents=100)
    try:
        t0 = time.monotonic()
        fleet.start()
        connect_s = time.monotonic() - t0
        deadline = time.monotonic() + 300  # the sync storm: one snapshot per gateway
        while fleet.stats.snapshots < len(names) and time.monotonic() < deadline:
            time.sleep(0.1)
        sync_s = time.monotonic() - t0
        time.sleep(3.0)  # let the status/health backlog settle before timing events
        assert broker.proc is not None
        procs = {"bridges": [b.proc.pid for b in bridges if b.proc], "mosquitto": [broker.proc.pid],
                 "mariadbd (shared server)": mariadbd_pids(), "simulator+bench": [os.getpid()]}  # fmt: skip
        cpu0 = {k: sum(cpu_s(p) for p in v) for k, v in procs.items()}
        w0 = time.monotonic()
        fleet.produce()
        time.sleep(seconds)
        fleet.drain(60)
        sent = fleet.stats.sent
        got = wait_rows(db, sent, 120)
        wall = time.monotonic() - w0
        cpu = {k: round(sum(cpu_s(p) for p in v) - cpu0[k], 1) for k, v in procs.items()}
    finally:
        fleet.close()
        for b in bridges:
            b.stop()
    con = connect(db)
    with con.cursor() as cur:
        cur.execute("SELECT written_at, written_at - ts FROM bridge_event")
        rows = cur.fetchall()
        cur.execute("SELECT COUNT(*) FROM ejyy_iot_entrance_log")
        logs = int(cur.fetchone()[0])
    con.close()
    written = sorted(int(w) for w, _ in rows)
    span_s = (written[-1] - written[0]) / 1000 if len(written) > 1 else float("nan")
    per_s: dict[int, int] = {}
    for w in written:
        per_s[w // 1000] = per_s.get(w // 1000, 0) + 1
    full = sorted(per_s.values())[1:-1] or sorted(per_s.values())  # drop the partial first/last second
    lat = [float(x) for _, x in rows]
    return {"instances": instances, "offered_per_s": round(sent / seconds), "sent": sent, "written": got,
            "log_rows": logs, "events_per_s": round(len(written) / span_s) if span_s else None,
            "median_second": full[len(full) // 2] if full else None, "connect_s": round(connect_s, 2),
            "sync_all_s": round(sync_s, 2), "lat_p50_ms": percentile(lat, 50), "lat_p99_ms": percentile(lat, 99),
            "puback_p99_ms": round(percentile(fleet.stats.ack_ms, 99), 1), "wall_s": round(wall, 1),
            "cpu_s": cpu, "cpu_us_per_event": {k: round(v / max(got, 1) * 1e6) for k, v in cpu.items()}}  # fmt: skip


def snapshot_run(srv: DbConfig, residents: int, d: Path) -> dict[str, Any]:
    name = f"ejyy_bench_snap_{os.getpid()}"
    db = create_db(srv, name)
    try:
        t0 = time.monotonic()
        seed(db, community=2, devices=1, residents=residents, first_device=9001)
        seed_s = time.monotonic() - t0
        cfg = BridgeConfig.model_validate({
            "site": SITE, "db": db.model_dump(), "signing_key": str(write_key(d / "snap.key")),
            "gateways": {"gw-big": {"community_id": 2, "devices": {
                "door": {"kind": "entrance", "ejyy_id": 9001, "zone": "door"}}}}})  # fmt: skip
        con = connect(db)
        now = int(time.time())
        t0 = time.monotonic()
        with con.cursor() as cur:
            entries = whitelist.build_entries(cur, cfg, "gw-big", now)
        build_s = time.monotonic() - t0
        con.commit()
        t0 = time.monotonic()
        version, listed = whitelist.current(con, cfg, "gw-big", now)  # build + diff state + store
        current_s = time.monotonic() - t0
        t0 = time.monotonic()
        parts = whitelist.snapshot_parts(listed, version, "s1", cfg.snapshot_part)
        size = sum(len(json.dumps(p, separators=(",", ":"))) for p in parts)
        encode_s = time.monotonic() - t0
        con.close()
        return {"residents": residents, "entries": len(entries), "seed_s": round(seed_s, 1),
                "build_entries_s": round(build_s, 3), "current_s": round(current_s, 3),
                "parts": len(parts), "encode_s": round(encode_s, 3), "bytes": size}  # fmt: skip
    finally:
        drop_db(srv, name)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gateways", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=30000, help="offered events/s across the fleet")
    ap.add_argument("--latency-rate", type=float, default=2000, help="a second, unsaturated run (0: none)")
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--instances", default="1,2")
    ap.add_argument("--snapshot-residents", type=int, default=100_000)
    ap.add_argument("--batch-max", type=int, default=200)
    args = ap.parse_args()
    srv = DbConfig(host="127.0.0.1", port=3306, user="root", password="", database="")
    name = f"ejyy_bench_{os.getpid()}"
    names = gateway_names(args.gateways)
    print(f"cpus={os.cpu_count()} (shared with other work on this box)", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-bridge-") as tmp:
        d = Path(tmp)
        db = create_db(srv, name)
        try:
            seed(db, community=1, devices=args.gateways, residents=100)
            with Broker(d / "broker", extra=BROKER_PROD) as broker:
                cfg = bridge_yaml(d, db, broker.port, names, batch_max=args.batch_max)
                for n in (int(x) for x in args.instances.split(",")):
                    for rate in (r for r in (args.rate, args.latency_rate) if r > 0):
                        r = ingest_run(d, db, broker, cfg, names, n, rate, args.seconds)
                        print(json.dumps(r), flush=True)
        finally:
            drop_db(srv, name)
        if args.snapshot_residents:
            print(json.dumps(snapshot_run(srv, args.snapshot_residents, d)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
