"""Mutators for fuzzing: bytes, JSON values and YAML text, all driven by one ``random.Random``.

Shared by tests/test_fuzz.py (hypothesis picks the seed of the Random, so a failure shrinks to one
integer) and scripts/fuzz.py (a plain loop over millions of seeds). Valid inputs are bent a little
more often than they are replaced by noise: a parser's interesting paths sit just beside valid input.
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any

INTERESTING_BYTES = [
    b"\x00", b"\xff", b"\r", b"\n", b"\r\n", b"\t", b" ", b'"', b"\\", b"{", b"}", b"[", b"]", b".",
    b"=", b"-", b"_", b"+", b"/", b":", b",", b"<", b">", b"&", b"\xc3", b"\xe4\xba\xac", b"\xed\xa0\x80",
    b"\xef\xbb\xbf", b"\x7f", b"\x85", b"\xc2\x85", b"%s", b"NaN", b"1e999", b"-0", b"\\u0000", b"\\ud800",
]  # fmt: skip

INTERESTING_VALUES: list[Any] = [
    None, True, False, 0, 1, -1, 255, 256, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1,
    10**400, 0.5, -0.0, 1e308, 1e-308, float("inf"), float("nan"), "", " ", "\x00", "\ud800", "*",
    "京A12345", "04A1B2C3", "north-gate", "lift-1", "c42", "gw-test", "a" * 5000, [], {}, [None], {"": None},
    [[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]], "open", "sync", "elevator_grant", "2026-01-01 08:00:00", "²", "Asia", "rel\x00dir",
]  # fmt: skip


def mutate_bytes(data: bytes, rng: random.Random, others: list[bytes] | None = None) -> bytes:
    """One to a few classic mutations: bit flips, byte sets, inserts, deletes, copies, splices."""
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3, 8))):
        op = rng.randrange(9)
        n = len(buf)
        i = rng.randrange(n + 1)
        if op == 0 and n:
            buf[min(i, n - 1)] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            buf[min(i, n - 1)] = rng.randrange(256)
        elif op == 2:
            buf[i:i] = rng.choice(INTERESTING_BYTES)
        elif op == 3:
            buf[i:i] = rng.randbytes(rng.randrange(1, 16))
        elif op == 4 and n:
            del buf[i : i + rng.randrange(1, 1 + max(1, n // 4))]
        elif op == 5 and n:
            j = rng.randrange(n)
            buf[i:i] = buf[j : j + rng.randrange(1, 64)]
        elif op == 6 and others:
            other = rng.choice(others)
            j = rng.randrange(len(other) + 1)
            buf = buf[:i] + bytearray(other[j:])
        elif op == 7:
            del buf[i:]
        elif op == 8 and n:
            ch = bytes([buf[min(i, n - 1)]])
            buf[i:i] = ch * rng.choice((2, 16, 300, 5000))
    return bytes(buf)


def random_value(rng: random.Random, depth: int = 0) -> Any:
    r = rng.random()
    if r < 0.6 or depth > 2:
        return copy.deepcopy(rng.choice(INTERESTING_VALUES))  # a copy: mutations must not edit the pool
    if r < 0.7:
        return rng.randrange(-(2**70), 2**70)
    if r < 0.8:
        return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(12)))
    if r < 0.9:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {str(random_value(rng, 3)): random_value(rng, depth + 1) for _ in range(rng.randrange(4))}


def _paths(obj: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:20]):
            out += _paths(v, (*path, i))
    return out


def mutate_json(obj: Any, rng: random.Random) -> Any:
    """A deep copy of ``obj`` with one to three values replaced, deleted, added or duplicated."""
    obj = json.loads(json.dumps(obj))
    for _ in range(rng.choice((1, 1, 2, 3))):
        paths = _paths(obj)
        path = rng.choice(paths)
        if not path:
            if rng.random() < 0.1:
                obj = random_value(rng)
            continue
        parent = obj
        for p in path[:-1]:
            parent = parent[p]
        key = path[-1]
        op = rng.randrange(4)
        if op == 0:
            parent[key] = random_value(rng)
        elif op == 1:
            del parent[key]
        elif op == 2 and isinstance(parent, dict):
            parent[rng.choice(["extra", "", "op", "type", "entry", key + "x"])] = random_value(rng)
        elif op == 2 and isinstance(parent, list):
            parent.insert(key, random_value(rng))
        else:  # the same value where another one was: right shape, wrong place
            other = rng.choice(paths)
            src = obj
            for p in other:
                src = src[p]
            if src is not parent:
                parent[key] = json.loads(json.dumps(src))
    return obj


def dump_json(obj: Any, rng: random.Random) -> bytes:
    """JSON bytes of ``obj``, sometimes ASCII-escaped, sometimes not (lone surrogates then escaped)."""
    try:
        if rng.random() < 0.5:
            return json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        pass
    return json.dumps(obj).encode()


YAML_SNIPPETS = [
    "&a ", "*a", "<<: *a", "!!python/object:os.system ", "!!binary ", "!!set ", "{", "}", "[", "]", ": ",
    "- ", "\t", "? ", "|\n", ">-\n", "~", "null", "yes", "0x1F", "1e999", "99999999999999999999999",
    "'", '"', "#", "%YAML 1.1\n", "---\n", "...\n", "\ufeff", "\x85", "\u2028", "\x00", "@", "`",
    "2026-01-01", "2026-13-45", ".inf", "-.nan", "\\", "&a [*a, *a, *a, *a]", "{a: 1, a: 2}",
]  # fmt: skip


def mutate_yaml(text: str, rng: random.Random) -> str:
    """Line and token level edits that keep most of a config valid YAML, so validation runs too."""
    lines = text.split("\n")
    for _ in range(rng.choice((1, 1, 2, 4))):
        n = len(lines)
        i = rng.randrange(n) if n else 0
        op = rng.randrange(8)
        if not lines:
            lines = [rng.choice(YAML_SNIPPETS)]
        elif op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(rng.randrange(n + 1), lines[rng.randrange(n)])
        elif op == 2:
            j = rng.randrange(n)
            lines[i], lines[j] = lines[j], lines[i]
        elif op == 3:
            lines[i] = " " * rng.choice((1, 2, 3, 4, 8)) + lines[i]
        elif op == 4:
            line = lines[i]
            k = rng.randrange(len(line) + 1)
            lines[i] = line[:k] + rng.choice(YAML_SNIPPETS) + line[k:]
        elif op == 5:  # replace a value after the colon
            key, sep, _ = lines[i].partition(":")
            if sep:
                lines[i] = f"{key}: {json.dumps(random_value(rng))}"
        elif op == 6:
            lines[i] = lines[i].lstrip()
        else:
            k = rng.randrange(len(lines[i]) + 1)
            lines[i] = lines[i][:k]
    return "\n".join(lines)
