"""`edge doctor -c FILE [--json]`: is this gate box ready? One table (or JSON) of checks for the installer.

With the daemon running, the hardware is its own: devices, readers and the cloud link come from its
control socket (``{"cmd": "doctor"}``, answered by ``doctor_checks.daemon_view``) and no port is
opened. Without it, doctor probes itself (edge/doctor_probes.py). A daemon that is there but does not
answer (socket not ours, wedged) is reported, and the hardware is then left alone too. Exit 0 when
nothing fails, 1 otherwise, 2 for a config that does not load.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from edge import doctor_checks as dc
from edge import doctor_probes as probes
from edge.doctor_checks import Check

PROBE, DAEMON, BLIND = "probe", "daemon", "blind"  # who speaks for the hardware
BROKER_TIMEOUT_S = 5.0


# --- the command ---------------------------------------------------------------------------------


def main(config: str, *, as_json: bool) -> int:
    from edge.config import ConfigError, load_config

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        report(config, BLIND, [Check("config", "fail", exc.render())], as_json)
        return 2
    for noisy in ("pymodbus", "nfc", "paho"):  # their failures are checks here, not log lines
        logging.getLogger(noisy).setLevel(logging.CRITICAL + 1)
    try:
        mode, checks = asyncio.run(collect(cfg, config))
    except KeyboardInterrupt:
        return 130
    report(config, mode, checks, as_json)
    return 1 if any(c.status == "fail" for c in checks) else 0


async def collect(cfg: Any, path: str) -> tuple[str, list[Check]]:
    checks = [_config_check(cfg, path), _data_dir_check(cfg.gateway.data_dir)]
    mode, view, daemon = await _ask_daemon(cfg.gateway.data_dir)
    checks.append(daemon)
    for bid, bus in cfg.buses.items():
        if bus.type == "modbus_rtu":
            checks.append(dc.port_access(f"port of bus {bid}", bus.port))
    readers = cfg.reader_models()
    for rid, r in readers.items():
        if r.type == "serial":
            checks.append(dc.port_access(f"port of reader {rid}", r.port))
    units = dc.modbus_units(cfg)
    if mode == PROBE:
        checks += await _probe_hardware(cfg, units)
    else:
        checks += _from_daemon(cfg, units, view)
    checks.append(dc.clock(cfg.trust.require_clock_sync))
    checks.append(dc.disk(cfg.gateway.data_dir))
    checks.append(dc.outbox(cfg.gateway.data_dir / "outbox.db", cfg.outbox.max_events, cfg.mqtt is not None))
    checks.append(dc.whitelist(cfg.gateway.data_dir / "whitelist.db", cfg.mqtt is not None))
    return mode, checks


def _config_check(cfg: Any, path: str) -> Check:
    n_dev, n_rd = sum(1 for _ in cfg.devices()), len(cfg.reader_models())
    text = (f"{path}: site {cfg.gateway.site}, gateway {cfg.gateway.id}; {_n(n_dev, 'device')}, "
            f"{_n(n_rd, 'reader')}, {_n(len(cfg.buses), 'bus')}, "
            f"cloud {'mqtt' if cfg.mqtt else 'none (offline mode)'}")  # fmt: skip
    if not cfg.trust.keys:
        return Check("config", "warn", text + "; no trusted keys: no QR code can be granted")
    return Check("config", "ok", text)


def _n(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}{'es' if what.endswith('s') else 's'}"


def _data_dir_check(data_dir: Path) -> Check:
    from edge.datafiles import DataDirError, check_data_dir

    try:
        check_data_dir(data_dir, create=False)
    except DataDirError as exc:
        return Check("data dir", "fail", str(exc))
    return Check("data dir", "ok", f"{data_dir} writable")


async def _ask_daemon(data_dir: Path) -> tuple[str, dict[str, Any] | None, Check]:
    from edge import control

    sock = control.socket_path(data_dir)
    try:
        reply = await control.request(data_dir, {"cmd": "doctor"}, timeout=5.0)
        if reply.get("error") == "unknown_command":  # a daemon from before `doctor`: its status will do
            reply = await control.request(data_dir, {"cmd": "status"}, timeout=5.0)
            status = reply.get("status") or {}
            msg = "running, but older than doctor (restart it): device health only"
            return DAEMON, {"devices": status.get("devices") or {}}, Check("daemon", "warn", msg)
    except ConnectionError:
        msg = f"not running (nothing answers at {sock}): the hardware was probed directly"
        return PROBE, None, Check("daemon", "warn", msg)
    except PermissionError:
        msg = f"{sock}: permission denied: run doctor as the service user or root (hardware left alone)"
        return BLIND, None, Check("daemon", "fail", msg)
    except (TimeoutError, OSError, ValueError) as exc:
        msg = f"{sock} does not answer ({type(exc).__name__}): wedged daemon? (hardware left alone)"
        return BLIND, None, Check("daemon", "fail", msg)
    view = reply.get("doctor")
    if not isinstance(view, dict):
        return BLIND, None, Check("daemon", "fail", f"{sock}: unexpected reply {str(reply)[:200]}")
    text = f"running (pid {view.get('pid')}, version {view.get('version')}): devices as the daemon sees them"
    return DAEMON, view, Check("daemon", "ok", text, {"pid": view.get("pid")})


async def _safe(name: str, aw: Awaitable[Any]) -> list[Check]:
    """A probe's checks; one that raised anyway becomes a failed check, never a traceback."""
    try:
        got = await aw
    except Exception as exc:
        return [Check(name, "fail", f"probe failed: {type(exc).__name__}: {exc}")]
    return got if isinstance(got, list) else [got]


