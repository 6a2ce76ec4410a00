"""What run_all.py runs and reads: each bench of docs/performance.md, its full and --quick arguments,
and the figures taken from its printed output (regular expressions on the lines it already prints,
so the benches stay as they are) with their targets.

A figure's ``check`` gets the captured numbers (floats) and says whether the target is met; None
means the figure is reported without a target.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

NUM = r"([\d.,]+)"


@dataclass(frozen=True)
class Figure:
    name: str
    pattern: str  # groups are the numbers shown, in order
    show: str  # format of the value, given the numbers: "{0} / {1} ms"
    target: str = "(report)"
    check: Callable[[list[float]], bool] | None = None


@dataclass(frozen=True)
class Bench:
    name: str
    script: str
    full: list[str] = field(default_factory=list)
    quick: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    timeout_s: float = 1800


BENCHES: list[Bench] = [
    Bench(
        "e2e",
        "bench_e2e.py",
        [],
        ["--n", "200", "--entries", "100000"],
        [
            Figure(
                "tap -> relay write, gateway software p50 / p99 (1M whitelist, 50/s)",
                rf"gateway software\s+p50\s+{NUM} ms\s+p99\s+{NUM} ms",
                "{0} / {1} ms",
                "<= 2 / <= 5 ms",
                lambda v: v[0] <= 2 and v[1] <= 5,
            ),
            Figure(
                "tap -> relay write, total p50 / p99",
                rf"total \(last byte -> server\)\s+p50\s+{NUM} ms\s+p99\s+{NUM} ms",
                "{0} / {1} ms",
            ),
        ],
    ),
    Bench(
        "idle",
        "bench_idle.py",
        [],
        ["--seconds", "15"],
        [
            Figure(
                "`edge run` RSS, demo config", rf"RSS {NUM} MB", "{0} MB", "<= 60 MB", lambda v: v[0] <= 60
            ),
            Figure(
                "`edge run` idle CPU, demo config",
                rf"idle CPU {NUM}%",
                "{0}% of a core",
                "<= 0.5%",
                lambda v: v[0] <= 0.5,
            ),
        ],
    ),
    Bench(
        "startup",
        "bench_startup.py",
        [],
        ["--runs", "3"],
        [
            Figure(
                "start-up to READY=1, 1M whitelist, warm: median / max",
                rf"entries, warm, \d+ runs: median {NUM} s, min {NUM} s, max {NUM} s",
                "{0} / {2} s",
                "<= 1 s",
                lambda v: v[2] <= 1,
            ),
            Figure(
                "start-up to READY=1, 1M whitelist, warm, after a clean stop: median / max",
                rf"entries, warm, after a clean stop, \d+ runs: median {NUM} s, min {NUM} s, max {NUM} s",
                "{0} / {2} s",
                "<= 1 s",
                lambda v: v[2] <= 1,
            ),
            Figure(
                "start-up to READY=1, 1M whitelist, file not cached: median / max",
                rf"entries, cold file, \d+ runs: median {NUM} s, min {NUM} s, max {NUM} s",
                "{0} / {2} s",
            ),
            Figure(
                "start-up to READY=1, empty whitelist: median / max",
                rf"empty whitelist, \d+ runs: median {NUM} s, min {NUM} s, max {NUM} s",
                "{0} / {2} s",
            ),
            Figure(
                "`edge run` RSS (VmRSS / VmHWM) with 1M entries, after READY",
                rf"RSS after READY, \d+ entries: VmRSS {NUM} MB, VmHWM {NUM} MB",
                "{0} / {1} MB",
            ),
            Figure(
                "same, after 20 presentations",
                rf"RSS after \d+ presentations.*VmRSS {NUM} MB, VmHWM {NUM} MB",
                "{0} / {1} MB",
            ),
        ],
    ),
    Bench(
        "reload",
        "bench_reload.py",
        [],
        ["--trials", "3"],
        [
            Figure(
                "SIGHUP -> config_reloaded, one reader changed: median / max",
                rf"reader change, n=\d+: median {NUM} ms, max {NUM} ms",
                "{0} / {1} ms",
            ),
            Figure(
                "SIGHUP -> config_reloaded, one door changed: median / max",
                rf"device change, n=\d+: median {NUM} ms, max {NUM} ms",
                "{0} / {1} ms",
            ),
            Figure(
                "SIGHUP -> config_reload_refused, bad file: median / max",
                rf"refused change, n=\d+: median {NUM} ms, max {NUM} ms",
                "{0} / {1} ms",
            ),
        ],
    ),
    Bench(
        "drain",
        "bench_drain.py",
        [],
        ["--events", "100000"],
        [
            Figure(
                "backlog drain to loopback Mosquitto, QoS 1",
                rf"in [\d.]+ s: {NUM} events/s",
                "{0} events/s",
                ">= 50,000/s",
                lambda v: v[0] >= 50_000,
            ),
            Figure(
                "decision p99 while draining",
                rf"while draining: n=\d+ p50 [\d.]+ ms, p99 {NUM} ms",
                "{0} ms",
                "<= 5 ms",
                lambda v: v[0] <= 5,
            ),
        ],
    ),
    Bench(
        "remote_open",
        "bench_remote_open.py",
        [],
        ["--n", "50"],
        [
            Figure(
                "remote open, `R/cmd` publish -> relay write, p50 / p99",
                rf"coil write at the relay board, n=\d+: p50 {NUM} ms, p99 {NUM} ms",
                "{0} / {1} ms",
                "p99 <= 10 ms",
                lambda v: v[1] <= 10,
            ),
        ],
    ),
    Bench(
        "snapshot",
        "bench_snapshot.py",
        ["--queued"],
        ["--queued", "--entries", "100000"],
        [
            Figure(
                "snapshot of 1M entries queued at the broker, seconds to apply",
                rf"applied \(version swapped, [\d,]+ rows\) {NUM} s after reconnecting",
                "{0} s",
                "<= 15 s",
                lambda v: v[0] <= 15,
            ),
            Figure(
                "lookup p99 on the loop while it applies",
                rf"lookup on the loop meanwhile: n=\d+ p50 [\d.]+ ms, p99 {NUM} ms",
                "{0} ms",
            ),
        ],
    ),
    Bench(
        "outbox",
        "bench_outbox.py",
        [],
        ["--events", "100000"],
        [
            Figure(
                "disk for 3M events in the outbox",
                rf"3M -> {NUM} GB",
                "{0} GB",
                "<= 1.5 GB",
                lambda v: v[0] <= 1.5,
            ),
            Figure("outbox append p50 / p99", rf"append n=\d+: p50 {NUM} us, p99 {NUM} us", "{0} / {1} µs"),
        ],
    ),
    Bench(
        "store",
        "bench_store.py",
        [],
        ["--entries", "100000"],
        [
            Figure(
                "whitelist lookup (idle) p50 / p99",
                rf"lookup \(idle\) n=\d+: p50 {NUM} us, p99 {NUM} us",
                "{0} / {1} µs",
            ),
            Figure(
                "random-key shuffled snapshot of 1M entries, in-process", rf"parts of \d+: {NUM} s", "{0} s"
            ),
        ],
    ),
    Bench(
        "tokens",
        "bench_tokens.py",
        [],
        ["2000"],
        [
            Figure("verify_token p50 / p99", rf"p50 {NUM} µs\s+p99 {NUM} µs", "{0} / {1} µs"),
        ],
    ),
    Bench(
        "fire",
        "bench_fire.py",
        ["--trials", "60"],
        ["--trials", "10", "--idle-s", "5", "--grants", "30"],
        [
            Figure(
                "fire input -> last release write, p50 / p99 (12 devices, 2 TCP buses)",
                rf"last release write \(\d+ trials\): p50 {NUM} ms, p99 {NUM} ms",
                "{0} / {1} ms",
                "p99 <= 250 ms",
                lambda v: v[1] <= 250,
            ),
            Figure(
                "idle CPU of that site (poll 0.2 s)",
                rf"idle CPU over \d+ s: {NUM}%",
                "{0}% of a core",
                "<= 1%",
                lambda v: v[0] <= 1,
            ),
            Figure(
                "card -> barrier OPEN write, p50 / p99 (total)",
                rf"barrier OPEN write \(\d+\): p50 {NUM} ms, p99 {NUM} ms",
                "{0} / {1} ms",
                "p99 <= 5 ms",
                lambda v: v[1] <= 5,
            ),
        ],
    ),
    Bench(
        "camera",
        "bench_camera.py",
        [],
        ["--frames", "60", "--set", "100", "--n", "20", "--cpu-s", "3"],
        [
            Figure(
                "camera: frames/s decoded, 640x480, one core, zxing-cpp (with a code)",
                rf"zxing\s+{NUM} frames/s with a code",
                "{0} fps",
                ">= 30 fps",
                lambda v: v[0] >= 30,
            ),
            Figure(
                "camera: mild blur/perspective set decoded, zxing-cpp",
                rf"zxing .*mild set decoded \d+/\d+ = {NUM}%",
                "{0}%",
                ">= 99%",
                lambda v: v[0] >= 99,
            ),
            Figure(
                "camera: CPU of `edge run` at 10 fps, a code in view",
                rf"a code in view\s+{NUM}% of a core",
                "{0}% of a core",
                "<= 15%",
                lambda v: v[0] <= 15,
            ),
            Figure(
                "camera: first frame -> relay write, p50 / p99",
                rf"first frame sent -> relay write\s+p50\s+{NUM} ms\s+p99\s+{NUM} ms",
                "{0} / {1} ms",
                "p99 <= 100 ms",
                lambda v: v[1] <= 100,
            ),
            Figure(
                "camera: RSS of `edge run` with a camera reader",
                rf"camera reader: {NUM} MB",
                "{0} MB",
                "<= 120 MB",
                lambda v: v[0] <= 120,
            ),
        ],
    ),
    Bench(
        "lpr",
        "bench_lpr.py",
        [],
        ["--n", "200", "--entries", "10000"],
        [
            Figure(
                "plate push -> relay write, p50 / p99",
                rf"push -> relay write\s+p50\s+{NUM} ms\s+p99\s+{NUM} ms",
                "{0} / {1} ms",
                "p99 <= 10 ms",
                lambda v: v[1] <= 10,
            ),
        ],
    ),
    Bench(
        "dead_unit",
        "bench_dead_unit.py",
        [],
        ["--after", "10"],
        [
            Figure(
                "healthy door beside a dying unit, TCP, first dead window: p99/baseline, max",
                rf"(?s)modbus tcp.*?dead \+0-\d+ s\s+n\s+\d+\s+p50\s+[\d.]+ ms\s+p99\s+[\d.]+ ms\s+max\s+{NUM} ms"
                rf"\s+p99/baseline\s+{NUM}x",
                "{1}x, max {0} ms",
                "<= 2x",
                lambda v: v[1] <= 2,
            ),
            Figure(
                "same, RTU over a pty, first dead window: p99/baseline, max",
                rf"(?s)modbus rtu.*?dead \+0-\d+ s\s+n\s+\d+\s+p50\s+[\d.]+ ms\s+p99\s+[\d.]+ ms\s+max\s+{NUM} ms"
                rf"\s+p99/baseline\s+{NUM}x",
                "{1}x, max {0} ms",
                "<= 2x",
                lambda v: v[1] <= 2,
            ),
        ],
    ),
    Bench(
        "noise",
        "bench_noise.py",
        [],
        ["--seconds", "3"],
        [
            Figure(
                "scanner noise, 10k garbage lines/s: real grants kept",
                rf"real events kept: {NUM} / {NUM}",
                "{0} / {1}",
                "all",
                lambda v: v[0] == v[1],
            ),
        ],
    ),
    Bench(
        "flood",
        "bench_flood.py",
        [],
        ["--seconds", "3"],
        [
            Figure(
                "card flood, 10k valid lines/s: RSS before / peak",
                rf"RSS: before {NUM} MB, peak {NUM} MB",
                "{0} / {1} MB",
            ),
            Figure("relay on-writes for the flood's grants", rf"relay on-writes: {NUM}", "{0}"),
        ],
    ),
]
