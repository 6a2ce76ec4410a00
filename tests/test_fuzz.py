"""Fuzzing (issue 9): every input family answers with a decision, a reason or its documented error.

In-process properties drive the real entry points of tests/support/fuzz_targets.py (tokens, serial
lines on a real fd, every subscribed MQTT topic through the real CloudLink, camera pushes, config
files) from hypothesis: mutations of valid seeds (hypothesis picks the mutation seed, so a failure
shrinks to one integer) and hypothesis' own text/bytes/JSON. One end-to-end test then sends fuzzed
MQTT payloads and scanner lines to a real `edge run` and checks it still opens the door for a valid code.
The long run (a million inputs) is scripts/fuzz.py; its figures are in docs/fuzzing.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import fuzz_targets as ft

FAST = settings(
    max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True
)
seeds = st.integers(min_value=0, max_value=2**32 - 1)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=20,
)


@pytest.fixture(scope="module", autouse=True)
def _quiet() -> Iterator[None]:
    """The recorder turns tracebacks into crashes; the previous logging set-up is put back after."""
    saved = structlog.get_config()
    ft.quiet_logs()
    yield
    structlog.configure(**saved)
    root = logging.getLogger()
    for h in [h for h in root.handlers if type(h).__name__ == "_StdlibRecorder"]:
        root.removeHandler(h)


@pytest.fixture(scope="module")
def families() -> Iterator[dict[str, Any]]:
    made: dict[str, Any] = {}
    yield made
    if "mqtt" in made:
        made["mqtt"].close()


def fam(families: dict[str, Any], name: str) -> Any:
    if name not in families:
        if name == "mqtt":
            from tests.support.fuzz_mqtt import MqttFamily

            families[name] = MqttFamily()
        else:
            cls = {"tokens": ft.TokenFamily, "serial": ft.SerialFamily, "plates": ft.PlateFamily,
                   "config": ft.ConfigFamily}[name]  # fmt: skip
            families[name] = cls()
    return families[name]


def run(f: Any, inp: Any) -> ft.Outcome:
    outcome, reason = f.run(inp)  # raises ft.Crash on any contract breach
    assert outcome in ("accepted", "rejected", "other") and reason
    return outcome, reason


# --- mutations of valid seeds, one property per family ------------------------------------------


@pytest.mark.parametrize("name", ["tokens", "serial", "mqtt", "plates"])
@FAST
@given(seed=seeds)
def test_mutated_inputs_are_answered_never_crash(families: dict[str, Any], name: str, seed: int) -> None:
    f = fam(families, name)
    run(f, f.generate(random.Random(seed)))


@settings(FAST, max_examples=60)
@given(seed=seeds)
def test_mutated_config_is_valid_or_a_config_error_naming_file_and_place(
    families: dict[str, Any], seed: int
) -> None:
    f = fam(families, "config")
    outcome, reason = run(f, f.generate(random.Random(seed)))
    assert not reason.startswith("UNLOCATED"), reason


# --- hypothesis' own inputs ---------------------------------------------------------------------


@FAST
@given(token=st.text(max_size=1200) | st.binary(max_size=1200).map(lambda b: b.decode("latin-1")))
def test_any_text_as_token(families: dict[str, Any], token: str) -> None:
    run(fam(families, "tokens"), token)


@FAST
@given(reader=st.integers(0, 5), chunks=st.lists(st.binary(min_size=1, max_size=300), max_size=8))
def test_any_bytes_on_a_serial_line(families: dict[str, Any], reader: int, chunks: list[bytes]) -> None:
    run(fam(families, "serial"), (reader, chunks))


@FAST
@given(data=st.binary(max_size=400), cuts=st.lists(st.integers(0, 400), max_size=6))
def test_serial_framing_does_not_depend_on_how_bytes_arrive(data: bytes, cuts: list[int]) -> None:
    """The same bytes in one read or in many give the same lines (a CR LF split across reads too)."""
    from drivers.serial_reader import LineFramer

    def frames(chunks: list[bytes]) -> list[object]:
        fr = LineFramer(["CR", "LF", "CRLF"], 32)
        out: list[object] = []
        for c in chunks:
            out += ["overflow" if isinstance(x, int) else x for x in fr.feed(c)]
        return out

    points = sorted({min(c, len(data)) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert frames(chunks) == frames([data])


@FAST
@given(
    topic=st.sampled_from(["whitelist", "cmd", "edge/v1/c42/gw-test", "#"]), body=json_values | st.binary()
)
def test_any_payload_on_any_topic(families: dict[str, Any], topic: str, body: Any) -> None:
    f = fam(families, "mqtt")
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    run(f, (topic, payload))


def test_fuzzed_topics_are_every_topic_the_gateway_subscribes_to(families: dict[str, Any]) -> None:
    f = fam(families, "mqtt")
    assert sorted(f.topics) == ["cmd", "whitelist"]
    rng = random.Random(7)
    assert {f.generate(rng)[0] for _ in range(300)} >= set(f.topics)


@FAST
@given(route=st.sampled_from(["push", "dahua", "keepalive"]), ctype=st.sampled_from(
    ["application/json", "application/xml", "multipart/form-data; boundary=b", "multipart/x", ""]),
    body=st.binary(max_size=600) | json_values.map(lambda v: json.dumps({"AlarmInfoPlate": v}).encode()))  # fmt: skip
def test_any_camera_push(families: dict[str, Any], route: str, ctype: str, body: bytes) -> None:
    run(fam(families, "plates"), (route, ctype, body))


@settings(FAST, max_examples=60)
@given(text=st.text(max_size=300))
def test_any_text_as_config(families: dict[str, Any], text: str) -> None:
    _, reason = run(fam(families, "config"), ("text", text.encode("utf-8", "surrogatepass")))
    assert not reason.startswith("UNLOCATED"), reason


# --- what fuzzing found (fixed in drivers/lpr_*.py, edge/yaml_load.py) ----------------------------


def _hik_conf(conf: str) -> bytes:
    from tests.support.lpr_pushes import hik_xml

    return hik_xml("44:19:b6:6d:24:85", "京A12345", conf=conf)


def _vz(sec: int) -> dict[str, Any]:
    from tests.support.lpr_pushes import vzenith

    return vzenith("a1b2c3d4", "京A12345", sec=sec)


_VZ_SEC = _vz(10**400)
FOUND = [
    ("push", "application/json", b'{"AlarmInfoPlate": ' + b"[" * 50_000),  # RecursionError
    (
        "push",
        "application/json",
        b'{"AlarmInfoPlate": {"serialno": ' + b"9" * 5000 + b"}}",
    ),  # int digits limit
    ("dahua", "application/json", b"[" * 50_000),
    ("keepalive", "application/json", b'{"DeviceID": ' + b"1" * 5000 + b"}"),
    (
        "push",
        "application/xml",
        b'<?xml version="1.0" encoding="UDF-8"?><EventNotificationAlert/>',
    ),  # LookupError
    (
        "push",
        "application/xml",
        b'<?xml version="1.0" encoding="utf-16"?><EventNotificationAlert/>',
    ),  # ValueError
    # the long run: float() of a huge Timeval.sec, int() of a 5000-digit confidence string
    ("push", "application/json", json.dumps(_VZ_SEC).encode()),
    ("push", "application/xml", _hik_conf("9" * 5000)),
    ("push", "application/xml", _hik_conf("²")),  # str.isdigit() says yes, int() says no
]


@pytest.mark.parametrize("inp", FOUND, ids=[f"found-{i}" for i in range(len(FOUND))])
def test_pushes_that_once_crashed_are_a_400(families: dict[str, Any], inp: tuple[str, str, bytes]) -> None:
    assert run(fam(families, "plates"), inp) == ("rejected", "http 400")


_NFC = (ft.ROOT / "config" / "example-nfc.yaml").read_text(encoding="utf-8")
YAML_FOUND = {  # fixed in edge/yaml_load.py: the safe constructor's own errors are not YAMLErrors
    "int-of-5000-digits": "gateway:\n  site: " + "9" * 5000 + "\n",
    "set-as-a-key": "gateway:\n  ? !!set x\n  : 1\n",
    "impossible-date": "gateway:\n  site: 2026-13-45\n",
    "lone-surrogate-in-a-path": _NFC.replace("data_dir: /var/lib/gate-edge", 'data_dir: "\\ud800"'),
}


@pytest.mark.parametrize("name", sorted(YAML_FOUND))
def test_config_values_that_once_crashed_are_a_config_error(families: dict[str, Any], name: str) -> None:
    outcome, reason = run(fam(families, "config"), ("text", YAML_FOUND[name].encode()))
    assert outcome == "rejected" and reason == "cannot read this value", reason


# --- found in edge/config.py by the fuzzer, fixed there: kept as regressions ---

CONFIG_CRASHES = {
    # ZoneInfo raises IsADirectoryError / OSError(ENAMETOOLONG); the validator catches only
    # ZoneInfoNotFoundError and ValueError, so `edge check-config` prints a traceback
    "timezone-is-a-tzdata-directory": _NFC.replace("timezone: Asia/Shanghai", "timezone: Asia"),
    "timezone-too-long": _NFC.replace("timezone: Asia/Shanghai", "timezone: " + "A" * 5000),
    # Path.resolve() of a relative path with a NUL raises ValueError after validation (parse_config)
    "data-dir-with-nul": _NFC.replace("data_dir: /var/lib/gate-edge", 'data_dir: "rel\\0dir"'),
    "tls-ca-with-nul": _NFC + '\nmqtt:\n  host: x\n  tls:\n    ca: "ca\\0.pem"\n',
}


@pytest.mark.parametrize("name", sorted(CONFIG_CRASHES))
def test_config_that_crashes_the_loader(families: dict[str, Any], name: str) -> None:
    outcome, reason = run(fam(families, "config"), ("text", CONFIG_CRASHES[name].encode()))
    assert outcome == "rejected" and not reason.startswith("UNLOCATED")


# --- end to end: a real `edge run` after a few hundred bad inputs -------------------------------


async def test_daemon_survives_fuzzed_mqtt_and_scanner_lines_and_still_opens(tmp_path: Path) -> None:
    from edge.sim.cloud_client import CloudClient, command_claims
    from edge.sim.relay_board import RelayBoardSim
    from tests.support.broker import Broker
    from tests.support.daemon import Daemon
    from tests.support.fuzz_mqtt import MqttInputs
    from tests.support.fuzz_mutate import mutate_bytes
    from tests.support.gateway import SITE, free_port, gateway_config
    from tests.support.ptys import PtyPair

    keys = ft.Keys()
    signer = keys.signer
    port = free_port()
    board = RelayBoardSim(device_ids=[1])
    server = asyncio.create_task(board.serve_tcp("127.0.0.1", port))
    broker = Broker(tmp_path / "broker").start()
    scanner = PtyPair(tmp_path, "qr").start()
    cfg = gateway_config(
        tmp_path,
        signer=signer,
        bus={"type": "modbus_tcp", "host": "127.0.0.1", "port": port, "timeout": 0.3},
        readers={"qr-north": {"type": "serial", "port": str(scanner.b), "content": "qr"}},
        mqtt={"host": "127.0.0.1", "port": broker.port, "keepalive_s": 5, "reconnect_max_s": 1.0},
        extra={
            "rate_limit": {"denials": 0}
        },  # fuzzed denials must not cool the reader down for the final code
    )
    fd = os.open(scanner.a, os.O_RDWR | os.O_NOCTTY)
    gw = Daemon(cfg)
    cloud = CloudClient("127.0.0.1", broker.port, SITE, "gw-test").connect()
    try:
        await gw.wait_for("device_status", device="qr-north", online=True)
        await gw.wait_for("mqtt_connected")
        rng = random.Random(9)
        inputs = MqttInputs(keys, lambda: rng.randrange(4))
        sent: dict[str, int] = {}
        for _ in range(300):
            topic, payload = inputs.generate(rng)
            if topic in ("whitelist", "cmd"):
                cloud.publish(topic, payload, wait=False)
            else:  # topics the gateway does not subscribe to: the broker must not hand them over
                cloud.publish("cmd", payload, wait=False, root="edge/v1/c42/other-gw")
            sent[topic] = sent.get(topic, 0) + 1
        seeds = [signer.code(f"e2e-seed-{i}").encode() + b"\r" for i in range(3)] + [b"04A1B2C3\r\n"]
        for _ in range(200):
            os.write(fd, mutate_bytes(rng.choice(seeds), rng, seeds)[:2000])
            await asyncio.sleep(0.002)
        assert sent.get("whitelist", 0) > 100 and sent.get("cmd", 0) > 50, sent
        # the fuzz may have locked the door with a valid signed command: the cloud sets it back to normal
        claims = command_claims(SITE, "gw-test", "normal", "north-gate")
        cloud.publish("cmd", keys.mint(claims), wait=False)
        mark = f'"jti":"{claims["jti"]}"'.encode()

        def answered(rs: list[Any]) -> bool:
            return any(r.topic.endswith("/cmd/result") and mark in r.payload for r in rs)

        assert await asyncio.to_thread(cloud.wait_for, answered, 60), "no result for the `normal` command"
        want = sent["cmd"] + 1  # every command, however broken, gets exactly one result
        assert await asyncio.to_thread(cloud.wait_for, lambda _r: len(cloud.on("cmd/result")) >= want, 30)
        await asyncio.sleep(0.3)
        assert len(cloud.on("cmd/result")) == want
        board.writes.clear()
        t_end = time.monotonic() + 60
        while not gw.seen("decision", credential="e2e-final", result="granted") and time.monotonic() < t_end:
            os.write(fd, b"\r" + signer.code("e2e-final").encode() + b"\r")  # \r first: ends any fuzz tail
            await asyncio.sleep(1.0)
        assert gw.seen("decision", credential="e2e-final", result="granted"), gw.lines[-5:]
        await asyncio.sleep(0.5)
        assert board.writes_to(1), "the grant did not reach the relay board"
        assert gw.proc.poll() is None, "the daemon died"
        tracebacks = [ln for ln in gw.lines if "exception" in ln or "Traceback" in str(ln.get("text", ""))]
        assert not tracebacks, tracebacks[:3]
        assert any(ln.get("event") == "whitelist_message_dropped" for ln in gw.lines)
        assert any(ln.get("event") == "command_refused" for ln in gw.lines)
    finally:
        cloud.close()
        gw.finish()
        os.close(fd)
        scanner.stop()
        broker.stop()
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