async def _probe_hardware(cfg: Any, units: dict[tuple[str, int], list[str]]) -> list[Check]:
    per_bus: dict[str, dict[int, list[str]]] = {}
    for (bid, unit), users in units.items():
        per_bus.setdefault(bid, {})[unit] = users
    lpr = cfg.section("lpr")
    listen = getattr(lpr, "listen", None) if lpr is not None else None
    jobs: list[Awaitable[list[Check]]] = [
        _safe(f"modbus bus {bid}", probes.probe_bus(bid, cfg.buses[bid], us)) for bid, us in per_bus.items()
    ]
    jobs += [
        _safe(f"reader {rid}", probes.probe_reader(rid, r, listen)) for rid, r in cfg.reader_models().items()
    ]
    jobs.append(_safe("cloud broker", _broker(cfg)))
    checks = [c for group in await asyncio.gather(*jobs) for c in group]
    if listen and any(r.type == "lpr" for r in cfg.reader_models().values()):
        checks.append(probes.lpr_listener(listen))
    return checks


async def _broker(cfg: Any) -> Check:
    if cfg.mqtt is None:
        return Check("cloud broker", "ok", "no mqtt section: offline mode (events wait in the outbox)")
    timeout = min(cfg.mqtt.connect_timeout_s, BROKER_TIMEOUT_S)
    try:
        return await dc.in_thread(lambda: probes.broker(cfg.mqtt, cfg.gateway.id, timeout), timeout + 5.0)
    except TimeoutError:
        return Check(
            "cloud broker", "fail", f"{cfg.mqtt.host}:{cfg.mqtt.port}: no answer within {timeout:g} s"
        )


