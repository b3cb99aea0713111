"""Send windows (design §4.2): when, in the customer's local time, SMS and calls may go out.

A window is `HH:MM-HH:MM`, its start included and its end excluded (a start after the end crosses
midnight), or `always`. Local time is the customer's: the time zone of their number (`zone_of`). All the
window arithmetic is here; planning and the dispatchers only ask `next_opening` (worker/cycles/).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import NumberParseException
from phonenumbers.timezone import time_zones_for_geographical_number

ALWAYS = "always"
#: How a window is written, for error messages.
HOW = "HH:MM-HH:MM (start included, end excluded, e.g. 08:00-20:00 or 21:00-07:00) or always"
#: The zone of a number phonenumbers knows no zone for (an unassigned prefix): none is better than another.
FALLBACK_ZONE = ZoneInfo("UTC")

_WINDOW = re.compile(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)")
_UNKNOWN_ZONE = "Etc/Unknown"


class BadWindow(ValueError):
    """Text that is not a send window; the message says how to write one."""


@dataclass(frozen=True)
class Window:
    """`start` included, `end` excluded, in local wall-clock time; both None: `always`."""

    start: time | None = None
    end: time | None = None

    @property
    def always(self) -> bool:
        return self.start is None

    def __str__(self) -> str:
        if self.start is None or self.end is None:
            return ALWAYS
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def parse_window(text: str) -> Window:
    """`08:00-20:00` or `always` (any case, surrounding blanks ignored); `BadWindow` otherwise. A window whose
    start is its end is refused: it could mean never or always."""
    value = (text or "").strip()
    if value.lower() == ALWAYS:
        return Window()
    match = _WINDOW.fullmatch(value)
    if match is None:
        raise BadWindow(f"not a send window {value!r}; write {HOW}")
    start_h, start_m, end_h, end_m = (int(part) for part in match.groups())
    start, end = time(start_h, start_m), time(end_h, end_m)
    if start == end:
        raise BadWindow(f"not a send window {value!r}: it starts where it ends; write {HOW}")
    return Window(start, end)


def check_window(text: str) -> str:
    """The window as it is stored (`08:00-20:00`, `always`); `BadWindow` if it is not one."""
    return str(parse_window(text))


def is_open(window: Window, local: time) -> bool:
    """Whether a local wall-clock time is inside the window."""
    if window.start is None or window.end is None:
        return True
    local = local.replace(tzinfo=None)
    if window.start < window.end:
        return window.start <= local < window.end
    return local >= window.start or local < window.end  # across midnight


def open_at(window: Window, zone: ZoneInfo, at: datetime) -> bool:
    return is_open(window, at.astimezone(zone).time())


def next_opening(window: Window, zone: ZoneInfo, at: datetime) -> datetime:
    """`at` when the window is open then in `zone`; else the first instant after it when it opens (UTC).

    An opening is an instant the local clock reaches the start: twice on a day the autumn change repeats it,
    and at the jump itself on a day the spring change skips it (a window wholly inside the skipped hour does
    not open that day)."""
    if open_at(window, zone, at):
        return at
    assert window.start is not None  # `always` is always open
    today = at.astimezone(zone).date()
    openings = [
        instant
        for days in range(3)
        for instant in _instants_of(zone, today + timedelta(days=days), window.start)
        if instant > at and open_at(window, zone, instant)
    ]
    # Three days always hold a start that opens (a skipped one is only ever one day's); the fallback is a guard.
    return min(openings, default=at + timedelta(days=1))


#: Steps `next_common_opening` takes before it calls windows disjoint: each step moves to one window's
#: opening, and two windows that meet do so within two days, a handful of steps.
_MEET_STEPS = 16


def next_common_opening(limits: Sequence[tuple[Window, ZoneInfo]], at: datetime) -> datetime | None:
    """`at` when every window is open in its zone; else the first instant after it when they all are (their
    intersection: the stricter wins). None when they never are all open at once."""
    due = at
    for _step in range(_MEET_STEPS):
        later = max((next_opening(window, zone, due) for window, zone in limits), default=due)
        if later == due:
            return due
        due = later  # nothing between: one window was closed all along
    return None


def next_closing(limits: Sequence[tuple[Window, ZoneInfo]], at: datetime) -> datetime | None:
    """The first instant after `at` when one of the windows closes (its end); None when all are `always`."""
    ends = [
        instant
        for window, zone in limits
        if window.end is not None
        for days in range(3)
        for instant in _instants_of(zone, at.astimezone(zone).date() + timedelta(days=days), window.end)
        if instant > at
    ]
    return min(ends, default=None)


def _instants_of(zone: ZoneInfo, day: date, clock: time) -> list[datetime]:
    """The UTC instants at which the local clock of `zone` reaches `clock` on `day`."""
    naive = datetime.combine(day, clock)
    first = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == naive:
        return sorted({first, second})  # two when the autumn change repeats the hour, else the same one twice
    # Skipped by the spring change: fold=1 reads it with the offset before the jump, fold=0 with the one after,
    # so the jump lies between them; the clock reaches `clock` at the jump.
    low, high = sorted((first, second))
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).replace(tzinfo=None) >= naive:
            high = middle
        else:
            low = middle
    return [high.replace(microsecond=0)]


@functools.lru_cache(maxsize=65_536)
def zone_of(phone: str) -> ZoneInfo:
    """The customer's time zone, from their number (E.164).

    phonenumbers maps number prefixes to zones (`time_zones_for_geographical_number`: an area code where the
    country has several zones, else the country's). Where it still names several (a country with several
    zones and a number that does not say which, e.g. +44 7...: London, Guernsey, Isle of Man), the first it
    lists is taken; a number it knows no zone for is read in UTC (FALLBACK_ZONE)."""
    try:
        number = phonenumbers.parse(phone, None)
    except NumberParseException:
        return FALLBACK_ZONE
    for name in time_zones_for_geographical_number(number):
        if name == _UNKNOWN_ZONE:
            continue
        try:
            return ZoneInfo(name)
        except ZoneInfoNotFoundError:  # phonenumbers newer than the zone database
            continue
    return FALLBACK_ZONE
