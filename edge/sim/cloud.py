"""Cloud simulator: `edge cloud ...` plays the property platform against a gateway over MQTT.

    edge cloud keygen --key-file cloud.key          # prints the public key for the gateway's trust.keys
    edge cloud snapshot entries.ndjson --version 7  # whole list, in parts
    edge cloud delta --from 7 --to 8 --put new.json --del card:04A1B2C3 --revoke JTI:UNTIL
    edge cloud token --kind visitor --sub visitor:88 --zones north-gate --ttl 3600 --qr code.png
    edge cloud open north-gate --by staff:7         # signed remote open, waits for R/cmd/result
    edge cloud watch [--entries entries.ndjson]     # print status/events/results/health (answer syncs)

Connection settings come from --host/--port/--site/--gateway or a gateway config (-c), whose
mqtt section is reused (TLS files included) with the simulator's own client id.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.sim.cloud_client import CloudClient, Received, command_claims, load_entries
from edge.tokens import b64url_encode, generate_keypair, mint_token, public_key_b64

DEFAULT_KEY_FILE = "cloud-signing.key"


# --- signing key ---------------------------------------------------------------------------------
def keygen(path: Path, kid: str) -> str:
    """Create a signing key file (0600). Returns the public key (base64url) for trust.keys."""
    if path.exists():
        raise FileExistsError(f"{path} exists; refusing to overwrite a signing key")
    key, public = generate_keypair()
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"kid": kid, "private": b64url_encode(raw), "public": public}, f)
        f.write("\n")
    return public


def load_key(path: Path) -> tuple[Ed25519PrivateKey, str]:
    data = json.loads(path.read_text())
    raw = base64.urlsafe_b64decode(data["private"] + "=" * (-len(data["private"]) % 4))
    return Ed25519PrivateKey.from_private_bytes(raw), str(data["kid"])


# --- actions behind the subcommands --------------------------------------------------------------
def client_from_args(args: argparse.Namespace) -> CloudClient:
    host, port, site, gw = args.host, args.port, args.site, args.gateway
    user, password, ca, cert, key = args.username, args.password, args.ca, args.cert, args.key
    if args.config:
        from edge.config import load_config

        cfg = load_config(args.config)
        site, gw = site or cfg.gateway.site, gw or cfg.gateway.id
        if cfg.mqtt is not None:
            host, port = host or cfg.mqtt.host, port or cfg.mqtt.port
            if cfg.mqtt.tls is not None:
                ca = ca or cfg.mqtt.tls.ca
    if not site or not gw:
        raise SystemExit("edge cloud: --site and --gateway (or -c gateway config) are required")
    return CloudClient(
        host or "127.0.0.1",
        int(port or 1883),
        site,
        gw,
        persistent=not getattr(args, "no_session", False),
        client_id=args.client_id,
        username=user,
        password=password,
        ca=ca,
        cert=cert,
        key=key,
    )


def publish_snapshot(c: CloudClient, entries: list[dict[str, Any]], version: int, part_size: int) -> int:
    return c.send_snapshot(entries, version, part_size)


def delta_ops(args: argparse.Namespace) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = []
    if args.put:
        ops += [{"op": "put", "entry": e} for e in load_entries(Path(args.put))]
    for kv in args.delete or []:
        kind, _, value = kv.partition(":")
        ops.append({"op": "del", "kind": kind, "value": value})
    for kv in args.revoke or []:
        jti, _, until = kv.rpartition(":")
        ops.append({"op": "revoke", "jti": jti, "until": int(until)})
    for kv in args.trust_key or []:
        kid, _, key = kv.partition(":")
        ops.append({"op": "key", "kid": kid, "key": key})
    for kid in args.drop_key or []:
        ops.append({"op": "key", "kid": kid, "key": None})
    return ops


def mint_credential(args: argparse.Namespace) -> str:
    key, kid = load_key(Path(args.key_file))
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": args.site_claim,
        "sub": args.sub,
        "kind": args.kind,
        "jti": args.jti or f"{args.kind}-{now}-{os.urandom(4).hex()}",
        "nbf": now,
        "exp": now + args.ttl,
        "zones": args.zones.split(","),
    }
    if args.uses:
        claims["uses"] = args.uses
    if args.floors:
        claims["floors"] = [int(f) for f in args.floors.split(",")]
    return mint_token(key, kid, claims)


def send_command(
    c: CloudClient, key_file: Path, act: str, target: str, wait_s: float, **extra: Any
) -> dict | None:
    key, kid = load_key(key_file)
    site, gw = c.root.split("/")[2:4]
    claims = command_claims(site, gw, act, target, **extra)
    c.send_command(mint_token(key, kid, claims))
    jti = claims["jti"]
    if not c.wait_for(lambda rs: any(_result_jti(r) == jti for r in rs), wait_s):
        return None
    return next(r.json() for r in c.on("cmd/result") if _result_jti(r) == jti)


def _result_jti(r: Received) -> object:
    if not r.topic.endswith("/cmd/result"):
        return None
    try:
        return r.json().get("jti")
    except (ValueError, AttributeError):
        return None


def watch(args: argparse.Namespace) -> int:
    """Print what gateways send; with --entries, answer each sync request with a full snapshot."""
    entries = load_entries(Path(args.entries)) if args.entries else None
    version = args.version

    def show(r: Received) -> None:
        sub = r.topic.split("/", 4)[-1]
        try:
            body: Any = r.json()
        except ValueError:
            body = r.payload[:200]
        if sub.endswith("events") and isinstance(body, dict):
            for e in body.get("events", []):
                print(f"event  {json.dumps(e, ensure_ascii=False)}", flush=True)
        else:
            print(
                f"{sub:<13}{' (retained)' if r.retain else ''} {json.dumps(body, ensure_ascii=False)}",
                flush=True,
            )
        if entries is not None and sub.endswith("sync/request") and isinstance(body, dict):
            if body.get("have") != version:
                root = r.topic.removesuffix("/sync/request")
                n = c.send_snapshot(entries, version, args.part_size, root=root)
                print(f"-> snapshot v{version}: {len(entries)} entries in {n} parts", flush=True)

    args.gateway = args.gateway or "+"
    c = client_from_args(args)
    c.listener = show
    with c:
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            return 0


# --- argparse wiring -----------------------------------------------------------------------------
def _conn(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("-c", "--config", help="a gateway config: site, gateway id and mqtt settings from it")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--site")
    p.add_argument("--gateway", help="gateway id (watch: default all)")
    p.add_argument("--username")
    p.add_argument("--password")
    p.add_argument("--ca", type=Path)
    p.add_argument("--cert", type=Path)
    p.add_argument("--key", type=Path, help="client TLS key (the signing key is --key-file)")
    p.add_argument("--client-id", default=None)
    return p


def _key(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--key-file", default=DEFAULT_KEY_FILE, help="the cloud's signing key (edge cloud keygen)")
    return p


def _run(args: argparse.Namespace) -> int:
    act = args.cloud_cmd
    if act == "keygen":
        public = keygen(Path(args.key_file), args.kid)
        print(f"wrote {args.key_file}; add to the gateway config:\ntrust:\n  keys:\n    {args.kid}: {public}")
        return 0
    if act == "pubkey":
        key, kid = load_key(Path(args.key_file))
        print(f"{kid}: {public_key_b64(key)}")
        return 0
    if act == "token":
        token = mint_credential(args)
        print(token)
        if args.qr:
            import segno

            segno.make(token, error="m").save(args.qr, scale=6)
            print(f"QR code written to {args.qr}", file=sys.stderr)
        return 0
    with client_from_args(args) as c:
        if act == "snapshot":
            entries = load_entries(Path(args.file))
            n = publish_snapshot(c, entries, args.version, args.part_size)
            print(f"snapshot v{args.version}: {len(entries)} entries in {n} parts")
        elif act == "delta":
            ops = delta_ops(args)
            c.send_delta(args.frm, args.to, ops)
            print(f"delta {args.frm} -> {args.to}: {len(ops)} ops")
        elif act in ("open", "command"):
            verb = "open" if act == "open" else args.act
            extra = {
                "by": args.by,
                "floor": getattr(args, "floor", None),
                "seconds": getattr(args, "seconds", None),
            }
            if getattr(args, "floors", None):
                extra["floors"] = [int(f) for f in args.floors.split(",")]
            res = send_command(c, Path(args.key_file), verb, args.target, args.wait, **extra)
            if res is None:
                print(f"no R/cmd/result within {args.wait:g} s (gateway offline?)", file=sys.stderr)
                return 2
            print(json.dumps(res))
            return 0 if res.get("ok") else 1
    return 0


def add_cli(subparsers: Any) -> None:
    """Register `edge cloud ...` on the top-level argparse subparsers."""
    cloud = subparsers.add_parser("cloud", help="cloud simulator (MQTT): sign, publish, command, watch")
    sub = cloud.add_subparsers(dest="cloud_cmd", required=True)
    kg = _key(sub.add_parser("keygen", help="create the cloud's signing key; prints the public key"))
    kg.add_argument("--kid", default="cloud-1")
    _key(sub.add_parser("pubkey", help="print the public key of the signing key"))
    tk = _key(sub.add_parser("token", help="mint a credential token (QR code)"))
    tk.add_argument("--site", dest="site_claim", required=True)
    tk.add_argument("--kind", choices=["resident", "visitor", "staff"], default="visitor")
    tk.add_argument("--sub", required=True, help="holder, e.g. visitor:88")
    tk.add_argument("--zones", default="*", help="comma-separated zones, * = all")
    tk.add_argument("--ttl", type=int, default=3600, help="seconds of validity")
    tk.add_argument("--uses", type=int)
    tk.add_argument("--floors")
    tk.add_argument("--jti")
    tk.add_argument("--qr", help="also write the code as a QR PNG here")
    sn = _conn(sub.add_parser("snapshot", help="publish a whole whitelist (in parts)"))
    sn.add_argument("file", help="Entries: JSON list or NDJSON")
    sn.add_argument("--version", type=int, required=True)
    sn.add_argument("--part-size", type=int, default=10_000)
    de = _conn(sub.add_parser("delta", help="publish a Delta"))
    de.add_argument("--from", dest="frm", type=int, required=True)
    de.add_argument("--to", type=int, required=True)
    de.add_argument("--put", help="Entries file to put")
    de.add_argument("--del", dest="delete", action="append", help="KIND:VALUE to delete")
    de.add_argument("--revoke", action="append", help="JTI:UNTIL token revocation")
    de.add_argument("--trust-key", action="append", help="KID:BASE64URL key to trust")
    de.add_argument("--drop-key", action="append", help="KID to stop trusting")
    op = _key(_conn(sub.add_parser("open", help="signed remote open; waits for the result")))
    op.add_argument("target")
    op.add_argument("--by", default=None, help="who asked (event subject)")
    op.add_argument("--wait", type=float, default=10.0)
    cm = _key(_conn(sub.add_parser("command", help="any signed command (hold_open, lock, normal, sync...)")))
    cm.add_argument("act")
    cm.add_argument("target")
    cm.add_argument("--by", default=None)
    cm.add_argument("--floor", type=int)
    cm.add_argument("--floors")
    cm.add_argument("--seconds", type=int)
    cm.add_argument("--wait", type=float, default=10.0)
    wa = _conn(sub.add_parser("watch", help="print status, events, results, health; answer sync requests"))
    wa.add_argument("--entries", help="answer sync requests with a snapshot of this Entries file")
    wa.add_argument("--version", type=int, default=1, help="version of --entries")
    wa.add_argument("--part-size", type=int, default=10_000)
    wa.add_argument(
        "--no-session", action="store_true", help="no persistent session (miss what was sent before)"
    )
    for p in sub.choices.values():
        p.set_defaults(func=watch if p is wa else _run)
