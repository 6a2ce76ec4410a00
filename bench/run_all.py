"""Run every bench behind docs/performance.md and rewrite its summary table (date, machine, commit).

Each bench runs as its own process with the arguments listed in bench/figures.py; its figures are
read from the lines it prints. Raw outputs land in var/bench/run_all/<name>.txt, and the figures of
the latest run of each bench in docs/bench-results.json, so `--only` refreshes some rows and
keeps the others (each row says when it was measured and whether in quick mode). Only the text
between the summary markers in docs/performance.md is rewritten.

    .venv/bin/python bench/run_all.py [--quick] [--only NAME[,NAME]] [--list] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from figures import BENCHES, Bench, Figure

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "performance.md"
OUT = ROOT / "var" / "bench" / "run_all"  # each bench's full output
# The figures behind the table, committed beside it: a partial run (--only) on a fresh checkout keeps
# the other benches' rows instead of marking them "not run".
STORE = ROOT / "docs" / "bench-results.json"
START, END = "<!-- summary:start -->", "<!-- summary:end -->"


def sh(*cmd: str) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine() -> str:
    """CPU model, cores, RAM, kernel, Python: the line that says where the figures come from."""
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor() or platform.machine())  # fmt: skip
    mem = next(
        int(ln.split()[1])
        for ln in Path("/proc/meminfo").read_text().splitlines()
        if ln.startswith("MemTotal")
    )
    return (f"{cpu}, {os.cpu_count()} cores ({platform.machine()}), {mem / 1024 / 1024:.1f} GiB RAM, "
            f"Linux {platform.release()}, Python {platform.python_version()}")  # fmt: skip


def commit() -> str:
    rev = sh("git", "rev-parse", "--short", "HEAD") or "unknown"
    dirty = sh("git", "status", "--porcelain", "--untracked-files=no", "--", "edge", "drivers", "bench")
    return f"{rev}{' (+ uncommitted changes)' if dirty else ''}"


def parse(fig: Figure, text: str) -> dict[str, Any]:
    """The figure's value and verdict from a bench's output; value None when the line is missing."""
    m = re.search(fig.pattern, text)
    if m is None:
        return {"value": None, "met": None}
    nums = [float(g.replace(",", "")) for g in m.groups()]
    shown = fig.show.format(*m.groups())
    return {"value": shown, "met": None if fig.check is None else bool(fig.check(nums)), "numbers": nums}


def run(bench: Bench, quick: bool) -> dict[str, Any]:
    args = bench.quick if quick else bench.full
    cmd = [sys.executable, f"bench/{bench.script}", *args]
    print(f"== {bench.name}: {' '.join(cmd[1:])}", flush=True)
    load = os.getloadavg()[0]
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=bench.timeout_s)
        text, rc = p.stdout + p.stderr, p.returncode
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        text, rc = out + f"\n(timed out after {bench.timeout_s:.0f} s)", -1
    took = time.monotonic() - t0
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{bench.name}.txt").write_text(f"$ {' '.join(cmd[1:])}\n{text}")
    figs = {f.name: parse(f, text) for f in bench.figures}
    for name, r in figs.items():
        print(f"   {name}: {r['value'] if r['value'] is not None else 'NOT FOUND in output'}", flush=True)
    if rc != 0:
        print(f"   exit status {rc}; output in {OUT / (bench.name + '.txt')}", flush=True)
    return {
        "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": quick,
        "command": " ".join(cmd[1:]),
        "commit": commit(),
        "rc": rc,
        "seconds": round(took, 1),
        "load1": round(load, 2),
        "figures": figs,
    }


def verdict(r: dict[str, Any], quick: bool) -> str:
    if r.get("value") is None:
        return "no figure"
    if r.get("met") is None:
        return ""
    word = "met" if r["met"] else "**not met**"
    return f"{word} (quick run)" if quick else word


def _calls(results: dict[str, Any]) -> dict[str, list[str]]:
    """run_all.py arguments -> the benches whose stored rows that call measured."""
    calls: dict[str, list[str]] = {}
    for b in BENCHES:
        if b.name in results:
            calls.setdefault(str(results[b.name].get("call", "")), []).append(b.name)
    return calls


def table(results: dict[str, Any], header: dict[str, str]) -> str:
    commits = sorted({str(r.get("commit", "?")) for r in results.values()})
    machines = sorted({str(r.get("machine", header["machine"])) for r in results.values()})
    rows = [
        f"Written by `.venv/bin/python bench/run_all.py{header['args']}` on {header['date']}; rows of benches "
        "that call did not run are kept from earlier calls (each row says when it was measured). Rows by call: "
        + "; ".join(f"`run_all.py{c}`: {', '.join(n)}" for c, n in _calls(results).items()) + ".",
        f"Machine{'s' if len(machines) > 1 else ''}: {'; '.join(machines)}. "
        f"Commit{'s' if len(commits) > 1 else ''}: "
        f'{", ".join(f"`{c}`" for c in commits)} ("+ uncommitted": other work in the tree at the time). '
        "The load average (1 min) when each bench started is in its row: other work on the box makes "
        "the figures noisy.",
        "",
        "| bench | figure | value | target | | measured (load) |",
        "|---|---|---|---|---|---|",
    ]
    for b in BENCHES:
        res = results.get(b.name)
        for f in b.figures:
            if res is None:
                rows.append(f"| {b.name} | {f.name} | not run | {f.target} | | |")
                continue
            r = res["figures"].get(f.name, {"value": None})
            value = r["value"] if r["value"] is not None else f"(not in output, exit {res['rc']})"
            mode = ", quick" if res["quick"] else ""
            rows.append(f"| {b.name} | {f.name} | {value} | {f.target} | {verdict(r, res['quick'])} | "
                        f"{res['when']}{mode} ({res['load1']}) |")  # fmt: skip
    rows.append("")
    rows.append("Quick runs use smaller sizes, so their figures are not the targets' figures. Commands run:")
    rows.append("")
    rows.extend(f"* {b.name}: `{results[b.name]['command']}`" for b in BENCHES if b.name in results)
    return "\n".join(rows)


def rewrite(doc: Path, body: str) -> None:
    """Replace the text between the markers (inserted before the first section when they are missing)."""
    text = doc.read_text()
    block = f"{START}\n## Latest run of bench/run_all.py\n\n{body}\n{END}"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        at = text.find("\n## ")
        at = len(text) if at < 0 else at + 1
        text = f"{text[:at]}{block}\n\n{text[at:]}"
    doc.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes: the whole set in minutes")
    ap.add_argument("--only", default="", help="comma-separated bench names (see --list)")
    ap.add_argument("--skip", default="", help="comma-separated bench names not to run")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--no-write", action="store_true", help="do not touch docs/performance.md")
    ap.add_argument(
        "--table-only", action="store_true", help="rewrite the table from the stored results, run nothing"
    )
    a = ap.parse_args()
    if a.list:
        for b in BENCHES:
            print(f"{b.name:<12} bench/{b.script} {' '.join(b.full)}   (quick: {' '.join(b.quick)})")
        return 0
    names = {b.name for b in BENCHES}
    only = {n for n in a.only.split(",") if n}
    skip = {n for n in a.skip.split(",") if n}
    unknown = (only | skip) - names
    if unknown:
        print(
            f"unknown bench {', '.join(sorted(unknown))}; known: {', '.join(sorted(names))}", file=sys.stderr
        )
        return 2
    store = STORE
    results: dict[str, Any] = json.loads(store.read_text()) if store.exists() else {}
    failed = 0
    args = (" --quick" if a.quick else "") + (f" --only {a.only}" if a.only else "")
    args += f" --skip {a.skip}" if a.skip else ""
    for b in BENCHES:
        if a.table_only or (only and b.name not in only) or b.name in skip:
            continue
        results[b.name] = {**run(b, a.quick), "call": args, "machine": machine()}
        failed += results[b.name]["rc"] != 0
        store.write_text(json.dumps(results, indent=1) + "\n")
    args += " --table-only" if a.table_only else ""
    header = {"args": args, "date": dt.date.today().isoformat(), "machine": machine(), "commit": commit()}
    body = table(results, header)
    if a.no_write:
        print(body)
    else:
        rewrite(DOC, body)
        print(f"summary table rewritten in {DOC.relative_to(ROOT)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
