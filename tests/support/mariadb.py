"""A MariaDB for tests: the server on 127.0.0.1:3306 when one answers (user root, no password),
else a private mariadbd started on a free port in a temporary data dir. Either way each test
database is created with ejyy's table shapes and the bridge's tables, and dropped afterwards.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pymysql

from bridge.config import DbConfig
from bridge.db import apply_schema, connect
from tests.support.gateway import free_port


def _answers(cfg: DbConfig) -> bool:
    try:
        connect(cfg, database=False).close()
        return True
    except pymysql.err.MySQLError:
        return False


@contextlib.contextmanager
def server() -> Iterator[DbConfig]:
    """A reachable server (no database chosen yet)."""
    shared = DbConfig(host="127.0.0.1", port=3306, user="root", password="", database="")
    if _answers(shared):
        yield shared
        return
    tmp = Path(tempfile.mkdtemp(prefix="bridge-mariadb-"))
    port = free_port()
    subprocess.run(
        ["mariadb-install-db", "--no-defaults", f"--datadir={tmp}/data", "--auth-root-authentication-method=normal",
         "--skip-test-db", "--user=root"],
        check=True, capture_output=True,
    )  # fmt: skip
    proc = subprocess.Popen(
        ["mariadbd", "--no-defaults", f"--datadir={tmp}/data", f"--port={port}", "--bind-address=127.0.0.1",
         f"--socket={tmp}/mysqld.sock", "--user=root", "--skip-grant-tables", "--innodb-buffer-pool-size=64M"],
        stdout=subprocess.DEVNULL, stderr=open(tmp / "mariadbd.log", "ab"),
    )  # fmt: skip
    cfg = DbConfig(host="127.0.0.1", port=port, user="root", password="", database="")
    try:
        for _ in range(300):
            if _answers(cfg):
                break
            if proc.poll() is not None:
                raise RuntimeError(f"mariadbd exited: {(tmp / 'mariadbd.log').read_text()[-2000:]}")
            time.sleep(0.1)
        else:
            raise RuntimeError("mariadbd did not answer in 30 s")
        yield cfg
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def ejyy_database(srv: DbConfig) -> Iterator[DbConfig]:
    """A fresh database with ejyy's tables and the bridge's; dropped on exit."""
    name = f"bridge_test_{uuid.uuid4().hex[:10]}"
    admin = connect(srv, database=False)
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        admin.commit()
        cfg = srv.model_copy(update={"database": name})
        con = connect(cfg)
        try:
            apply_schema(con, "ejyy")
            apply_schema(con, "bridge")
        finally:
            con.close()
        yield cfg
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.commit()
        admin.close()


class Ejyy:
    """Rows the way ejyy's backend writes them (ms timestamps, status columns), for tests."""

    def __init__(self, cfg: DbConfig) -> None:
        self.con = connect(cfg)
        self.con.autocommit(True)

    def close(self) -> None:
        self.con.close()

    def q(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self.con.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())

    def insert(self, table: str, **cols: object) -> int:
        cols.setdefault("created_at", int(time.time() * 1000))
        names = ", ".join(f"`{k}`" for k in cols)
        marks = ", ".join(["%s"] * len(cols))
        with self.con.cursor() as cur:
            cur.execute(f"INSERT INTO `{table}` ({names}) VALUES ({marks})", tuple(cols.values()))
            return int(cur.lastrowid)

    def community(self, cid: int = 1) -> int:
        return self.insert("ejyy_community_info", id=cid, name="Sunny Garden", phone="02100000000",
                           province="SH", city="SH", district="PD", created_by=1)  # fmt: skip

    def building(
        self, community_id: int = 1, *, bid: int | None = None, type_: int = 1, number: str = "101"
    ) -> int:
        extra = {"id": bid} if bid is not None else {}
        return self.insert("ejyy_building_info", community_id=community_id, type=type_, building="3",
                           number=number, construction_area=88.0, created_by=1, **extra)  # fmt: skip

    def user(self, uid: int | None = None, status: int = 1) -> int:
        extra = {"id": uid} if uid is not None else {}
        return self.insert("ejyy_wechat_mp_user", open_id=uuid.uuid4().hex[:28], union_id=uuid.uuid4().hex[:28],
                           status=status, **extra)  # fmt: skip

    def bind(self, user: int, building: int, status: int = 1) -> int:
        return self.insert("ejyy_user_building", building_id=building, wechat_mp_user_id=user, status=status)

    def car(self, user: int, building: int, plate: str, status: int = 1) -> int:
        return self.insert("ejyy_user_car", wechat_mp_user_id=user, building_id=building, car_number=plate,
                           status=status)  # fmt: skip

    def card(self, uid: str, user: int) -> None:
        self.insert("bridge_card", uid=uid, wechat_mp_user_id=user)

    def visitor(
        self, building: int, *, expire_s: float, car: str | None = None, community_id: int = 1
    ) -> int:
        return self.insert("ejyy_vistor", community_id=community_id, building_id=building, vistor_name="Li",
                           vistor_phone="13800000000", car_number=car,
                           expire=int((time.time() + expire_s) * 1000))  # fmt: skip

    def devices(self, community_id: int = 1) -> None:
        common = {"community_id": community_id, "sign": "s", "secret": "x", "created_by": 1}
        self.insert("ejyy_iot_entrance", id=1, name="North gate", category=1, **common)
        self.insert("ejyy_iot_elevator", id=1, name="Lift 3", category=1, **common)
        self.insert("ejyy_iot_park", id=1, name="North car park", **common)
