"""`edge` command line: run the daemon, check config, explain tokens, manage the whitelist, simulate."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from drivers.registry import SECTIONS
from edge.config import Config
from edge.runner import load_config_or_exit as _load
from edge.runner import read_entries as _read_entries
from edge.runner import run_gateway


def _data_dir(cfg: Config, *, create: bool = True) -> None:
    """One line and exit 2 for an unusable data dir (a file, under a file, not writable)."""
    from edge.datafiles import DataDirError, check_data_dir

    try:
        check_data_dir(cfg.gateway.data_dir, create=create)
    except DataDirError as exc:
        print(str(exc), file=sys.stderr)
        raise SystemExit(2) from None


def _print(obj: Any) -> None:
    print(json.dumps(obj, ensure_ascii=False))


# --- run ---------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from edge.datafiles import DataDirError
    from edge.logs import setup_logging

    cfg = _load(args.config)
    # exit 2, like a config error, with one line instead of a traceback. systemd restarts us anyway
    # (Restart=on-failure: any non-zero exit): right for a data dir on a disk that mounts late; a lasting fault shows the
    # same one line each time, and check-config (ExecStartPre) names it too.
    _data_dir(cfg)
    setup_logging(args.log_level, args.log_format)
    try:
        return asyncio.run(run_gateway(cfg, config_path=args.config))
    except DataDirError as exc:  # the dir went bad between the check and the open
        print(str(exc), file=sys.stderr)
        return 2


def cmd_check_config(args: argparse.Namespace) -> int:
    path = args.file or args.config
    if not path:
        print("usage: edge check-config FILE (or -c FILE)", file=sys.stderr)
        return 2
    cfg = _load(path)
    _data_dir(cfg, create=False)
    print(f"{path}: OK")
    print(f"  site {cfg.gateway.site!r}, gateway {cfg.gateway.id!r}, time zone {cfg.gateway.timezone}")
    print(f"  data in {cfg.gateway.data_dir}")
    print(f"  trusted keys: {', '.join(sorted(cfg.trust.keys)) or 'none (no QR code can be granted)'}")
    for bid, bus in cfg.buses.items():
        where = (
            f"{bus.port} {bus.baud} baud {bus.parity}"
            if bus.type == "modbus_rtu"
            else f"{bus.host}:{bus.port}"
        )
        print(f"  bus {bid}: {bus.type} {where}, timeout {bus.timeout}s, retries {bus.retries}")
    for section, dev_id, dev in cfg.devices():
        print(f"  {section} {dev_id}: {_describe(dev)}")
    served = cfg.reader_device()
    for rid, r in cfg.reader_models().items():
        print(f"  reader {rid}: {_describe(r)} -> {served.get(rid, 'NONE: opens nothing')}")
    for name in SECTIONS:
        sec = cfg.section(name)
        if sec is not None:
            print(f"  {name}: {_describe(sec)}")
    if cfg.mqtt is None:
        print("  cloud: none (offline mode: the gate decides locally; events wait in the outbox)")
    else:
        print(f"  cloud: mqtt {cfg.mqtt.host}:{cfg.mqtt.port} tls={'yes' if cfg.mqtt.tls else 'no'}")
    listen = cfg.metrics.listen if cfg.metrics is not None else None
    print(f"  metrics: {'http://' + listen + '/metrics' if listen else 'off'}")
    rl = cfg.rate_limit
    print(f"  rate limit: {f'{rl.denials} denials in {rl.window_s:g} s -> {rl.cooldown_s:g} s' if rl.denials else 'off'}")
    if not cfg.trust.require_clock_sync:
        print(
            "  WARNING: trust.require_clock_sync is false: codes are judged even on an unsynchronised clock"
        )
    legacy = cfg.trust.legacy_ejyy
    if legacy is not None and legacy.enabled:
        print(
            "  WARNING: trust.legacy_ejyy is enabled: ejyy AES codes are accepted, and anyone holding"
            f" its key can forge them for anyone on the whitelist (max age {legacy.max_age_s} s;"
            " docs/security.md)"
        )
    return 0


def _describe(model: Any) -> str:
    """One line about a device, reader or section: its own ``describe()``, else its set fields."""
    describe = getattr(model, "describe", None)
    if callable(describe):
        return str(describe())
    fields = model.model_dump(exclude_defaults=True, exclude_none=True)
    return ", ".join(f"{k} {v}" for k, v in fields.items())


def cmd_token_verify(args: argparse.Namespace) -> int:
    from edge.cli_token import verify

    return verify(args)


def cmd_whitelist(args: argparse.Namespace) -> int:
    from edge.store import InvalidEntry, WhitelistStore, entry_from_wire, entry_to_wire

    cfg = _load(args.config)
    _data_dir(cfg)
    store = WhitelistStore(cfg.gateway.data_dir / "whitelist.db")
    try:
        if args.wl_cmd == "import":
            try:
                raw = _read_entries(args.file)
                entries = []
                for i, obj in enumerate(raw, 1):
                    try:
                        entries.append(entry_from_wire(obj))
                    except (InvalidEntry, TypeError, AttributeError) as exc:
                        raise ValueError(f"entry {i}: {exc}") from None
            except (OSError, ValueError) as exc:
                print(f"import refused, nothing changed: {exc}", file=sys.stderr)
                return 2
            try:
                n = store.import_entries(entries, version=args.version)
            except InvalidEntry as exc:  # --version beyond a SQLite INTEGER (or negative): refused unwritten
                print(f"import refused, nothing changed: {exc}", file=sys.stderr)
                return 2
            print(f"imported {n} entries (whitelist version {store.version})")
        elif args.wl_cmd == "count":
            _print({"entries": store.count(), "version": store.version})
        elif args.wl_cmd == "show":
            from edge.normalize import BadCredential, normalize_card, normalize_plate

            try:
                value = (
                    normalize_card(args.value, "hex") if args.kind == "card" else normalize_plate(args.value)
                )
            except BadCredential as exc:
                print(f"not a valid {args.kind}: {exc}", file=sys.stderr)
                return 2
            entry = store.lookup(args.kind, value)
            if entry is None:
                print(f"no {args.kind} {value} on the whitelist", file=sys.stderr)
                return 1
            _print(entry_to_wire(entry))
    finally:
        store.close()
    return 0


def cmd_events_tail(args: argparse.Namespace) -> int:
    from edge.outbox import Outbox

    cfg = _load(args.config)
    _data_dir(cfg)
    ob = Outbox(cfg.gateway.data_dir / "outbox.db", max_events=cfg.outbox.max_events)
    try:
        seen: set[str] = set()
        while True:
            for ev in reversed(ob.tail(args.n)) if not seen else reversed(ob.tail(200)):
                if ev["id"] not in seen:
                    seen.add(ev["id"])
                    _print(ev)
            if not args.follow:
                return 0
            sys.stdout.flush()
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
    finally:
        ob.close()


def cmd_open(args: argparse.Namespace) -> int:
    import getpass

    from edge import control

    cfg = _load(args.config)
    try:
        reply = asyncio.run(
            control.request(cfg.gateway.data_dir, {"cmd": "open", "door": args.door, "by": getpass.getuser()})
        )
    except ConnectionError as exc:
        print(f"{exc}: is `edge run` running with this config?", file=sys.stderr)
        return 2
    _print(reply)
    return 0 if reply.get("ok") else 1


def cmd_status(args: argparse.Namespace) -> int:
    from edge import control

    cfg = _load(args.config)
    try:
        reply = asyncio.run(control.request(cfg.gateway.data_dir, {"cmd": "status"}))
    except ConnectionError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    _print(reply.get("status", reply))
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    """The running daemon re-reads its config file (as on SIGHUP) and says what it rebuilt or why not."""
    from edge import control

    cfg = _load(args.config)  # a bad file is named here with its lines; the daemon would refuse it too
    try:
        reply = asyncio.run(control.request(cfg.gateway.data_dir, {"cmd": "reload"}, timeout=120))
    except ConnectionError as exc:
        print(f"{exc}: is `edge run` running with this config?", file=sys.stderr)
        return 2
    if args.json:
        _print(reply)
    elif reply.get("ok"):
        ch = reply.get("changed", {})
        parts = [f"{k} {', '.join(v)}" for k, v in ch.items() if v] or ["nothing changed"]
        print(f"reloaded in {reply.get('duration_ms')} ms: {'; '.join(parts)}")
    else:
        print(f"reload refused ({reply.get('error')}): {reply.get('detail', '')}", file=sys.stderr)
        print("the daemon keeps running with its previous config", file=sys.stderr)
    return 0 if reply.get("ok") else 1


def cmd_doctor(args: argparse.Namespace) -> int:
    """Checks for the installer at the gate (edge/doctor.py): 0 all well, 1 something fails, 2 bad config."""
    from edge.doctor import main as doctor

    return doctor(args.config, as_json=args.json)


def cmd_fire(args: argparse.Namespace) -> int:
    """`edge fire reset` / `edge fire status` through the running daemon (it holds the buses)."""
    import getpass

    from edge import control

    cfg = _load(args.config)
    if cfg.section("fire") is None:
        print(f"{args.config}: no `fire` section", file=sys.stderr)
        return 2
    req = {"cmd": "fire_reset", "by": getpass.getuser()} if args.fire_cmd == "reset" else {"cmd": "status"}
    try:
        reply = asyncio.run(control.request(cfg.gateway.data_dir, req, timeout=15.0))
    except ConnectionError as exc:
        print(f"{exc}: is `edge run` running with this config?", file=sys.stderr)
        return 2
    if args.fire_cmd == "status":
        status = reply.get("status", {}).get("services", {}).get("fire")
        if status is None:
            print("the running gateway has no fire linkage (started with another config?)", file=sys.stderr)
            return 2
        _print(status)
        return 0
    _print(reply)
    return 0 if reply.get("ok") else 1


SIM_COMMANDS = frozenset({"sim", "demo", "demo-code", "cloud"})


def build_parser(*, with_sims: bool = True) -> argparse.ArgumentParser:
    """``with_sims=False`` leaves out the simulator commands: `edge run` on a gate box then never imports
    the simulators (pymodbus' server, the cloud simulator, QR imaging), which cost ~14 MB of RSS."""
    p = argparse.ArgumentParser(prog="edge", description="Community gate edge gateway")
    sub = p.add_subparsers(dest="cmd", required=True)

    def with_config(sp: argparse.ArgumentParser, required: bool = True) -> argparse.ArgumentParser:
        sp.add_argument("-c", "--config", required=required, help="gateway YAML config")
        return sp

    r = with_config(sub.add_parser("run", help="run the gateway daemon"))
    r.add_argument("--log-level", default="info")
    r.add_argument("--log-format", choices=["auto", "json", "console"], default="auto")
    r.set_defaults(func=cmd_run)

    cc = with_config(sub.add_parser("check-config", help="validate a config and explain it"), required=False)
    cc.add_argument("file", nargs="?")
    cc.set_defaults(func=cmd_check_config)

    tok = sub.add_parser("token", help="credential tokens").add_subparsers(dest="tok_cmd", required=True)
    tv = with_config(tok.add_parser("verify", help="why would this code be granted or refused?"))
    tv.add_argument("--zone", help="zone of the door (default: the first door's zone)")
    tv.add_argument("--now", type=int, help="judge at this unix time (default: now)")
    tv.add_argument("-v", "--verbose", action="store_true")
    tv.add_argument("token")
    tv.set_defaults(func=cmd_token_verify)

    wl = sub.add_parser("whitelist", help="local whitelist").add_subparsers(dest="wl_cmd", required=True)
    wi = with_config(wl.add_parser("import", help="replace the whitelist from a JSON list or NDJSON file"))
    wi.add_argument("file")
    wi.add_argument("--version", type=int, default=None, help="whitelist version to record")
    with_config(wl.add_parser("count"))
    ws = with_config(wl.add_parser("show"))
    ws.add_argument("kind", choices=["card", "plate"])
    ws.add_argument("value")
    for sp in wl.choices.values():
        sp.set_defaults(func=cmd_whitelist)

    ev = sub.add_parser("events", help="local events").add_subparsers(dest="ev_cmd", required=True)
    et = with_config(ev.add_parser("tail", help="events still in the outbox, newest last"))
    et.add_argument("-n", type=int, default=20)
    et.add_argument("-f", "--follow", action="store_true")
    et.set_defaults(func=cmd_events_tail)

    op = with_config(sub.add_parser("open", help="maintenance open of a door (via the running daemon)"))
    op.add_argument("door")
    op.set_defaults(func=cmd_open)
    with_config(sub.add_parser("status", help="status of the running daemon")).set_defaults(func=cmd_status)
    rl = with_config(sub.add_parser("reload", help="the running daemon re-reads its config (as SIGHUP)"))
    rl.add_argument("--json", action="store_true", help="print the daemon's reply as JSON")
    rl.set_defaults(func=cmd_reload)
    dr = with_config(sub.add_parser("doctor", help="is this box ready? config, ports, devices, cloud..."))
    dr.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    dr.set_defaults(func=cmd_doctor)

    fire = sub.add_parser("fire", help="fire linkage of the running daemon")
    fsub = fire.add_subparsers(dest="fire_cmd", required=True)
    with_config(fsub.add_parser("reset", help="back to normal after a fire (refused while an input is on)"))
    with_config(fsub.add_parser("status", help="fire state and inputs"))
    for sp in fsub.choices.values():
        sp.set_defaults(func=cmd_fire)

    # the simulators' subcommands: they import the product (edge.runner), never this module
    if not with_sims:
        return p
    from edge import demo

    demo.add_cli(sub, with_config)
    try:
        from edge.sim.cloud import add_cli as add_cloud_cli
    except ImportError:  # cloud simulator not installed in this build
        pass
    else:
        add_cloud_cli(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    first = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(with_sims=first is None or first in SIM_COMMANDS).parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