def _from_daemon(
    cfg: Any, units: dict[tuple[str, int], list[str]], view: dict[str, Any] | None
) -> list[Check]:
    out: list[Check] = []
    health: dict[str, Any] = (view or {}).get("devices") or {}
    seen = {(u.get("bus"), u.get("unit")): u for u in (view or {}).get("units") or [] if isinstance(u, dict)}
    for (bid, unit), users in units.items():
        name, on = f"modbus {bid} unit {unit}", f"({', '.join(users)})"
        u = seen.get((bid, unit))
        if view is None:
            out.append(Check(name, "warn", f"not probed: the daemon holds the bus {on}"))
        elif u is None:
            devs = [health.get(d) or {} for d in users]
            bad = [str(h.get("error")) for h in devs if h.get("online") is False]
            status = "fail" if bad else "ok"
            out.append(Check(name, status, (f"offline: {bad[0]}" if bad else "online (daemon)") + f" {on}"))
        else:
            out.append(_unit_from_daemon(name, on, u, cfg.buses[bid].probe_timeout_s))
    for rid, r in cfg.reader_models().items():
        name, h = f"reader {rid} ({r.type})", health.get(rid)
        if view is None or not isinstance(h, dict):
            out.append(Check(name, "warn", "not probed: the daemon holds the reader"))
        elif h.get("online"):
            out.append(Check(name, "ok", "online (daemon)"))
        else:
            out.append(Check(name, "fail", f"offline (daemon): {h.get('error') or 'no reason given'}"))
    out.append(_cloud_from_daemon(cfg, view))
    return out


def _unit_from_daemon(name: str, on: str, u: dict[str, Any], probe_timeout_s: float) -> Check:
    rtt, data = u.get("rtt_ms"), {"bus": u.get("bus"), "unit": u.get("unit"), "rtt_ms": u.get("rtt_ms")}
    if not u.get("online"):
        if u.get("error") is None:
            return Check(name, "warn", f"the daemon has not talked to it yet {on}", data)
        return Check(name, "fail", f"offline (daemon): {u['error']} {on}", data)
    if rtt is None:
        return Check(name, "warn", f"online, no request answered yet {on}", data)
    if rtt > probe_timeout_s * 1e3:
        return Check(name, "warn", f"last request answered in {rtt} ms: slower than probe_timeout "
                                   f"{probe_timeout_s:g} s {on}", data)  # fmt: skip
    return Check(name, "ok", f"last request answered in {rtt} ms (daemon) {on}", data)


def _cloud_from_daemon(cfg: Any, view: dict[str, Any] | None) -> Check:
    name = "cloud broker"
    if cfg.mqtt is None:
        return Check(name, "ok", "no mqtt section: offline mode (events wait in the outbox)")
    where = f"{cfg.mqtt.host}:{cfg.mqtt.port}"
    if view is None or "cloud" not in view:
        return Check(name, "warn", f"{where}: not probed (the daemon did not say)")
    cloud = view["cloud"]
    if not isinstance(cloud, dict):
        return Check(
            name, "warn", f"{where}: the running daemon has no cloud link (started with another config?)"
        )
    if cloud.get("connected"):
        return Check(name, "ok", f"{where}: the daemon's link is connected", {"connected": True})
    why = cloud.get("error") or "connecting"
    return Check(name, "fail", f"{where}: the daemon's link is down: {why}", {"connected": False})


# --- output --------------------------------------------------------------------------------------


def report(config: str, mode: str, checks: list[Check], as_json: bool) -> None:
    counts = {s: sum(1 for c in checks if c.status == s) for s in ("ok", "warn", "fail")}
    if as_json:
        out = {"ok": counts["fail"] == 0, "config": config, "mode": mode, "summary": counts,
               "checks": [c.to_json() for c in checks]}  # fmt: skip
        print(json.dumps(out, ensure_ascii=False))
        return
    width = min(max(len(c.name) for c in checks), 36)
    print(f"{'CHECK':<{width}}  STATUS  DETAIL")
    for c in checks:
        label = c.status if c.status == "ok" else c.status.upper()
        lines = c.detail.splitlines() or [""]
        print(f"{c.name:<{width}}  {label:<6}  {lines[0]}")
        for more in lines[1:]:
            print(f"{'':<{width}}  {'':<6}  {more}")
    print(f"\n{counts['ok']} ok, {counts['warn']} warn, {counts['fail']} fail")
    sys.stdout.flush()
