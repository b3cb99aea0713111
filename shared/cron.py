"""Cron expressions as schedules use them: five fields read by croniter, checked once before they are stored.

croniter accepts expressions that never fire (`0 0 30 2 *`, 30 February) and fails only when asked for a
date, so `check` asks for one. It also refuses an expression that fires more often than the operator allows
(SCHEDULE_MIN_INTERVAL_SECONDS): the shortest gap between two consecutive firings anywhere in the calendar.

Gaps are counted on the schedule's own wall clock (local time in its zone, as cron reads it); a daylight-saving
change moves one firing by the change, which is the tick's business, not this check's.

When a firing happens (`latest_firing`, `next_firing`): cron names wall-clock times, and a daylight-saving change
makes some wall times happen twice and others never. The rule, one place for the tick and `next_run` alike:
- a wall time that happens twice (the clock goes back) fires once, at its first occurrence (Europe/London's
  01:30 on the last Sunday of October: 01:30 BST, 00:30 UTC);
- a wall time that does not happen (the clock goes forward) is read with the UTC offset in force before the
  change, so it fires the gap's length later on the wall clock, at the same real time as the day before
  (London's 01:30 on the last Sunday of March: 02:30 BST, 01:30 UTC). Both are how RFC 5545 reads local times,
  and what Python's `fold=0` means;
- a schedule that fires in every hour of the day (hour field `*`) fires in both passes of a repeated hour, as
  cron does for such jobs: every hour of real time keeps its run. Read forward, a skipped hour's firing lands on
  the same instant as the next hour's, and the period key (its UTC time) makes the two one run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

from croniter import CroniterBadTypeRangeError, CroniterError, croniter

from shared.cycles import CycleError
from shared.text_rules import too_long

#: The `schedules.cron` column's size.
MAX_LENGTH = 100
#: croniter's failures on an expression it accepted as valid (e.g. `CroniterBadDateError`: no date matches).
CRON_ERRORS = (CroniterError, CroniterBadTypeRangeError, ValueError, OverflowError)

DAY_SECONDS = 86_400
#: Which days fire (day of month, month, weekday, L, W and #) repeats with the calendar: 28 years hold every
#: leap year and weekday alignment of a century. The walk over firing days stops there, or after this many
#: steps (under 0.1 s; 1,500 firing days span at least four years, a whole leap-year cycle).
DAY_WALK_YEARS = 28
DAY_WALK_STEPS = 1500
#: Past this many wall times read without finding a firing, `latest_firing` and `next_firing` give up (a firing
#: is a wall time croniter named, so only a zone changing its offset by days could need more).
FIRING_WALK_STEPS = 10_000


def check(expression: str, min_interval: timedelta, now: datetime) -> str:
    """The expression with its spacing normalised, if a schedule may use it; `CycleError` naming the problem."""
    expression = " ".join(expression.split())
    if problem := too_long(expression, MAX_LENGTH):
        raise CycleError(f"cron {problem}")
    if len(expression.split()) != 5 or not croniter.is_valid(expression):
        raise CycleError(f"bad cron expression {expression!r}; use five fields, e.g. '0 9 * * 1' (Mondays 09:00)")
    try:
        croniter(expression, now.replace(tzinfo=None)).get_next(datetime)
        gap = gap_shorter_than(expression, min_interval, now.replace(tzinfo=None))
    except CRON_ERRORS:
        raise CycleError(f"cron {expression!r} never fires (no date matches every field)") from None
    if gap is not None:
        raise CycleError(
            f"cron {expression!r} fires twice within {duration(gap)}; a schedule may fire at most once every "
            f"{duration(min_interval)} (SCHEDULE_MIN_INTERVAL_SECONDS)"
        )
    return expression


def gap_shorter_than(expression: str, interval: timedelta, start: datetime) -> timedelta | None:
    """A gap between two consecutive firings shorter than `interval`, or None when there is none.

    Every firing day fires at the same times (the minute and hour fields), so the shortest gap is either
    between two of those times within a day, or from the last time of one firing day to the first of the
    next, which only days fewer than (interval + that span) apart can make short enough.
    """
    minutes, hours = croniter(expression).expanded[:2]
    times = sorted(hour * 3600 + minute * 60 for hour in _values(hours, 24) for minute in _values(minutes, 60))
    limit = interval.total_seconds()
    within_day = min((later - earlier for earlier, later in pairwise(times)), default=None)
    if within_day is not None and within_day < limit:
        return timedelta(seconds=within_day)
    span = times[-1] - times[0]
    closest_days = math.ceil((limit + span) / DAY_SECONDS) - 1  # d * DAY_SECONDS - span < limit
    if closest_days < 1:
        return None
    days = _days_apart_at_most(expression, closest_days, start)
    return None if days is None else timedelta(seconds=days * DAY_SECONDS - span)


def _values(field: list[int | str], size: int) -> list[int]:
    return list(range(size)) if field == ["*"] else [int(v) for v in field]


def _days_apart_at_most(expression: str, days: int, start: datetime) -> int | None:
    """Two consecutive firing days at most `days` apart (how far apart), or None within the walk's bounds."""
    day_fields = " ".join(expression.split()[2:])
    walk = croniter(f"0 0 {day_fields}", start.replace(hour=0, minute=0, second=0, microsecond=0))
    previous = walk.get_next(datetime)
    end = previous + timedelta(days=365 * DAY_WALK_YEARS)
    for _ in range(DAY_WALK_STEPS):
        following = walk.get_next(datetime)
        apart = (following - previous).days
        if apart <= days:
            return apart
        if following > end:
            return None
        previous = following
    return None


