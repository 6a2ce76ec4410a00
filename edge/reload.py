"""Live reload (SIGHUP, `systemctl reload`, `edge reload`): re-read the config, rebuild what changed.

The new file is parsed in full first; a bad one is refused with its file:line problems and the running
config stays. Only devices and readers whose config changed are stopped (to their safe state) and
built again; untouched ones keep running, and the whitelist, outbox and cloud link are never touched.
`trust` and `rate_limit` apply in place. A change to a section the running daemon cannot swap safely
(gateway identity and data dir, buses, outbox, mqtt, metrics, log, or a service such as `fire`, and
adding or removing a device while a service covers "all" devices) is refused as `restart_required`
naming those sections: the old config keeps running and the installer restarts the service.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from drivers.registry import SECTIONS
from edge.config import Config, ConfigError, load_config

if TYPE_CHECKING:
    from edge.app import Gateway

log = structlog.get_logger(__name__)

RESTART_SECTIONS = ("gateway", "buses", "outbox", "mqtt", "metrics", "log")


@dataclass
class Plan:
    """What a new config changes, computed from the two configs alone (no I/O)."""

    restart: list[str] = field(default_factory=list)  # sections that need a restart
    devices_out: list[str] = field(default_factory=list)  # stopped (removed or changed)
    devices_in: list[tuple[str, str, Any]] = field(default_factory=list)  # (section, id, model) built
    readers_out: list[str] = field(default_factory=list)
    readers_in: list[tuple[str, Any]] = field(default_factory=list)
    trust: bool = False
    rate_limit: bool = False

    def changed(self) -> dict[str, list[str]]:
        return {
            "devices": sorted({*self.devices_out, *(d for _s, d, _m in self.devices_in)}),
            "readers": sorted({*self.readers_out, *(r for r, _m in self.readers_in)}),
            "sections": [s for s, on in (("trust", self.trust), ("rate_limit", self.rate_limit)) if on],
        }

    def empty(self) -> bool:
        c = self.changed()
        return not (c["devices"] or c["readers"] or c["sections"])


def plan(old: Config, new: Config) -> Plan:
    p = Plan()
    p.restart = [s for s in (*RESTART_SECTIONS, *SECTIONS) if getattr(old, s, None) != getattr(new, s, None)]
    old_dev = {(sec, d): m for sec, d, m in old.devices()}
    new_dev = {(sec, d): m for sec, d, m in new.devices()}
    if {d for _s, d in old_dev} != {d for _s, d in new_dev}:
        for name in SECTIONS:
            if getattr(new, name, None) is not None and name not in p.restart:
                p.restart.append(name)  # a service built over the old device set would miss or hold a ghost
    for key, model in old_dev.items():
        if new_dev.get(key) != model:
            p.devices_out.append(key[1])
    for key, model in new_dev.items():
        if old_dev.get(key) != model:
            p.devices_in.append((key[0], key[1], model))
    old_r, new_r = old.reader_models(), new.reader_models()
    p.readers_out = [r for r, m in old_r.items() if new_r.get(r) != m]
    p.readers_in = [(r, m) for r, m in new_r.items() if old_r.get(r) != m]
    p.trust = old.trust != new.trust
    p.rate_limit = old.rate_limit != new.rate_limit
    return p


async def reload(gw: Gateway, path: str | Path | None) -> dict[str, Any]:
    """Reload ``gw`` from ``path``; the result (also logged) is what `edge reload` prints."""
    lock: asyncio.Lock = gw.__dict__.setdefault("_reload_lock", asyncio.Lock())
    async with lock:
        t0 = time.monotonic()
        if path is None:
            return _refused("no_config_path", "this daemon was not started from a config file")
        try:
            new = await asyncio.to_thread(load_config, path)
        except ConfigError as exc:
            return _refused("config_invalid", exc.render(), file=str(path))
        except OSError as exc:
            return _refused("config_unreadable", str(exc), file=str(path))
        p = plan(gw.cfg, new)
        if p.restart:
            return _refused(
                "restart_required",
                f"changed sections the running daemon cannot swap: {', '.join(p.restart)}",
                sections=p.restart,
            )
        try:
            await apply(gw, new, p)
        except Exception as exc:  # never leave the daemon half reloaded without saying so
            log.exception("config_reload_failed", error=str(exc) or type(exc).__name__)
            return {"ok": False, "error": "reload_failed", "detail": str(exc) or type(exc).__name__}
        extra = {"unchanged": True} if p.empty() else {}
        log.info("config_reloaded", changed=p.changed(), duration_ms=_ms(t0), **extra)
        return {"ok": True, "changed": p.changed(), "duration_ms": _ms(t0)}


async def apply(gw: Gateway, new: Config, p: Plan) -> None:
    """Readers that change go quiet first, so no presentation reaches a device being swapped; changed
    devices stop to their safe state and start again (under a fire hold when one is on); then the
    new config, trust and rate limit take effect and the new readers start."""
    from edge.ratelimit import RateLimiter

    for rid in p.readers_out:
        reader = gw.readers.pop(rid)
        try:
            await reader.stop()
        except Exception as exc:
            log.error("reader_stop_failed", reader=rid, error=str(exc) or type(exc).__name__)
        gw.release(rid)
    for dev_id in p.devices_out:
        device = gw.devices.pop(dev_id)
        gw.release(dev_id)
        await gw.stop_device(dev_id, device)
    gw.cfg = new
    for section, dev_id, dcfg in p.devices_in:
        device = gw.build_device(section, dev_id, dcfg)
        for bus_id, unit in device.units():
            gw.buses[bus_id].register_device(unit)
        gw.devices[dev_id] = device
        gw._device_state[dev_id] = (True, None)
        hold = any(s.holds(dev_id) for s in gw.services.values())
        await device.start(fire=hold)
    gw.index_units()
    gw.reader_device = gw.flow.reader_device = new.reader_device()
    if p.trust:
        gw.reload_trust()
    if p.rate_limit:
        rl = new.rate_limit
        gw.flow.limiter = RateLimiter(rl.denials, rl.window_s, rl.cooldown_s)
    for rid, rcfg in p.readers_in:
        reader = gw.readers[rid] = gw.build_reader(rid, rcfg)
        gw.watch_reader(rid, reader)
        await reader.start()
    gw.flow.exempt = frozenset(r for r, reader in gw.readers.items() if reader.rate_limit_exempt)
    gw.rejects.where = {
        rid: (gw.reader_device.get(rid, "gateway"), r.method) for rid, r in gw.readers.items()
    }


def _ms(t0: float) -> float:
    return round((time.monotonic() - t0) * 1000, 1)


def _refused(error: str, detail: str, **kw: Any) -> dict[str, Any]:
    log.error("config_reload_refused", error=error, detail=detail, kept="the running config", **kw)
    return {"ok": False, "error": error, "detail": detail, **kw}
