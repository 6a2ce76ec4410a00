#!/usr/bin/env python3
"""Fuzz the gateway's five input families (issue 9) and print, per family, what became of the inputs.

    .venv/bin/python scripts/fuzz.py --n 200000 --jobs 2        # 1,000,000 inputs, about 15 min
    .venv/bin/python scripts/fuzz.py --only plates --n 5000      # one family, quickly
    .venv/bin/python scripts/fuzz.py --replay plates:1234        # run one input again, traceback shown

Families: tokens (verify_token + the engine + verify_command), serial (bytes on a fd read by a real
SerialReader), mqtt (every subscribed topic through the real CloudLink), plates (the three camera
dialects through the real LprReader), config (parse_config / load_config). Input i of a family is
made from Random(f"{seed}:{family}:{i}"), so any input can be replayed by its index.

A crash is any exception other than the documented rejection, or a log record with a traceback;
the first few per family are written to --crashes with their input. Exit status 1 on any crash.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FAMILIES = ("tokens", "serial", "mqtt", "plates", "config")
KEEP_CRASHES = 5
_cache: dict[str, Any] = {}


def family(name: str) -> Any:
    """One instance per process and family: its stores and readers live across chunks."""
    if name not in _cache:
        from tests.support import fuzz_targets as ft

        ft.quiet_logs()
        if name == "mqtt":
            from tests.support.fuzz_mqtt import MqttFamily

            _cache[name] = MqttFamily()
        else:
            cls = {"tokens": ft.TokenFamily, "serial": ft.SerialFamily, "plates": ft.PlateFamily,
                   "config": ft.ConfigFamily}[name]  # fmt: skip
            _cache[name] = cls()
    return _cache[name]


def rng_for(seed: int, name: str, i: int) -> random.Random:
    return random.Random(f"{seed}:{name}:{i}")


def run_chunk(task: tuple[str, int, int, int]) -> dict[str, Any]:
    """Inputs [start, start+count) of one family: counts, reasons and the first crashes."""
    from tests.support.fuzz_targets import Crash

    name, seed, start, count = task
    fam = family(name)
    counts: collections.Counter[str] = collections.Counter()
    reasons: collections.Counter[str] = collections.Counter()
    kinds: collections.Counter[str] = collections.Counter()
    crashes: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for i in range(start, start + count):
        inp = fam.generate(rng_for(seed, name, i))
        try:
            outcome, reason = fam.run(inp)
        except Crash as exc:
            counts["crashes"] += 1
            sig = signature(exc)
            kinds[sig] += 1
            if kinds[sig] == 1 and len(crashes) < 4 * KEEP_CRASHES:  # one reproducer per kind
                crashes.append({"index": i, "what": str(exc), "sig": sig, "input": repr(inp)[:20000],
                                "trace": exc.trace})  # fmt: skip
            continue
        counts[outcome] += 1
        reasons[reason[:48]] += 1
    return {"name": name, "inputs": count, "counts": counts, "reasons": reasons, "crashes": crashes, "kinds": kinds,
            "seconds": time.perf_counter() - t0}  # fmt: skip


def signature(exc: Any) -> str:
    """Exception type and the innermost product frame: one line per distinct crash."""
    frames = [ln.strip() for ln in exc.trace.splitlines() if ln.strip().startswith('File "')]
    ours = [f for f in frames if "/site-packages/" not in f and "/lib/python3" not in f]
    where = (ours or frames or ["?"])[-1].replace(str(ROOT) + "/", "")
    return f"{str(exc).split(':')[0]} at {where}"[:200]


def tasks(names: list[str], n: int, seed: int, chunks: int) -> list[tuple[str, int, int, int]]:
    out = []
    size = max(1, -(-n // chunks))
    for name in names:
        for start in range(0, n, size):
            out.append((name, seed, start, min(size, n - start)))
    # the slowest family first, so two workers finish together
    return sorted(out, key=lambda t: t[0] != "config")


def report(results: list[dict[str, Any]], names: list[str], crash_file: Path, wall: float, args: Any) -> int:
    total_inputs = total_crashes = 0
    lines = []
    hdr = f"{'family':<8} {'inputs':>9} {'rejected':>9} {'accepted':>9} {'other':>7} {'crashes':>7}  top reasons"
    print(hdr)
    for name in names:
        rs = [r for r in results if r["name"] == name]
        inputs = sum(r["inputs"] for r in rs)
        c: collections.Counter[str] = sum((r["counts"] for r in rs), collections.Counter())
        why: collections.Counter[str] = sum((r["reasons"] for r in rs), collections.Counter())
        kinds: collections.Counter[str] = sum((r["kinds"] for r in rs), collections.Counter())
        seen: set[str] = set()
        crashes = [x for r in rs for x in r["crashes"] if not (x["sig"] in seen or seen.add(x["sig"]))]
        total_inputs += inputs
        total_crashes += c["crashes"]
        top = ", ".join(f"{k} {v}" for k, v in why.most_common(6))
        print(
            f"{name:<8} {inputs:>9} {c['rejected']:>9} {c['accepted']:>9} {c['other']:>7} {c['crashes']:>7}  {top}"
        )
        for sig, k in kinds.most_common():
            print(f"{'':<8} crash x{k}: {sig}")
        for x in crashes[:KEEP_CRASHES]:
            lines.append(f"=== {name} input {x['index']} (seed {args.seed}): {x['what']}\n"
                         f"replay: scripts/fuzz.py --seed {args.seed} --replay {name}:{x['index']}\n"
                         f"input: {x['input']}\n{x['trace']}\n")  # fmt: skip
    print(f"{'total':<8} {total_inputs:>9} {'':>9} {'':>9} {'':>7} {total_crashes:>7}  "
          f"in {wall:.0f} s with {args.jobs} job(s), seed {args.seed}")  # fmt: skip
    if lines:
        crash_file.write_text("".join(lines), encoding="utf-8")
        print(f"crash reproducers: {crash_file}")
    return 1 if total_crashes else 0


def replay(spec: str, seed: int) -> int:
    import traceback

    name, _, idx = spec.partition(":")
    fam = family(name)
    inp = fam.generate(rng_for(seed, name, int(idx)))
    print(f"input: {inp!r}"[:4000])
    try:
        print("outcome:", fam.run(inp))
    except Exception as exc:
        print(f"CRASH: {exc}\n{getattr(exc, 'trace', '') or traceback.format_exc()}")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000, help="inputs per family (default 200000: 1M in all)")
    ap.add_argument("--n-for", action="append", default=[], metavar="FAMILY=N",
                    help="inputs for one family instead of --n (repeatable): config is ~50x slower")  # fmt: skip
    ap.add_argument("--only", action="append", choices=FAMILIES, help="fuzz only this family (repeatable)")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    ap.add_argument("--seed", type=int, default=1, help="run seed: input i of a family is fixed by it")
    ap.add_argument("--crashes", type=Path, default=Path("fuzz-crashes.txt"), help="where reproducers go")
    ap.add_argument("--replay", metavar="FAMILY:INDEX", help="run one input again and show what happened")
    args = ap.parse_args(argv)
    if args.replay:
        return replay(args.replay, args.seed)
    names = args.only or list(FAMILIES)
    scratch = tempfile.mkdtemp(
        prefix="edge-fuzz-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    )
    os.environ["EDGE_FUZZ_DIR"] = scratch  # pool workers leave by os._exit: their atexit never runs
    try:
        return _run(args, names)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run(args: Any, names: list[str]) -> int:
    per = {name: args.n for name in names}
    for spec in args.n_for:
        name, _, n = spec.partition("=")
        if name not in per or not n.isdigit():
            raise SystemExit(f"--n-for {spec!r}: FAMILY=N with FAMILY one of {', '.join(names)}")
        per[name] = int(n)
    todo = [t for name in names for t in tasks([name], per[name], args.seed, max(1, args.jobs) * 4)]
    todo.sort(key=lambda t: t[0] != "config")
    t0 = time.perf_counter()
    results: list[dict[str, Any]] = []
    if args.jobs > 1:
        with multiprocessing.get_context("fork").Pool(args.jobs, maxtasksperchild=None) as pool:
            for r in pool.imap_unordered(run_chunk, todo):
                results.append(r)
                print(f"  {r['name']}: {r['inputs']} inputs in {r['seconds']:.0f} s", file=sys.stderr)
    else:
        for t in todo:
            results.append(run_chunk(t))
    return report(results, names, args.crashes, time.perf_counter() - t0, args)


if __name__ == "__main__":
    sys.exit(main())
