"""`reach cycle`: run, show, watch, cancel, pause, resume and list cycles."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from typing import Any

import click

from reach_cli.common import (
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_UNREACHABLE,
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
from shared.settings import Settings


@click.group()
def cycle() -> None:
    """Communication cycles: SMS to new and active contacts, a voice call to inactive and pending ones.

    A started cycle is planned and dispatched by the worker (`celery -A worker worker`); follow it with
    `reach cycle watch ID`.
    """


def _message(message: str) -> str:
    from shared.cycles import CycleError, check_message

    try:
        return check_message(message)
    except CycleError as exc:  # what was typed: bad input, exit 2 (the README's exit-code table)
        fail(str(exc), EXIT_USAGE)


def _send_or_exit(settings: Settings, names: list[str], cycle_id: int, then: str) -> None:
    """Nudge the worker; if the broker is down say so (exit 3) and what happens to the cycle anyway."""
    from reach_cli.cycles import BrokerUnreachable, send_tasks

    try:
        send_tasks(settings, names, [cycle_id])
    except BrokerUnreachable as exc:
        fail(str(exc), EXIT_UNREACHABLE, also=[then])


@cycle.command(
    "run",
    options_metavar="--message TEXT [--voice-message TEXT | --voice-message-lang LANG=TEXT ...] "
    "[--voice-audio-url [LANG=]URL ...] [--tag TAG ...] [--sms-window W] [--call-window W] "
    "[--fallback MODE] [--dry-run] [--ignore-dlr-silence] [--json]",
)
@click.option("--message", required=True, help="The SMS text (also spoken on calls unless --voice-message).")
@click.option("--voice-message", default=None, help="What calls say instead of the SMS text.")
@voice_message_lang
@voice_audio_url
@click.option("--tag", "tags", multiple=True, metavar="TAG",
              help="Only contacts carrying this tag (repeat for any of several); default every contact.")  # fmt: skip
@click.option("--sms-window", default=None, metavar="HH:MM-HH:MM",
              help="When SMS may go out, in the customer's local time, or 'always' (default SMS_WINDOW).")  # fmt: skip
@click.option("--call-window", default=None, metavar="HH:MM-HH:MM",
              help="When calls may be placed, in local time, or 'always' (default CALL_WINDOW).")  # fmt: skip
@click.option("--fallback", type=click.Choice(FALLBACK_MODES), default="next_cycle", show_default=True,
              help="same_cycle: call in this cycle a contact whose SMS failed or got no Success within "
                   "FALLBACK_AFTER_SECONDS.")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Only show who would get what and the cost; send nothing.")
@click.option(
    "--ignore-dlr-silence",
    is_flag=True,
    help="Route contacts as usual even when an earlier cycle got no delivery report (see reach doctor).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--idempotency-key", default=None, metavar="KEY",
              help="Run again with this key: the first cycle is shown, none started (default: a new key).")  # fmt: skip
def cycle_run(
    message: str,
    voice_message: str | None,
    voice_message_lang: tuple[str, ...],
    voice_audio_url: tuple[str, ...],
    tags: tuple[str, ...],
    sms_window: str | None,
    call_window: str | None,
    fallback: str,
    dry_run: bool,
    ignore_dlr_silence: bool,
    as_json: bool,
    idempotency_key: str | None,
) -> None:
    """Start a cycle now (or with --dry-run, show what it would do)."""
    from reach_cli import starting
    from reach_cli.cycles import preview_lines
    from shared import cycles

    settings = settings_or_exit()
    message = _message(message)
    voice = voice_or_exit(voice_message, voice_message_lang, voice_audio_url)
    audience = tags_or_exit(tags)
    windows = {"sms_window": _window(sms_window, "--sms-window"), "call_window": _window(call_window, "--call-window")}
    if dry_run:
        with session_or_exit() as session:
            preview = cycles.preview(session, settings, message, ignore_dlr_silence=ignore_dlr_silence, tags=audience)
        if as_json:
            echo_json({"dry_run": True, **preview})
        else:
            for line in preview_lines(preview):
                echo(line)
        return
    started = starting.start_once(
        _key_or_exit(idempotency_key),
        message,
        voice,
        ignore_dlr_silence,
        audience,
        fallback=fallback,
        **windows,
    )
    cycle_id = started.cycle_id
    if started.replayed:
        echo_json({"id": cycle_id, "state": "planning"}) if as_json else echo(
            f"cycle {cycle_id} was started with this key already; nothing new started (reach cycle watch {cycle_id})"
        )
        return
    then = (
        f"cycle {cycle_id} is recorded (planning); the worker's housekeeping plans it within about 2 minutes "
        "once the broker is reachable again"
    )
    _send_or_exit(settings, ["reach.cycle.plan"], cycle_id, then)
    if as_json:
        echo_json({"id": cycle_id, "state": "planning"})
    else:
        echo(f"cycle {cycle_id} started (planning); follow it with: reach cycle watch {cycle_id}")
    note = starting.no_worker_note()
    if note:
        echo(f"note: {note}", err=True)


def _window(window: str | None, option: str) -> str | None:
    """A send window as stored, or None (the settings'); exit 2 naming the option if it is not one."""
    from shared.cycles import CycleError, check_window

    try:
        return check_window(window, option)
    except CycleError as exc:
        fail(str(exc), EXIT_USAGE)


def _key_or_exit(key: str | None) -> str:
    from uuid import uuid4

    from shared.idempotency import check_key

    try:
        return check_key(key) if key is not None else str(uuid4())
    except ValueError as exc:
        fail(str(exc).replace("Idempotency-Key", "--idempotency-key"), EXIT_USAGE)


def _report_or_exit(cycle_id: int) -> dict[str, Any]:
    from shared import cycle_report

    with session_or_exit() as session:
        found = cycle_report.report(session, cycle_id, settings_or_exit())
    if found is None:
        fail(f"no cycle {cycle_id}", EXIT_NOT_FOUND)
    return found


@cycle.command("show")
@click.argument("cycle_id", metavar="ID", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def cycle_show(cycle_id: int, as_json: bool) -> None:
    """Show a cycle's state and counts: SMS sent/delivered/failed, calls placed/answered, skipped, cost."""
    from reach_cli.cycles import report_lines

    settings_or_exit()
    found = _report_or_exit(cycle_id)
    if as_json:
        echo_json(found)
    else:
        for line in report_lines(found):
            echo(line)


@cycle.command("export")
@click.argument("cycle_id", type=click.IntRange(min=1))
@click.option("--out", "out", type=click.Path(dir_okay=False, writable=True), default=None, metavar="FILE",
              help="Write the CSV here (default: standard output).")  # fmt: skip
@click.option("--unreached", is_flag=True, help="Only the contacts reached neither by SMS nor by an answered call.")
def cycle_export_cmd(cycle_id: int, out: str | None, unreached: bool) -> None:
    """Every contact's outcome in cycle ID as CSV (or, with --unreached, the follow-up list)."""
    from shared import cycle_export
    from shared.db import session_scope

    with session_or_exit() as session:
        if not cycle_export.cycle_exists(session, cycle_id):
            fail(f"no cycle {cycle_id}", EXIT_NOT_FOUND)
    chunks = cycle_export.results_csv(session_scope, cycle_id, unreached=unreached)
    if out is None:
        for chunk in chunks:
            click.echo(chunk, nl=False)
        return
    with open(out, "w", encoding="utf-8", newline="") as handle:
        handle.writelines(chunks)
    echo(f"cycle {cycle_id}: {'unreached contacts' if unreached else 'results'} written to {out}")


@cycle.command("watch")
@click.argument("cycle_id", metavar="ID", type=int)
@click.option("--interval", default=5.0, show_default=True, type=click.FloatRange(0.1, 3600), metavar="SECONDS",
              help="Seconds between updates.")  # fmt: skip
def cycle_watch(cycle_id: int, interval: float) -> None:
    """Print the cycle's progress every few seconds until it is done (exit 0), or failed, skipped or cancelled (exit 1).

    Ctrl-C stops watching; the cycle carries on.
    """
    from reach_cli.cycles import progress_line

    settings_or_exit()
    try:
        while True:
            found = _report_or_exit(cycle_id)
            echo(progress_line(found, datetime.now(UTC).astimezone()))
            if found["state"] in {"done", "failed", "skipped", "cancelled"}:
                sys.exit(0 if found["state"] == "done" else EXIT_FAILED)
            time.sleep(interval)
    except KeyboardInterrupt:
        echo("stopped watching; the cycle carries on")


def _control_or_exit(action: str, cycle_id: int) -> dict[str, Any]:
    """Apply one of shared/cycle_control.py's actions: exit 4 for an unknown cycle, 1 when its state does not
    allow it (the API's 409). Returns the cycle's report."""
    from shared import cycle_control, cycles

    with session_or_exit() as session:
        try:
            cycle_control.ACTIONS[action](session, cycle_id)
        except cycles.CycleNotFound as exc:
            fail(str(exc), EXIT_NOT_FOUND)
        except cycles.CycleError as exc:
            fail(str(exc))
    return _report_or_exit(cycle_id)


@cycle.command("cancel")
@click.argument("cycle_id", metavar="ID", type=int)
def cycle_cancel(cycle_id: int) -> None:
    """Stop a cycle for good: nothing more is sent or called for it.

    What AT already has goes (its reports still count); everything else is cancelled. A finished cycle
    cannot be cancelled (exit 1).
    """
    settings_or_exit()
    found = _control_or_exit("cancel", cycle_id)
    echo(f"cycle {cycle_id} cancelled: {found['cancelled']} items will not be sent")


@cycle.command("pause")
@click.argument("cycle_id", metavar="ID", type=int)
def cycle_pause(cycle_id: int) -> None:
    """Hold a cycle's remaining sends and calls until `reach cycle resume ID`.

    What AT already has goes. A finished cycle cannot be paused (exit 1).
    """
    settings_or_exit()
    _control_or_exit("pause", cycle_id)
    echo(f"cycle {cycle_id} paused; let it go again with: reach cycle resume {cycle_id}")


@cycle.command("resume")
@click.argument("cycle_id", metavar="ID", type=int)
def cycle_resume(cycle_id: int) -> None:
    """Let a paused cycle go again: paused by `reach cycle pause` or for an account problem (after topping
    up the AT balance, say). A cycle that is not paused cannot be resumed (exit 1)."""
    from shared.cycle_control import RESUME_TASKS
    from shared.models import CycleState

    settings = settings_or_exit()
    state = CycleState(_control_or_exit("resume", cycle_id)["state"])
    then = (
        f"cycle {cycle_id} is resumed ({state.value}); the worker's housekeeping restarts it within a few minutes "
        "once the broker is reachable again"
    )
    _send_or_exit(settings, list(RESUME_TASKS[state]), cycle_id, then)
    echo(f"cycle {cycle_id} resumed ({state.value})")


@cycle.command("list")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000), help="At most this many.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def cycle_list(limit: int, as_json: bool) -> None:
    """The latest cycles, newest first."""
    from sqlalchemy import select

    from reach_cli.cycles import counts, table
    from shared.models import Cycle

    settings_or_exit()
    with session_or_exit() as session:
        found = list(session.scalars(select(Cycle).order_by(Cycle.id.desc()).limit(limit)))
    docs = [
        {
            "id": c.id,
            "state": c.state.value,
            "schedule_id": c.schedule_id,
            "created_at": c.created_at.isoformat(),
            "finished_at": c.finished_at.isoformat() if c.finished_at else None,
            "plan": c.plan,
            "paused_reason": c.paused_reason,
            "skip_reason": c.skip_reason,
        }
        for c in found
    ]
    if as_json:
        echo_json({"cycles": docs})
        return
    if not docs:
        echo("no cycles yet; start one with: reach cycle run --message TEXT")
        return
    rows = []
    for c, doc in zip(found, docs, strict=True):
        plan = doc["plan"] or {}
        reason = c.paused_reason or c.skip_reason
        state = f"{doc['state']} ({reason})" if reason else doc["state"]
        rows.append((
            c.id, state, f"{c.created_at:%Y-%m-%d %H:%M}", plan.get("sms"), plan.get("voice"),
            counts(plan["skipped"]) if "skipped" in plan else None, c.schedule_id,
        ))  # fmt: skip
    for line in table(("id", "state", "created (UTC)", "sms", "voice", "skipped", "schedule"), rows):
        echo(line)
