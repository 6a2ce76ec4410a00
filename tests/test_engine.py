"""The decision engine with plain values: no I/O, no clock, no hardware."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from edge.engine import Clock, DeviceContext, decide_entry, decide_token, in_windows
from edge.model import Entry, Presentation, Window
from edge.tokens import TokenClaims, TokenDenied

SH = ZoneInfo("Asia/Shanghai")
NY = ZoneInfo("America/New_York")
DOOR = DeviceContext("north-gate", "north-gate")
CARD = Presentation("card", "04A1B2C3", "nfc", "card-north")


def at(tz: ZoneInfo, *args: int) -> float:
    return datetime(*args, tzinfo=tz).timestamp()


def entry(**kw: object) -> Entry:
    base: dict[str, object] = {
        "kind": "card",
        "value": "04A1B2C3",
        "subject": "resident:1",
        "zones": ("north-gate",),
    }
    base.update(kw)
    return Entry(**base)  # type: ignore[arg-type]


def clock(ts: float, tz: ZoneInfo = SH, synced: bool = True, require: bool = True) -> Clock:
    return Clock(ts, tz, synced, require)


# 2026-11-27 is a Friday (ISO 5), 2026-11-28 Saturday, 2026-11-30 Monday.
NIGHT = Window(days=(5,), start_min=22 * 60, end_min=6 * 60)  # Friday 22:00 -> Saturday 06:00


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        ((2026, 11, 27, 21, 59), False),
        ((2026, 11, 27, 22, 0), True),
        ((2026, 11, 27, 23, 59), True),
        ((2026, 11, 28, 0, 0), True),  # past midnight: still Friday's window
        ((2026, 11, 28, 5, 59), True),
        ((2026, 11, 28, 6, 0), False),  # end is exclusive
        ((2026, 11, 28, 22, 30), False),  # Saturday night is not listed
        ((2026, 11, 27, 2, 0), False),  # Friday early morning belongs to Thursday's (absent) window
    ],
)
def test_overnight_window(local: tuple[int, ...], expected: bool) -> None:
    assert in_windows((NIGHT,), datetime(*local, tzinfo=SH)) is expected


def test_sunday_night_window_wraps_into_monday() -> None:
    sun = Window(days=(7,), start_min=23 * 60, end_min=60)
    assert in_windows((sun,), datetime(2026, 11, 30, 0, 30, tzinfo=SH))  # Monday 00:30
    assert not in_windows((sun,), datetime(2026, 11, 30, 1, 0, tzinfo=SH))


def test_window_to_end_of_day() -> None:
    late = Window(days=(1,), start_min=18 * 60, end_min=24 * 60)
    assert in_windows((late,), datetime(2026, 11, 30, 23, 59, tzinfo=SH))
    assert not in_windows((late,), datetime(2026, 12, 1, 0, 0, tzinfo=SH))


def test_windows_are_judged_in_the_site_time_zone() -> None:
    day = Window(days=(1, 2, 3, 4, 5), start_min=7 * 60, end_min=22 * 60)
    e = entry(windows=(day,))
    ts = at(SH, 2026, 11, 30, 8, 0)  # Monday 08:00 in Shanghai = Sunday 19:00 in New York
    assert decide_entry(CARD, e, DOOR, clock(ts, SH), "****B2C3").reason == "ok"
    assert decide_entry(CARD, e, DOOR, clock(ts, NY), "****B2C3").reason == "outside_schedule"


def test_window_across_a_dst_change() -> None:
    # New York leaves DST on 2026-11-01 at 02:00; 01:30 happens twice, both inside a 01:00-03:00 window.
    w = Window(days=(7,), start_min=60, end_min=180)
    first = datetime(2026, 11, 1, 1, 30, tzinfo=NY, fold=0).timestamp()
    second = datetime(2026, 11, 1, 1, 30, tzinfo=NY, fold=1).timestamp()
    assert second - first == 3600
    for ts in (first, second):
        assert decide_entry(CARD, entry(windows=(w,)), DOOR, clock(ts, NY), "x").granted


def test_entry_reasons_in_order() -> None:
    now = at(SH, 2026, 11, 30, 12, 0)
    assert decide_entry(CARD, None, DOOR, clock(now), "m").reason == "unknown_credential"
    assert decide_entry(CARD, entry(blocked=True), DOOR, clock(now), "m").reason == "blocked"
    assert (
        decide_entry(CARD, entry(valid_from=int(now) + 10), DOOR, clock(now), "m").reason == "not_yet_valid"
    )
    assert decide_entry(CARD, entry(valid_until=int(now) - 10), DOOR, clock(now), "m").reason == "expired"
    assert decide_entry(CARD, entry(zones=("south",)), DOOR, clock(now), "m").reason == "zone_denied"
    granted = decide_entry(CARD, entry(floors=(3, 5)), DOOR, clock(now), "****B2C3")
    assert (granted.result, granted.subject, granted.floors, granted.credential) == (
        "granted",
        "resident:1",
        (3, 5),
        "****B2C3",
    )


def test_entry_zone_wildcard_is_not_special() -> None:
    # mqtt.md defines "*" only for tokens; an entry must name its zones (safe reading).
    assert decide_entry(CARD, entry(zones=("*",)), DOOR, clock(0), "m").reason == "zone_denied"


def test_unsynced_clock_denies_time_bound_entries_only() -> None:
    now = at(SH, 2026, 11, 30, 12, 0)
    bound = entry(valid_until=int(now) + 100)
    assert decide_entry(CARD, bound, DOOR, clock(now, synced=False), "m").reason == "clock_unsynced"
    assert decide_entry(CARD, entry(), DOOR, clock(now, synced=False), "m").granted
    assert decide_entry(CARD, bound, DOOR, clock(now, synced=False, require=False), "m").granted


def test_locked_or_offline_door_denies() -> None:
    assert decide_entry(CARD, entry(), DeviceContext("d", "north-gate", "lock"), clock(0), "m").reason == (
        "device_unavailable"
    )
    offline = DeviceContext("d", "north-gate", online=False)
    assert decide_entry(CARD, entry(), offline, clock(0), "m").reason == "device_unavailable"


def claims(**kw: object) -> TokenClaims:
    base: dict[str, object] = {
        "iss": "c42",
        "sub": "visitor:88",
        "kind": "visitor",
        "jti": "t-1",
        "exp": 2000,
        "nbf": 1000,
        "zones": ("north-gate",),
        "floors": (3,),
        "uses": 2,
    }
    base.update(kw)
    return TokenClaims(**base)  # type: ignore[arg-type]


QR = Presentation("token", "x.y.z", "qr", "qr-north")


def test_token_decisions() -> None:
    d = decide_token(QR, claims(), DOOR, revoked=False, used=1)
    assert (d.result, d.reason, d.subject, d.floors, d.credential) == (
        "granted",
        "ok",
        "visitor:88",
        (3,),
        "t-1",
    )
    assert decide_token(QR, claims(), DOOR, revoked=False, used=2).reason == "uses_exhausted"
    assert decide_token(QR, claims(), DOOR, revoked=True, used=0).reason == "revoked"
    assert decide_token(QR, claims(zones=("south",)), DOOR, revoked=False, used=0).reason == "zone_denied"
    assert decide_token(QR, claims(zones=("*",)), DOOR, revoked=False, used=0).granted
    denied = decide_token(QR, TokenDenied("bad_signature", jti="t-9"), DOOR, revoked=False, used=0)
    assert (denied.result, denied.reason, denied.credential) == ("denied", "bad_signature", "t-9")
    locked = DeviceContext("d", "north-gate", "lock")
    assert decide_token(QR, claims(), locked, revoked=False, used=0).reason == "device_unavailable"


LIFT = DeviceContext("tower-1", "north-gate", floors=(1, 2, 3, 4, 5))


def test_an_elevator_grants_only_the_floors_within_its_car() -> None:
    now = at(SH, 2026, 11, 30, 12, 0)
    d = decide_entry(CARD, entry(floors=(5, 3, 9)), LIFT, clock(now), "m")
    assert (d.result, d.floors) == ("granted", (3, 5))
    for floors in ((9, 10), (), None):  # none in the car, or none at all (absent = none, tokens.md)
        d = decide_entry(CARD, entry(floors=floors), LIFT, clock(now), "m")
        assert (d.result, d.reason, d.floors) == ("denied", "no_floors", None)
    t = decide_token(QR, claims(floors=(7,)), LIFT, revoked=False, used=0)
    assert (t.result, t.reason, t.subject) == ("denied", "no_floors", "visitor:88")
    assert decide_token(QR, claims(floors=(3,)), LIFT, revoked=False, used=0).floors == (3,)
    assert decide_entry(CARD, entry(floors=(9,)), DOOR, clock(now), "m").granted  # a door has no floors


@pytest.mark.parametrize(
    ("passback", "direction", "last", "expected"),
    [
        ("hard", "in", "in", ("denied", "passback", None)),
        ("hard", "in", "out", ("granted", "ok", None)),
        ("hard", "in", None, ("granted", "ok", None)),  # never seen in the group
        ("soft", "in", "in", ("granted", "ok", "passback")),  # through, with an alarm
        ("soft", "out", "in", ("granted", "ok", None)),
        ("none", "in", "in", ("granted", "ok", None)),
    ],
)
def test_barrier_anti_passback(passback: str, direction: str, last: str | None, expected: tuple) -> None:
    gate = DeviceContext("car-in", "north-gate", direction=direction, passback=passback, last_direction=last)
    d = decide_entry(CARD, entry(), gate, clock(0), "m")
    assert (d.result, d.reason, d.alarm) == expected
    t = decide_token(QR, claims(), gate, revoked=False, used=0)
    assert (t.result, t.reason, t.alarm) == expected


def test_passback_is_checked_after_everything_that_denies_first() -> None:
    gate = DeviceContext("car-in", "north-gate", direction="in", passback="hard", last_direction="in")
    assert decide_entry(CARD, entry(zones=("south",)), gate, clock(0), "m").reason == "zone_denied"
    assert decide_entry(CARD, None, gate, clock(0), "m").reason == "unknown_credential"
    offline = DeviceContext("car-in", "north-gate", online=False, direction="in", passback="hard", last_direction="in")
    assert decide_entry(CARD, entry(), offline, clock(0), "m").reason == "device_unavailable"
