"""MariaDB/MySQL access (PyMySQL): one connection per thread, explicit transactions, schema files."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pymysql.cursors

from bridge.config import DbConfig

SCHEMA_DIR = Path(__file__).resolve().parent / "schema"
RETRYABLE = {1205, 1213, 2003, 2006, 2013, 2055}  # lock wait, deadlock, no server, gone, lost connection


def connect(cfg: DbConfig, *, database: bool = True) -> pymysql.connections.Connection:
    return pymysql.connect(
        host=cfg.host,
        port=cfg.port,
        user=cfg.user,
        password=cfg.password,
        database=cfg.database if database else None,
        unix_socket=cfg.unix_socket,
        charset="utf8mb4",
        autocommit=False,
        connect_timeout=5,
        # each statement sees the latest commits: a poller that waited for another instance's
        # lock must diff against what that instance stored, not against its own older snapshot
        init_command="SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
    )


@contextlib.contextmanager
def transaction(con: pymysql.connections.Connection) -> Iterator[pymysql.cursors.Cursor]:
    """Commit on success, roll back on any error (and re-raise)."""
    cur = con.cursor()
    try:
        yield cur
        con.commit()
    except BaseException:
        with contextlib.suppress(Exception):
            con.rollback()
        raise
    finally:
        cur.close()


def statements(sql: str) -> list[str]:
    """Split a schema file on ';' at line ends, dropping comment-only lines."""
    body = "\n".join(ln for ln in sql.splitlines() if not ln.lstrip().startswith("--"))
    return [s.strip() for s in body.split(";\n") if s.strip().rstrip(";").strip()]


def apply_schema(con: pymysql.connections.Connection, name: str) -> None:
    """Run bridge/schema/<name>.sql (CREATE TABLE IF NOT EXISTS only: safe to repeat)."""
    with transaction(con) as cur:
        for stmt in statements((SCHEMA_DIR / f"{name}.sql").read_text(encoding="utf-8")):
            cur.execute(stmt.rstrip(";"))


def now_ms() -> int:
    return int(time.time() * 1000)


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, pymysql.err.MySQLError) and bool(exc.args) and exc.args[0] in RETRYABLE
