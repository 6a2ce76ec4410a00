"""The cloud simulator CLI (`edge cloud ...`) driving a real link over a real Mosquitto."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.sim.cloud import add_cli, load_key
from edge.sim.cloud_client import CloudClient
from edge.tokens import TokenClaims, TrustPolicy, verify_token
from tests.support.broker import Broker
from tests.support.cloud import GW, SITE, make_config, running_link, until


def run_cli(*argv: str) -> int:
    p = argparse.ArgumentParser()
    add_cli(p.add_subparsers(dest="cmd", required=True))
    args = p.parse_args(["cloud", *argv])
    return int(args.func(args) or 0)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with Broker(tmp_path / "broker") as b:
        yield b


async def test_keygen_snapshot_delta_open_and_token(tmp_path: Path, broker: Broker, capsys):
    key_file = tmp_path / "cloud.key"
    assert run_cli("keygen", "--key-file", str(key_file), "--kid", "k1") == 0
    out = capsys.readouterr().out
    public = out.strip().splitlines()[-1].split(": ", 1)[1]
    assert (key_file.stat().st_mode & 0o777) == 0o600
    with pytest.raises(FileExistsError):
        run_cli("keygen", "--key-file", str(key_file))
    entries = tmp_path / "entries.ndjson"
    entries.write_text(
        "\n".join(
            json.dumps(
                {"kind": "card", "value": f"{i:08X}", "subject": f"resident:{i}", "zones": ["north-gate"]}
            )
            for i in range(1, 26)
        )
    )
    conn = ["--host", "127.0.0.1", "--port", str(broker.port), "--site", SITE, "--gateway", GW]
    cfg = make_config(tmp_path / "gw", broker.port, {"k1": public})
    async with running_link(cfg) as h:
        rc = await asyncio.to_thread(
            run_cli, "snapshot", str(entries), "--version", "4", "--part-size", "10", *conn
        )
        assert rc == 0
        assert await until(lambda: h.store.version == 4)
        assert h.store.count() == 25
        rc = await asyncio.to_thread(
            run_cli, "delta", "--from", "4", "--to", "5", "--del", "card:00000001", *conn
        )
        assert rc == 0
        assert await until(lambda: h.store.version == 5)
        assert h.store.lookup("card", "00000001") is None
        with CloudClient("127.0.0.1", broker.port, SITE, GW, persistent=False) as cloud:
            rc = await asyncio.to_thread(
                run_cli, "open", "north-gate", "--by", "staff:7", "--key-file", str(key_file), *conn
            )
            assert rc == 0
            assert h.gate.opens == [("north-gate", "staff:7")]
            assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["ok"] is True
            rc = await asyncio.to_thread(run_cli, "open", "west-gate", "--key-file", str(key_file), *conn)
            assert rc == 1
            assert await until(lambda: any(r["error"] == "unknown_target" for r in cloud.results()))
    qr = tmp_path / "code.png"
    rc = run_cli(
        "token", "--key-file", str(key_file), "--site", SITE, "--sub", "visitor:88", "--zones", "north-gate",
        "--ttl", "600", "--uses", "2", "--qr", str(qr),
    )  # fmt: skip
    assert rc == 0 and qr.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    token = capsys.readouterr().out.strip().splitlines()[-1]
    key, kid = load_key(key_file)
    claims = verify_token(token, TrustPolicy.build(SITE, {kid: public}), time.time())
    assert isinstance(claims, TokenClaims) and claims.sub == "visitor:88" and claims.uses == 2
