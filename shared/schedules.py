"""Schedules: recurring cycles kept in Postgres, added and removed without restarting anything.

Beat ticks `reach.cycle.tick`; each tick starts, for every enabled schedule, the latest period that is
due. The period's key (`schedule:<id>:<due time>`) is unique on `cycles`, so a second beat, a retried
tick or a restart cannot run the same period twice.

A period that falls due while the schedule's previous cycle has not finished (a cycle to many contacts can
outlast the period) is not started: it gets a cycle row in state `skipped`, with the reason, under the
same unique key, so it is decided once whichever beat ticks, and the operator sees it (`last_skip`).

So does a period whose first tick comes more than SCHEDULE_MISFIRE_SECONDS after its planned time (beat or
the broker was down): it is recorded `missed`, not started late. Only the latest due period is looked at, so
after a long outage the one period due when beat came back is recorded (once: its key), earlier ones not at
all, and the next period runs on time.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared import cron, voice_languages
from shared.cycles import CycleError, check_fallback, check_message, record_skipped, start_cycle
from shared.models import Cycle, CycleState, Fallback, Schedule
from shared.settings import get_settings
from shared.text_rules import too_long

log = logging.getLogger(__name__)

#: The `schedules` columns' sizes: a longer name or zone is refused, not cut (nor a database error).
MAX_NAME, MAX_ZONE = 100, 64
#: A schedule's cycle in one of these states has not finished: a period due meanwhile is skipped.
UNFINISHED = (CycleState.PLANNING, CycleState.DISPATCHING, CycleState.PAUSED)
PERIOD_FORMAT = "%Y-%m-%dT%H:%MZ"
#: How a period recorded because its tick came too late is told from one held by a running cycle.
MISSED = "missed"


class ScheduleExists(CycleError):
    """The name is taken: a conflict with what is stored, not a malformed request."""


def zone(name: str) -> ZoneInfo:
    if problem := too_long(name, MAX_ZONE):
        raise CycleError(f"timezone {problem}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise CycleError(f"unknown time zone {name!r}; use a name such as Africa/Nairobi or UTC") from None


def check_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise CycleError("name must not be empty")
    if problem := too_long(name, MAX_NAME):
        raise CycleError(f"name {problem}")
    return name


def add_schedule(
    session: Session,
    name: str,
    cron_expression: str,
    message: str,
    *,
    timezone: str = "UTC",
    voice_message: str | dict[str, str] | None = None,
    voice_audio_url: str | dict[str, str] | None = None,
    tags: Sequence[str] | None = None,
    fallback: Fallback | str = Fallback.NEXT_CYCLE,
    min_interval_seconds: float | None = None,
) -> Schedule:
    """Store a schedule; `CycleError` names what is wrong with it (`ScheduleExists` when the name is taken).

    `min_interval_seconds` defaults to SCHEDULE_MIN_INTERVAL_SECONDS; the receiver passes its own settings'.
    """
    if min_interval_seconds is None:
        min_interval_seconds = get_settings().schedule_min_interval_seconds
    name = check_name(name)
    voice = voice_languages.checked(voice_message, voice_audio_url)
    schedule = Schedule(
        name=name,
        cron=cron.check(cron_expression, timedelta(seconds=min_interval_seconds), datetime.now(UTC)),
        timezone=zone(timezone).key,
        message=check_message(message),
        voice_message=voice[0],
        voice_languages=voice[1],
        tags=list(tags or []),
        fallback=check_fallback(fallback),
        created_at=datetime.now(UTC),
    )
    session.add(schedule)
    try:
        session.flush()
    except IntegrityError:
        raise ScheduleExists(f"a schedule named {name!r} exists already") from None
    return schedule


def remove_schedule(session: Session, key: str) -> bool:
    """Remove by id or by name; True if one was removed. Past cycles keep their history."""
    by = Schedule.id == int(key) if key.isascii() and key.isdigit() and len(key) < 19 else Schedule.name == key
    query = select(Schedule).where(by)
    schedule = session.scalars(query).one_or_none()
    if schedule is None:
        return False
    session.delete(schedule)
    return True


def due_period(schedule: Schedule, now: datetime) -> datetime | None:
    """The latest scheduled time at or before `now` (and not before the schedule was added), in UTC; how a
    daylight-saving change moves it: `shared.cron`."""
    try:
        latest = cron.latest_firing(schedule.cron, zone(schedule.timezone), now)
    except cron.CRON_ERRORS as exc:  # stored before `cron.check` refused it
        raise CycleError(f"cron {schedule.cron!r} cannot be read: {exc}") from None
    return None if latest < schedule.created_at else latest


def period_key(schedule: Schedule, due: datetime) -> str:
    return f"schedule:{schedule.id}:{due.strftime(PERIOD_FORMAT)}"


def period_of(key: str) -> datetime:
    """The due time a period key names (its inverse: `period_key`)."""
    return datetime.strptime(key.split(":", 2)[2], PERIOD_FORMAT).replace(tzinfo=UTC)


def start_due_period(
    session: Session, schedule: Schedule, now: datetime, misfire: timedelta | None = None
) -> int | None:
    """Start the schedule's latest due period once; its cycle's id, or None when nothing started: not due,
    started or skipped already, or skipped now because this tick is more than `misfire` (default
    SCHEDULE_MISFIRE_SECONDS) after the period's time or the schedule's previous cycle has not finished."""
    due = due_period(schedule, now)
    if due is None:
        return None
    key = period_key(schedule, due)
    if session.scalar(select(Cycle.id).where(Cycle.period_key == key)) is not None:
        return None  # decided already, by this beat's earlier tick or by another beat
    if misfire is None:
        misfire = timedelta(seconds=get_settings().schedule_misfire_seconds)
    if now - due > misfire:
        _skip(session, schedule, due, key, missed_reason(now - due, misfire))
        return None
    running = session.execute(
        select(Cycle.id, Cycle.state)
        .where(Cycle.schedule_id == schedule.id, Cycle.state.in_(UNFINISHED))
        .order_by(Cycle.id.desc())
        .limit(1)
    ).first()
    if running is not None:
        _skip(session, schedule, due, key, f"cycle {running.id} of this schedule is still {running.state.value}")
        return None
    return start_cycle(
        session,
        schedule.message,
        **voice_languages.as_given(schedule.voice_message, schedule.voice_languages),
        schedule_id=schedule.id,
        period_key=key,
        tags=schedule.tags,
        fallback=schedule.fallback,
    )


def missed_reason(late: timedelta, misfire: timedelta) -> str:
    """A missed period's `skip_reason`; it starts with `missed`, whatever else it says."""
    return (
        f"{MISSED}: its first tick came {cron.duration(late)} after its time, later than SCHEDULE_MISFIRE_SECONDS "
        f"({cron.duration(misfire)})"
    )


