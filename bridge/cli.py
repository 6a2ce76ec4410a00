"""`edge-bridge`: run the bridge, prepare its tables, send a remote open, mint a code.

edge-bridge init-db -c bridge.yaml [--ejyy]      # bridge-owned tables (--ejyy: ejyy's too, for a test db)
edge-bridge run -c bridge.yaml                   # the cloud side for every configured gateway
edge-bridge open -c bridge.yaml GATEWAY DEVICE [--by staff:7] [--wait 10]
edge-bridge code -c bridge.yaml resident USER_ID | visitor VISTOR_ID [--uses N]
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import uuid
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bridge import codes, commands
from bridge.config import BridgeConfig, load_config
from bridge.db import apply_schema, connect, transaction


def cmd_init_db(cfg: BridgeConfig, args: argparse.Namespace) -> int:
    server = connect(cfg.db, database=False)
    try:
        with transaction(server) as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{cfg.db.database}` CHARACTER SET utf8mb4")
    finally:
        server.close()
    con = connect(cfg.db)
    try:
        if args.ejyy:
            apply_schema(con, "ejyy")
        apply_schema(con, "bridge")
    finally:
        con.close()
    print(f"tables ready in {cfg.db.database}")
    return 0


def cmd_run(cfg: BridgeConfig, _args: argparse.Namespace) -> int:
    from bridge.service import Bridge

    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    bridge = Bridge(cfg).start()
    if cfg.codes.listen:
        codes.serve_in_thread(cfg, bridge.signer)
        logging.getLogger("bridge").info("codes endpoint on %s", cfg.codes.listen)
    done.wait()
    bridge.close()
    return 0


def cmd_open(cfg: BridgeConfig, args: argparse.Namespace) -> int:
    """Signed `open` for GATEWAY/DEVICE; waits for R/cmd/result and records it."""
    if args.gateway not in cfg.gateways or args.device not in cfg.gateways[args.gateway].devices:
        print(f"unknown gateway/device {args.gateway}/{args.device}", file=sys.stderr)
        return 2
    signer = commands.Signer(cfg.signing_key)
    jti, token = commands.command_token(
        signer, cfg.site_of(args.gateway), args.gateway, "open", args.device, by=args.by
    )
    root = cfg.root(args.gateway)
    got: dict[str, object] = {}
    arrived, subscribed = threading.Event(), threading.Event()

    def on_message(_c: paho.Client, _u: object, m: paho.MQTTMessage) -> None:
        try:
            body = json.loads(m.payload)
        except ValueError:
            return
        if isinstance(body, dict) and body.get("jti") == jti:
            got.update(body)
            arrived.set()

    c = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"edge-bridge-open-{uuid.uuid4().hex[:8]}",
        protocol=paho.MQTTv5,
    )
    if cfg.mqtt.username is not None:
        c.username_pw_set(cfg.mqtt.username, cfg.mqtt.password)
    if cfg.mqtt.ca is not None:
        c.tls_set(ca_certs=str(cfg.mqtt.ca))
    c.on_message = on_message
    c.on_subscribe = lambda *_a: subscribed.set()
    c.on_connect = lambda cl, *_a: cl.subscribe(f"{root}/cmd/result", qos=1)
    con = connect(cfg.db)
    try:
        c.connect(cfg.mqtt.host, cfg.mqtt.port, 30)
        c.loop_start()
        if not subscribed.wait(10):
            print("no connection to the broker", file=sys.stderr)
            return 2
        with transaction(con) as cur:
            commands.record_sent(cur, jti, args.gateway, args.device, "open", args.by)
        c.publish(f"{root}/cmd", token, qos=1).wait_for_publish(10)
        if not arrived.wait(args.wait):
            print(f"no R/cmd/result within {args.wait:g} s (gateway offline?)", file=sys.stderr)
            return 2
        commands.on_result(con, args.gateway, got)
        print(json.dumps(got))
        return 0 if got.get("ok") else 1
    finally:
        c.disconnect()
        c.loop_stop()
        con.close()


def cmd_code(cfg: BridgeConfig, args: argparse.Namespace) -> int:
    signer = commands.Signer(cfg.signing_key)
    con = connect(cfg.db)
    try:
        if args.kind == "resident":
            out = codes.resident_code(cfg, con, signer, args.id)
        else:
            out = codes.visitor_code(cfg, con, signer, args.id, args.uses)
    except codes.NoAccess as exc:
        print(str(exc), file=sys.stderr)
        return 1
    finally:
        con.close()
    print(json.dumps(out))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="edge-bridge", description="ejyy <-> gate-edge bridge (the cloud side)")
    ap.add_argument("--log-level", default="INFO")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, fn, text in (
        ("init-db", cmd_init_db, "create the bridge's tables"),
        ("run", cmd_run, "run the bridge"),
        ("open", cmd_open, "signed remote open, waits for the result"),
        ("code", cmd_code, "mint a resident or visitor QR token"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("-c", "--config", type=Path, required=True)
        p.set_defaults(func=fn)
        if name == "init-db":
            p.add_argument(
                "--ejyy", action="store_true", help="also create ejyy's tables (test/demo database)"
            )
        elif name == "open":
            p.add_argument("gateway")
            p.add_argument("device")
            p.add_argument("--by", default=None, help="who asked (the gateway's event subject)")
            p.add_argument("--wait", type=float, default=10.0)
        elif name == "code":
            p.add_argument("kind", choices=["resident", "visitor"])
            p.add_argument("id", type=int, help="wechat_mp_user_id or ejyy_vistor id")
            p.add_argument("--uses", type=int)
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return int(args.func(load_config(args.config), args))


if __name__ == "__main__":
    sys.exit(main())
