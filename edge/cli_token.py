"""`edge token verify`: why would this code be granted or refused here, and for whom?

The same verification and engine rules as a presentation at a reader: a JWS token (tokens.md) or,
when `trust.legacy_ejyy` is on, an ejyy AES code decided against its whitelist entry; nothing is
recorded and no use is counted."""

from __future__ import annotations

import argparse
import json
import sys
import time
from zoneinfo import ZoneInfo

from edge.clock import ClockState
from edge.datafiles import DataDirError, check_data_dir
from edge.engine import Clock, DeviceContext, decide_legacy, decide_token
from edge.legacy_ejyy import LegacyClaims, candidate, verify_legacy
from edge.model import Decision, Presentation
from edge.runner import load_config_or_exit
from edge.store import WhitelistStore
from edge.tokens import TokenClaims, verify_token
from edge.trust import build_legacy, build_policy


def verify(args: argparse.Namespace) -> int:
    cfg = load_config_or_exit(args.config)
    zone = args.zone or next((getattr(d, "zone", "") for _, _, d in cfg.devices()), "")
    try:
        check_data_dir(cfg.gateway.data_dir, create=True)
    except DataDirError as exc:
        print(str(exc), file=sys.stderr)  # one line, as every `edge` command with a data dir
        return 2
    text = args.token.strip()
    now = float(args.now) if args.now is not None else time.time()
    trusted = True if args.now is not None else ClockState(None if cfg.trust.require_clock_sync else True).synced()
    pres = Presentation("token", text, "qr", None)
    device = DeviceContext("cli", zone)
    legacy = build_legacy(cfg)
    store = WhitelistStore(cfg.gateway.data_dir / "whitelist.db")
    try:
        detail = ""
        if legacy is not None and candidate(text):  # as the gateway does: hex is never a JWS
            found = verify_legacy(text, legacy, now, clock_trusted=trusted)
            entry = store.lookup(*found.entry_key) if isinstance(found, LegacyClaims) else None
            clock = Clock(now, ZoneInfo(cfg.gateway.timezone), trusted, cfg.trust.require_clock_sync)
            d: Decision = decide_legacy(pres, found, entry, device, clock)
            detail = getattr(found, "detail", "")
        else:
            verified = verify_token(text, build_policy(cfg, store), now, clock_trusted=trusted)
            revoked, used = False, 0
            if isinstance(verified, TokenClaims):
                revoked = store.is_revoked(verified.jti, now)
                used = store.uses(verified.jti)
            d = decide_token(pres, verified, device, revoked=revoked, used=used)
            detail = getattr(verified, "detail", "")
    finally:
        store.close()
    out: dict[str, object] = {
        "result": d.result,
        "reason": d.reason,
        "subject": d.subject,
        "floors": list(d.floors) if d.floors is not None else None,
    }
    if args.verbose:
        out.update({"jti": d.jti, "credential": d.credential, "zone": zone, "now": int(now),
                    "clock_trusted": trusted, "detail": detail})  # fmt: skip
    print(json.dumps(out, ensure_ascii=False))
    return 0 if d.granted else 1
