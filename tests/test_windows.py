"""Send windows (design §4.2): parsing, open or closed, the next opening, and the customer's time zone."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from shared import windows
from shared.windows import BadWindow, Window, is_open, next_opening, parse_window, zone_of

NAIROBI = ZoneInfo("Africa/Nairobi")  # UTC+3, no DST
NEW_YORK = ZoneInfo("America/New_York")  # DST: 2026-03-08 02:00 -> 03:00, 2026-11-01 02:00 -> 01:00


def at_local(zone: ZoneInfo, *fields: int, fold: int = 0) -> datetime:
    return datetime(*fields, tzinfo=zone, fold=fold).astimezone(UTC)


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("08:00-20:00", time(8), time(20)),
        ("22:30-06:15", time(22, 30), time(6, 15)),
        (" 00:00-23:59 ", time(0), time(23, 59)),
    ],
)
def test_a_window_is_two_times(text: str, start: time, end: time) -> None:
    assert parse_window(text) == Window(start, end)


@pytest.mark.parametrize("text", ["always", "ALWAYS", " always "])
def test_always_is_a_window_that_never_closes(text: str) -> None:
    window = parse_window(text)
    assert window.always and str(window) == "always"
    assert is_open(window, time(3, 0))


@pytest.mark.parametrize(
    "text", ["", "8-20", "08:00", "08:00-24:00", "25:00-26:00", "08:60-09:00", "08:00-08:00", "08:00 - 20:00x", "never"]
)
def test_anything_else_is_refused_with_how_to_write_one(text: str) -> None:
    with pytest.raises(BadWindow, match=r"HH:MM-HH:MM.*always"):
        parse_window(text)


def test_the_start_is_in_and_the_end_is_out() -> None:
    window = parse_window("08:00-20:00")
    assert not is_open(window, time(7, 59, 59))
    assert is_open(window, time(8, 0))
    assert is_open(window, time(19, 59, 59))
    assert not is_open(window, time(20, 0))


def test_a_window_may_cross_midnight() -> None:
    window = parse_window("22:00-06:00")
    assert is_open(window, time(22, 0))
    assert is_open(window, time(23, 59))
    assert is_open(window, time(0, 0))
    assert is_open(window, time(5, 59))
    assert not is_open(window, time(6, 0))
    assert not is_open(window, time(12, 0))
    assert not is_open(window, time(21, 59))


def test_the_next_opening_is_now_while_open() -> None:
    now = at_local(NAIROBI, 2026, 12, 6, 9, 30)
    assert next_opening(parse_window("08:00-20:00"), NAIROBI, now) == now
    assert next_opening(parse_window("always"), NAIROBI, now) == now


def test_the_next_opening_is_the_start_in_the_customers_zone() -> None:
    window = parse_window("08:00-20:00")
    evening = at_local(NAIROBI, 2026, 12, 6, 20, 0)  # the end: closed
    assert next_opening(window, NAIROBI, evening) == at_local(NAIROBI, 2026, 12, 7, 8, 0)
    early = at_local(NAIROBI, 2026, 12, 6, 6, 0)
    assert next_opening(window, NAIROBI, early) == at_local(NAIROBI, 2026, 12, 6, 8, 0)
    assert next_opening(window, NAIROBI, early) == datetime(2026, 12, 6, 5, 0, tzinfo=UTC)


def test_the_next_opening_of_a_window_across_midnight() -> None:
    window = parse_window("22:00-06:00")
    assert next_opening(window, NAIROBI, at_local(NAIROBI, 2026, 12, 6, 6, 0)) == at_local(NAIROBI, 2026, 12, 6, 22, 0)
    inside = at_local(NAIROBI, 2026, 12, 7, 1, 0)
    assert next_opening(window, NAIROBI, inside) == inside


def test_dst_the_opening_follows_the_local_clock_not_utc() -> None:
    """08:00 New York is 13:00 UTC in winter and 12:00 UTC in summer: the day after the spring change, the
    window opens an hour earlier in UTC."""
    window = parse_window("08:00-20:00")
    before = next_opening(window, NEW_YORK, at_local(NEW_YORK, 2026, 3, 7, 21, 0))
    after = next_opening(window, NEW_YORK, at_local(NEW_YORK, 2026, 3, 8, 21, 0))
    assert before == datetime(2026, 3, 8, 12, 0, tzinfo=UTC)  # 08:00 EDT: the change was at 02:00 that night
    assert after == datetime(2026, 3, 9, 12, 0, tzinfo=UTC)
    assert next_opening(window, NEW_YORK, at_local(NEW_YORK, 2026, 3, 6, 21, 0)) == datetime(
        2026, 3, 7, 13, 0, tzinfo=UTC
    )


def test_dst_a_start_the_spring_change_skips_opens_when_the_clock_jumps_past_it() -> None:
    """02:30 does not exist on 2026-03-08 in New York (02:00 EST is 03:00 EDT): the window 02:30-05:00 opens
    at the jump, 07:00 UTC, with the local clock at 03:00."""
    window = parse_window("02:30-05:00")
    opening = next_opening(window, NEW_YORK, at_local(NEW_YORK, 2026, 3, 8, 1, 0))
    assert opening == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
    assert is_open(window, opening.astimezone(NEW_YORK).time())


def test_dst_a_window_wholly_inside_the_skipped_hour_waits_a_day() -> None:
    window = parse_window("02:00-03:00")
    opening = next_opening(window, NEW_YORK, at_local(NEW_YORK, 2026, 3, 8, 1, 0))
    assert opening == at_local(NEW_YORK, 2026, 3, 9, 2, 0)


def test_dst_the_repeated_hour_of_autumn_opens_twice() -> None:
    """01:00-02:00 happens twice on 2026-11-01 in New York (EDT, then EST): closed between the two."""
    window = parse_window("01:30-01:45")
    first = at_local(NEW_YORK, 2026, 11, 1, 1, 30, fold=0)
    assert next_opening(window, NEW_YORK, first - timedelta(minutes=1)) == first
    between = at_local(NEW_YORK, 2026, 11, 1, 1, 50, fold=0)
    assert next_opening(window, NEW_YORK, between) == at_local(NEW_YORK, 2026, 11, 1, 1, 30, fold=1)
    assert next_opening(window, NEW_YORK, between) - first == timedelta(hours=1)


@pytest.mark.parametrize(
    ("phone", "zone"),
    [
        ("+254711000001", "Africa/Nairobi"),
        ("+12125550100", "America/New_York"),
        ("+14155550100", "America/Los_Angeles"),
        ("+79161234567", "Europe/Moscow"),  # a mobile: its country's main zone, not the first of eleven
        ("+61412345678", "Australia/Sydney"),
        ("+2348031234567", "Africa/Lagos"),
    ],
)
def test_the_customers_zone_comes_from_the_number(phone: str, zone: str) -> None:
    assert zone_of(phone) == ZoneInfo(zone)


@pytest.mark.parametrize("phone", ["+999123", "not a number", ""])
def test_a_number_without_a_known_zone_is_read_in_utc(phone: str) -> None:
    assert zone_of(phone) == windows.FALLBACK_ZONE == ZoneInfo("UTC")