def _skip(session: Session, schedule: Schedule, due: datetime, key: str, reason: str) -> None:
    if record_skipped(session, schedule.message, schedule.id, key, reason) is not None:
        log.warning("schedule %s (%s): period %s skipped: %s", schedule.id, schedule.name, due.isoformat(), reason)


def next_run(schedule: Schedule, now: datetime) -> datetime | None:
    """When the schedule fires next, in UTC; None if it never will (stored before `cron.check` refused it)."""
    try:
        return cron.next_firing(schedule.cron, zone(schedule.timezone), now)
    except cron.CRON_ERRORS:
        return None


def last_skip(session: Session, schedule: Schedule) -> dict[str, Any] | None:
    """The schedule's latest skipped period: its cycle row, due time and why."""
    skipped = session.scalars(
        select(Cycle)
        .where(Cycle.schedule_id == schedule.id, Cycle.state == CycleState.SKIPPED)
        .order_by(Cycle.id.desc())
        .limit(1)
    ).first()
    if skipped is None or skipped.period_key is None:
        return None
    return {
        "cycle_id": skipped.id,
        "period": period_of(skipped.period_key).isoformat(),
        "reason": skipped.skip_reason,
        "recorded_at": skipped.created_at.isoformat(),
    }


def schedule_json(session: Session, schedule: Schedule, now: datetime | None = None) -> dict[str, Any]:
    following = next_run(schedule, now or datetime.now(UTC))
    return {
        "id": schedule.id,
        "name": schedule.name,
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "message": schedule.message,
        **voice_languages.as_given(schedule.voice_message, schedule.voice_languages),
        "tags": schedule.tags or None,
        "fallback": schedule.fallback.value,
        "enabled": schedule.enabled,
        "next_run": following.isoformat() if following else None,
        "last_skip": last_skip(session, schedule),
    }
