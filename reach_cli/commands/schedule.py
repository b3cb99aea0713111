"""`reach schedule`: recurring cycles."""

from __future__ import annotations

from typing import Any

import click

from reach_cli.common import (
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    FALLBACK_MODES,
    echo,
    echo_json,
    fail,
    session_or_exit,
    settings_or_exit,
    tags_or_exit,
)
from reach_cli.voice_options import voice_audio_url, voice_message_lang, voice_or_exit


@click.group()
def schedule() -> None:
    """Recurring cycles: beat starts one for each due time of a cron expression, in its time zone."""


@schedule.command(
    "add",
    options_metavar="--cron EXPR --message TEXT [--voice-message TEXT | --voice-message-lang LANG=TEXT ...] "
    "[--voice-audio-url [LANG=]URL ...] [--timezone TZ] [--tag TAG ...] [--fallback MODE]",
)
@click.argument("name")
@click.option("--cron", required=True, metavar="EXPR", help="Five cron fields, e.g. '0 9 * * 1' (Mondays 09:00).")
@click.option("--message", required=True, help="The SMS text (also spoken on calls unless --voice-message).")
@click.option("--voice-message", default=None, help="What calls say instead of the SMS text.")
@voice_message_lang
@voice_audio_url
@click.option(
    "--timezone", default="UTC", show_default=True, metavar="TZ", help="Time zone of --cron, e.g. Africa/Nairobi."
)
@click.option("--tag", "tags", multiple=True, metavar="TAG",
              help="Only contacts carrying this tag (repeat for any of several); default every contact.")  # fmt: skip
@click.option("--fallback", type=click.Choice(FALLBACK_MODES), default="next_cycle", show_default=True,
              help="The fallback of the cycles it starts (see reach cycle run --help).")  # fmt: skip
def schedule_add(
    name: str,
    cron: str,
    message: str,
    voice_message: str | None,
    voice_message_lang: tuple[str, ...],
    voice_audio_url: tuple[str, ...],
    timezone: str,
    tags: tuple[str, ...],
    fallback: str,
) -> None:
    """Add a schedule NAME that starts a cycle at each time of --cron."""
    from shared import schedules
    from shared.cycles import CycleError

    settings = settings_or_exit()
    voice = voice_or_exit(voice_message, voice_message_lang, voice_audio_url)
    with session_or_exit() as session:
        try:
            schedule = schedules.add_schedule(
                session,
                name,
                cron,
                message,
                timezone=timezone,
                **voice,
                tags=tags_or_exit(tags),
                fallback=fallback,
                min_interval_seconds=settings.schedule_min_interval_seconds,
            )
        except schedules.ScheduleExists as exc:
            fail(str(exc))
        except CycleError as exc:  # what was typed cannot make a schedule
            fail(str(exc), EXIT_USAGE)
        added = schedules.schedule_json(session, schedule)
    echo(
        f"schedule {added['id']} {added['name']!r} added: {added['cron']} ({added['timezone']}); "
        f"next run {added['next_run']}"
    )


@schedule.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def schedule_list(as_json: bool) -> None:
    """All schedules, with when each runs next and the last period skipped (its previous cycle still running, or
    `(missed)`: beat ticked more than SCHEDULE_MISFIRE_SECONDS after its time)."""
    from sqlalchemy import select

    from reach_cli.cycles import short, table
    from shared import schedules
    from shared.models import Schedule

    settings_or_exit()
    with session_or_exit() as session:
        stored = session.scalars(select(Schedule).order_by(Schedule.id)).all()
        found = [schedules.schedule_json(session, s) for s in stored]
    if as_json:
        echo_json({"schedules": found})
        return
    if not found:
        echo("no schedules; add one with: reach schedule add NAME --cron EXPR --message TEXT")
        return
    columns = ("id", "name", "cron", "timezone", "enabled", "next_run", "last_skip", "message")
    shown = ({**s, "last_skip": _skip_cell(s["last_skip"]), "message": short(s["message"], 40)} for s in found)
    rows = ([s[k] for k in columns] for s in shown)
    for line in table(columns, rows):
        echo(line)


def _skip_cell(last_skip: dict[str, Any] | None) -> str | None:
    """The last skipped period's time, marked `(missed)` when its tick came too late."""
    from shared import schedules

    if last_skip is None:
        return None
    missed = last_skip["reason"].startswith(schedules.MISSED)
    return f"{last_skip['period']} ({schedules.MISSED})" if missed else last_skip["period"]


@schedule.command("remove")
@click.argument("key", metavar="NAME_OR_ID")
def schedule_remove(key: str) -> None:
    """Remove a schedule by name or id; the cycles it already started keep their history."""
    from shared import schedules

    settings_or_exit()
    with session_or_exit() as session:
        removed = schedules.remove_schedule(session, key)
    if not removed:
        fail(f"no schedule {key!r}", EXIT_NOT_FOUND)
    echo(f"schedule {key!r} removed")
