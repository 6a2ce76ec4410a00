"""Tolerant plate matching: one commonly confused character may be misread, if only one plate fits.

Plate cameras misread a few characters at night, in rain or on a dirty plate: 0/D/Q, 8/B, 1/I, 2/Z,
5/S. With ``tolerant`` on (off by default, per reader), a read that is not on the whitelist is tried
with every single substitution within those groups; it is accepted only when exactly one whitelist
plate is among them, because two candidates mean the gate cannot know whose car it is. The province
character is never substituted (it is no Latin letter or digit). Pure apart from ``lookup``, which the
caller passes (the store's ``lookup("plate", value)``, microseconds each: at most 16 probes for an
8-character plate).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

CONFUSABLE: tuple[str, ...] = ("0DQ", "8B", "1I", "2Z", "5S")
_ALTERNATIVES: dict[str, str] = {c: g.replace(c, "") for g in CONFUSABLE for c in g}

MatchKind = Literal["exact", "tolerant", "ambiguous", "none"]


@dataclass(frozen=True, slots=True)
class PlateMatch:
    """``value``: what to present (the whitelist spelling after a tolerant match, else the read).
    ``candidates``: the whitelist plates one substitution away, when the read itself is not listed."""

    value: str
    kind: MatchKind
    candidates: tuple[str, ...] = ()


def variants(plate: str) -> list[str]:
    """Every spelling one confusable substitution away from ``plate`` (normalised), sorted."""
    out: set[str] = set()
    for i, c in enumerate(plate):
        for alt in _ALTERNATIVES.get(c, ""):
            out.add(plate[:i] + alt + plate[i + 1 :])
    return sorted(out)


def match_plate(plate: str, lookup: Callable[[str], object | None], *, tolerant: bool) -> PlateMatch:
    """Find the whitelist plate for a normalised read. An exact entry always wins; otherwise, with
    ``tolerant``, a unique single-substitution variant on the list is taken. Zero or several candidates
    leave the read as it is (the engine then answers `unknown_credential`)."""
    if lookup(plate) is not None:
        return PlateMatch(plate, "exact")
    if not tolerant:
        return PlateMatch(plate, "none")
    found = tuple(v for v in variants(plate) if lookup(v) is not None)
    if len(found) == 1:
        return PlateMatch(found[0], "tolerant", found)
    return PlateMatch(plate, "ambiguous" if found else "none", found)
