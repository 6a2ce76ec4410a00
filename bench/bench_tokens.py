"""Time verify_token (steps 1-7 of tokens.md) on a valid token: the per-scan cost on the hot path.

Run: .venv/bin/python bench/bench_tokens.py [runs]
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.tokens import TokenClaims, TrustPolicy, generate_keypair, mint_token, verify_token


def main(runs: int = 10_000) -> None:
    key, pub = generate_keypair()
    policy = TrustPolicy.build("c42", {"k1": pub, "k2": generate_keypair()[1]}, 5, {})
    now = 1_795_000_000
    token = mint_token(
        key,
        "k1",
        {
            "iss": "c42",
            "sub": "visitor:88",
            "kind": "visitor",
            "jti": "t-b4ae72c65fed",
            "nbf": now - 3600,
            "exp": now + 72000,
            "zones": ["north-gate", "bldg-3"],
            "uses": 2,
            "floors": [3],
        },
    )
    assert isinstance(verify_token(token, policy, now), TokenClaims)
    for _ in range(200):  # warm-up
        verify_token(token, policy, now)
    samples = []
    clock = time.perf_counter_ns
    for _ in range(runs):
        t0 = clock()
        verify_token(token, policy, now)
        samples.append(clock() - t0)
    samples.sort()
    us = [s / 1000 for s in samples]
    q = statistics.quantiles(us, n=100)
    print(
        f"verify_token, valid {len(token)}-byte token, {runs} runs on {platform.machine()} Python {platform.python_version()}"
    )
    print(f"p50 {q[49]:.1f} µs  p99 {q[98]:.1f} µs  max {us[-1]:.1f} µs")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
