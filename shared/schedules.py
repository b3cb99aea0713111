"""Schedules: recurring cycles kept in Postgres, added and removed without restarting anything.

Beat ticks `reach.cycle.tick`; each tick starts, for every enabled schedule, the latest period that is
due. The period's key (`schedule:<id>:<due time>`) is unique on `cycles`, so a second beat, a retried
tick or a restart cannot run the same period twice.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.cycles import CycleError, check_message
from shared.models import Schedule


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CycleError(f"unknown time zone {name!r}; use a name such as Africa/Nairobi or UTC") from None


def check_cron(expression: str) -> str:
    expression = " ".join(expression.split())
    if len(expression.split()) != 5 or not croniter.is_valid(expression):
        raise CycleError(f"bad cron expression {expression!r}; use five fields, e.g. '0 9 * * 1' (Mondays 09:00)")
    return expression


def add_schedule(
    session: Session, name: str, cron: str, message: str, *, timezone: str = "UTC", voice_message: str | None = None
) -> Schedule:
    name = name.strip()
    if not name:
        raise CycleError("name must not be empty")
    schedule = Schedule(
        name=name[:100],
        cron=check_cron(cron),
        timezone=zone(timezone).key,
        message=check_message(message),
        voice_message=check_message(voice_message, "voice_message") if voice_message else None,
        created_at=datetime.now(UTC),
    )
    session.add(schedule)
    try:
        session.flush()
    except IntegrityError:
        raise CycleError(f"a schedule named {name!r} exists already") from None
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
    """The latest scheduled time at or before `now` (and after the schedule was added), in UTC."""
    tz = zone(schedule.timezone)
    local_now = now.astimezone(tz)
    latest = croniter(schedule.cron, local_now + timedelta(seconds=1)).get_prev(datetime)
    if latest < schedule.created_at.astimezone(tz):
        return None
    return latest.astimezone(UTC)


def period_key(schedule: Schedule, due: datetime) -> str:
    return f"schedule:{schedule.id}:{due.strftime('%Y-%m-%dT%H:%MZ')}"


def next_run(schedule: Schedule, now: datetime) -> datetime:
    tz = zone(schedule.timezone)
    return croniter(schedule.cron, now.astimezone(tz)).get_next(datetime).astimezone(UTC)


def schedule_json(schedule: Schedule, now: datetime | None = None) -> dict[str, Any]:
    return {
        "id": schedule.id,
        "name": schedule.name,
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "message": schedule.message,
        "voice_message": schedule.voice_message,
        "enabled": schedule.enabled,
        "next_run": next_run(schedule, now or datetime.now(UTC)).isoformat(),
    }
