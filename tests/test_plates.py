"""Plate normalisation (the table) and tolerant matching against a real whitelist store on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.normalize import BadCredential, normalize_plate
from edge.plates import match_plate, variants
from edge.store import WhitelistStore, entry_from_wire

TABLE = [
    ("京A12345", "京A12345"),  # 7 characters
    ("京AD12345", "京AD12345"),  # 8 characters: new-energy
    ("京a12345", "京A12345"),  # upper case
    ("京Ａ１２３４５", "京A12345"),  # full-width to half-width
    ("粤ｂｄ１２３４５", "粤BD12345"),
    ("京A 12345", "京A12345"),  # space
    ("京A\u300012345", "京A12345"),  # ideographic space
    ("京A·12345", "京A12345"),  # middle dot
    ("京A・12345", "京A12345"),  # katakana middle dot
    ("京A.12345", "京A12345"),  # dot
    ("京A．12345", "京A12345"),  # full-width dot
    ("京A-12345", "京A12345"),  # dash
    ("京A－12345", "京A12345"),  # full-width dash
    ("京A–12345", "京A12345"),  # en dash
    ("京A—12345", "京A12345"),  # em dash
    ("  沪 C·D-1 2.3 4 5 ", "沪CD12345"),  # several at once, edges
    ("京A1234警", "京A1234警"),  # police plates keep their last character
    ("粤Z1234港", "粤Z1234港"),
    ("使014578", "使014578"),
]


@pytest.mark.parametrize(("raw", "want"), TABLE)
def test_normalisation_table(raw: str, want: str) -> None:
    assert normalize_plate(raw) == want


@pytest.mark.parametrize("bad", ["", "A", " - · ", "京A/12345", "京A_12345", "京A12345" * 2])
def test_what_is_no_plate(bad: str) -> None:
    with pytest.raises(BadCredential):
        normalize_plate(bad)


def test_variants_are_single_substitutions_within_the_groups() -> None:
    assert variants("京A0B") == sorted({"京AQB", "京ADB", "京A08"})
    assert variants("京AK") == []  # K confuses with nothing; the province is never substituted
    for v in variants("京AD12345"):
        assert sum(a != b for a, b in zip(v, "京AD12345", strict=True)) == 1


@pytest.fixture
def store(tmp_path: Path) -> WhitelistStore:
    s = WhitelistStore(tmp_path / "whitelist.db")
    plates = ["京A12345", "京B00001", "京B0D001", "沪A8B8B8"]
    s.import_entries(
        [
            entry_from_wire({"kind": "plate", "value": p, "subject": f"resident:{i}", "zones": ["z"]})
            for i, p in enumerate(plates)
        ]
    )
    yield s  # type: ignore[misc]
    s.close()


def test_tolerant_matching_against_the_store(store: WhitelistStore) -> None:
    def lookup(v: str) -> object | None:
        return store.lookup("plate", v)

    m = match_plate("京AI2345", lookup, tolerant=True)
    assert (m.kind, m.value) == ("tolerant", "京A12345")
    m = match_plate("京AI2345", lookup, tolerant=False)
    assert (m.kind, m.value) == ("none", "京AI2345")
    m = match_plate("京B0Q001", lookup, tolerant=True)  # Q -> 0 and Q -> D: two whitelist plates
    assert (m.kind, m.value, sorted(m.candidates)) == ("ambiguous", "京B0Q001", ["京B00001", "京B0D001"])
    m = match_plate("京B00001", lookup, tolerant=True)  # listed itself: exact wins over its variant 京B0D001
    assert (m.kind, m.value) == ("exact", "京B00001")
    assert match_plate("京AI2Z45", lookup, tolerant=True).kind == "none"  # two substitutions away
    assert match_plate("沪A8B8BB", lookup, tolerant=True).value == "沪A8B8B8"
    assert match_plate("苏A12345", lookup, tolerant=True).kind == "none"  # province is never guessed