def duration(span: timedelta) -> str:
    """`timedelta(hours=25)` as `1 day 1 hour`."""
    seconds, parts = int(span.total_seconds()), []
    for unit, size in (("day", DAY_SECONDS), ("hour", 3600), ("minute", 60), ("second", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}{'' if count == 1 else 's'}")
    return " ".join(parts) or "0 seconds"


# -- when firings happen -----------------------------------------------------------------------------------


def latest_firing(expression: str, tz: ZoneInfo, now: datetime) -> datetime:
    """The latest moment at or before `now` that the expression fires in zone `tz`, in UTC (module docstring)."""
    wall_now, shift = _wall_clock(tz, now)
    walk = croniter(expression, wall_now + shift + timedelta(minutes=1))
    return _closest(_firings(expression, tz, walk, backward=True), lambda at: at <= now, max, shift)


def next_firing(expression: str, tz: ZoneInfo, now: datetime) -> datetime:
    """The first moment after `now` that the expression fires in zone `tz`, in UTC (module docstring)."""
    wall_now, shift = _wall_clock(tz, now)
    walk = croniter(expression, wall_now - shift - timedelta(minutes=1))
    return _closest(_firings(expression, tz, walk, backward=False), lambda at: at > now, min, shift)


def _wall_clock(tz: ZoneInfo, now: datetime) -> tuple[datetime, timedelta]:
    """`now` on the zone's wall clock (naive), and how far a change of its UTC offset within a day of `now` moves
    the wall clock against real time (zero on all but the days around a daylight-saving change)."""
    offsets = [(now + days * timedelta(days=1)).astimezone(tz).utcoffset() or timedelta() for days in (-1, 0, 1)]
    return now.astimezone(tz).replace(tzinfo=None), max(offsets) - min(offsets)


def _firings(expression: str, tz: ZoneInfo, walk: croniter, *, backward: bool) -> Iterator[tuple[datetime, datetime]]:
    """(wall time, moment in UTC) of each firing, walking the wall clock one way from where `walk` starts."""
    every_hour = len(set(_values(croniter(expression).expanded[1], 24))) == 24
    for _ in range(FIRING_WALK_STEPS):
        wall = walk.get_prev(datetime) if backward else walk.get_next(datetime)
        for moment in _moments(wall, tz, every_hour):
            yield wall, moment
    raise CroniterError(f"no firing within {FIRING_WALK_STEPS} steps")


def _moments(wall: datetime, tz: ZoneInfo, every_hour: bool) -> list[datetime]:
    """When wall time `wall` happens in `tz`, in UTC, as the module docstring's rule reads it."""
    first, second = wall.replace(tzinfo=tz, fold=0), wall.replace(tzinfo=tz, fold=1)
    if first.utcoffset() == second.utcoffset():  # an ordinary time
        return [first.astimezone(UTC)]
    happens = first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == wall
    if happens and every_hour:  # it happens twice, and the schedule keeps every hour of real time
        return [first.astimezone(UTC), second.astimezone(UTC)]
    return [first.astimezone(UTC)]  # its first occurrence; or, if it never happens, read before the change


def _closest(
    firings: Iterator[tuple[datetime, datetime]],
    wanted: Callable[[datetime], bool],
    best_of: Callable[[datetime, datetime], datetime],
    shift: timedelta,
) -> datetime:
    """The best wanted moment. Near an offset change, wall order and real order differ by up to `shift`, so
    the walk goes on until the wall clock is 2 * shift past the first wanted firing: no later wall time can
    happen on the wrong side of it."""
    best: datetime | None = None
    found_at = datetime.min
    for wall, moment in firings:
        if best is not None and abs(wall - found_at) > 2 * shift:
            return best
        if wanted(moment):
            best, found_at = (moment, wall) if best is None else (best_of(best, moment), found_at)
    raise CroniterError("the walk over firings ended")  # `firings` ends only by raising
