"""Integer ranges of everything the cloud sends (token and command claims, whitelist messages).

Checked where a message is parsed and again by the store itself (``int_in``): a number outside them is
malformed, never stored or used. Kept apart from tokens.py because the store, its codec and the cloud
link need them too, and none of those should depend on the JWS code for a few constants.
"""

from __future__ import annotations

INT64_MAX = 2**63 - 1  # SQLite INTEGER: binding a bigger int raises OverflowError (versions, parts)
UNIX_S_MAX = 253_402_300_799  # 9999-12-31T23:59:59Z, the last second datetime shows; times are 0..this
FLOOR_MIN, FLOOR_MAX = -99, 999  # elevator floors: far past any building, inside any controller register
SECONDS_MAX = 86_400  # a command's `seconds` (elevator grant): at most a day


def int_in(v: object, lo: int, hi: int) -> bool:
    """``v`` is an int with lo <= v <= hi: not a bool (an int subclass), not a float such as 3.0."""
    return type(v) is int and lo <= v <= hi
