"""`reach`: the operator's command line.

Exit codes scripts can rely on (every error is one `error: ...` line on stderr, never a traceback):

    0  done
    1  the operation failed (e.g. a cycle that is not paused cannot be resumed; `cycle watch`: it failed)
    2  bad usage: an unknown option or value, bad settings, a bad phone number or scenario file
    3  a service Reach needs is unreachable (the database or the broker)
    4  not found: no such contact, cycle or schedule
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click
from sqlalchemy.orm import Session

from shared.models import ContactStatus
from shared.settings import Settings, SettingsError, get_settings

EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_NOT_FOUND = 1, 2, 3, 4
EXIT_CODES_HELP = (
    "Exit codes: 0 done, 1 failed, 2 bad usage or settings, 3 database or broker unreachable, 4 not found."
)


def settings_or_exit() -> Settings:
    try:
        return get_settings()
    except SettingsError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@contextmanager
def session_or_exit() -> Iterator[Session]:
    """`session_scope()`, with an unreachable database turned into exit code 3 instead of a traceback."""
    from sqlalchemy.exc import OperationalError

    from shared.db import session_scope

    try:
        with session_scope() as session:
            yield session
    except OperationalError as exc:
        fail(f"database unreachable: {exc.orig}", EXIT_UNREACHABLE)


def echo_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, default=str))


class ReachGroup(click.Group):
    """The top-level group: an unreachable database anywhere below becomes exit 3 with one line, not a
    traceback (commands that know better say more themselves)."""

    def invoke(self, ctx: click.Context) -> Any:
        from sqlalchemy.exc import OperationalError

        try:
            return super().invoke(ctx)
        except OperationalError as exc:
            fail(f"database unreachable: {exc.orig}", EXIT_UNREACHABLE)


@click.group(cls=ReachGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP)
def cli() -> None:
    """Reach: SMS to your customers over Africa's Talking, with a voice call when the SMS did not arrive.

    Settings come from the environment and a .env file (see .env.example).
    """


# -- database ------------------------------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Alembic revision to upgrade to.")
def db_upgrade(revision: str) -> None:
    """Create or migrate the database schema (safe to run again)."""
    from sqlalchemy.exc import OperationalError

    from shared import migrate

    settings = settings_or_exit()
    try:
        migrate.upgrade(settings.effective_database_url, revision)
    except OperationalError as exc:
        click.echo(f"error: database unreachable: {exc.orig}", err=True)
        sys.exit(EXIT_UNREACHABLE)
    click.echo(f"database is at revision {revision}")


@db.command("check")
def db_check() -> None:
    """Fail if the models and the migrations disagree."""
    from alembic.util.exc import CommandError

    from shared import migrate

    settings = settings_or_exit()
    try:
        migrate.check(settings.effective_database_url)
    except CommandError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    click.echo("models and migrations agree")


# -- simulator -----------------------------------------------------------------------------------------------


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8001, show_default=True, type=int)
@click.option("--scenario", "scenario_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--callback-url", default=None, help="Where to post callbacks (default: http://HOST:PORT of Reach).")
@click.option("--api-key", envvar="AT_API_KEY", default="simulator-key", show_default=True)
@click.option("--username", envvar="AT_USERNAME", default="sandbox", show_default=True)
def simulator(
    host: str, port: int, scenario_file: Path | None, callback_url: str | None, api_key: str, username: str
) -> None:
    """Run the Africa's Talking simulator: SMS and voice APIs on loopback, callbacks by scenario.

    A scenario is a JSON file saying what happens to each number: delivery reports in order, the call's
    outcome, delays, duplicates and faults (see simulator/scenario.py). Without one, every SMS is
    delivered and every call answered. Ctrl-C stops it.
    """
    from simulator.app import serve
    from simulator.scenario import Scenario

    settings = settings_or_exit()
    try:
        scenario = Scenario.from_file(scenario_file) if scenario_file else Scenario.from_dict({})
    except (ValueError, TypeError, AttributeError) as exc:  # json.JSONDecodeError is a ValueError
        fail(f"bad scenario {scenario_file}: {exc}", EXIT_USAGE)
    callback_url = callback_url or f"http://{settings.host}:{settings.port}"
    token = next(iter(settings.webhook_tokens), None)
    click.echo(f"AT simulator on http://{host}:{port} (SMS: /version1/messaging, voice: /call)")
    click.echo(f"posting callbacks to {callback_url}")
    try:
        serve(host, port, scenario, api_key, username, callback_url, token)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


# -- contacts ------------------------------------------------------------------------------------------------


@cli.group()
def contacts() -> None:
    """Contacts: import, list, show."""


@contacts.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--refused", "refused_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write refused rows with their reasons here (default: FILE.refused.csv).")  # fmt: skip
def contacts_import(file: Path, refused_file: Path | None) -> None:
    """Import contacts from a CSV file with a `phone,name` header (name optional).

    Numbers are normalised to E.164 (DEFAULT_COUNTRY for national numbers). New numbers are added; known
    ones keep their status and get the new name. Rows with a bad number or a duplicate are refused and
    written, with the reason, to a CSV file. Exit 0 even when some rows were refused (the summary says how
    many); 2 when the file cannot be read as CSV with a phone column.
    """
    import csv

    from shared.contacts import BadImport, import_contacts, rows_from_csv

    settings = settings_or_exit()
    started = time.monotonic()
    try:
        rows = rows_from_csv(file.read_text(encoding="utf-8-sig", errors="replace"))
    except BadImport as exc:
        fail(f"{file}: {exc}", EXIT_USAGE)
    with session_or_exit() as session:
        session.connection()  # an unreachable database is reported before the progress bar starts
        with click.progressbar(length=len(rows), label="importing", file=sys.stderr, show_pos=True) as bar:
            report = import_contacts(session, rows, settings.default_country, progress=bar.update)
    refused = len(report.refused)
    seconds = time.monotonic() - started
    rows_read = f"{report.received} row{'' if report.received == 1 else 's'}"
    click.echo(f"{rows_read}: {report.created} added, {report.updated} updated, {refused} refused ({seconds:.1f} s)")
    if report.refused:
        target = refused_file or file.with_suffix(".refused.csv")
        with target.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["row", "phone", "reason"])
            writer.writeheader()
            writer.writerows(report.refused)
        click.echo(f"refused rows and why: {target}")


@contacts.command("show")
@click.argument("phone")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the operator API's answer).")
@click.option("--history", default=20, show_default=True, type=click.IntRange(0, 1000),
              help="How many of the latest messages and calls to show.")  # fmt: skip
def contacts_show(phone: str, as_json: bool, history: int) -> None:
    """Show one contact, with its latest messages and calls: when, what happened, why, and the cost.

    PHONE may be in E.164 (+254711000001) or national form (0711000001, read in DEFAULT_COUNTRY).
    Exit 4 when there is no such contact, 2 when PHONE is not a phone number.
    """
    from sqlalchemy import select

    from reach_cli.contacts import history_lines
    from shared.contacts import contact_history, contact_json
    from shared.models import Contact
    from shared.phone import InvalidPhone, normalise_phone

    settings = settings_or_exit()
    try:
        e164 = normalise_phone(phone, settings.default_country)
    except InvalidPhone as exc:
        fail(f"bad phone number {phone!r}: {exc}", EXIT_USAGE)
    with session_or_exit() as session:
        contact = session.scalars(select(Contact).where(Contact.phone == e164)).one_or_none()
        if contact is None:
            fail(f"no contact {e164}", EXIT_NOT_FOUND)
        doc = {**contact_json(contact), **contact_history(session, contact.id, limit=history)}
    if as_json:
        echo_json(doc)
        return
    for key, value in doc.items():
        if key not in {"messages", "calls"}:
            click.echo(f"{key:>20}: {'' if value is None else value}")
    for line in history_lines(doc["messages"], doc["calls"]):
        click.echo(line)


@contacts.command("list")
@click.option("--status", type=click.Choice([s.value for s in ContactStatus]), help="Only contacts with this status.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000), help="At most this many.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def contacts_list(status: str | None, limit: int, as_json: bool) -> None:
    """List contacts, oldest first, optionally only those with one status."""
    from sqlalchemy import func, select

    from reach_cli.cycles import table
    from shared.contacts import contact_json
    from shared.models import Contact

    settings_or_exit()
    query = select(Contact).order_by(Contact.id).limit(limit)
    total = select(func.count()).select_from(Contact)
    if status:
        query = query.where(Contact.status == ContactStatus(status))
        total = total.where(Contact.status == ContactStatus(status))
    with session_or_exit() as session:
        found = [contact_json(c) for c in session.scalars(query)]
        matching = session.scalar(total) or 0
    if as_json:
        echo_json({"contacts": found, "total": matching})
        return
    columns = ("phone", "status", "name", "last_sms_status", "last_failure_reason", "last_call_status")
    for line in table(columns, ([c[k] for k in columns] for c in found)):
        click.echo(line)
    more = f"; the first {len(found)} shown (--limit)" if matching > len(found) else ""
    click.echo(f"{matching} contact{'s' if matching != 1 else ''}{' ' + status if status else ''}{more}")


# -- cycles --------------------------------------------------------------------------------------------------


@cli.group()
def cycle() -> None:
    """Communication cycles: SMS to new and active contacts, a voice call to inactive and pending ones.

    A started cycle is planned and dispatched by the worker (`celery -A worker worker`); follow it with
    `reach cycle watch ID`.
    """


def _messages(message: str, voice_message: str | None) -> tuple[str, str | None]:
    from shared.cycles import CycleError, check_message

    try:
        return check_message(message), check_message(voice_message, "voice message") if voice_message else None
    except CycleError as exc:
        fail(str(exc))


def _send_or_exit(settings: Settings, names: list[str], cycle_id: int, then: str) -> None:
    """Nudge the worker; if the broker is down say so (exit 3) and what happens to the cycle anyway."""
    from reach_cli.cycles import BrokerUnreachable, send_tasks

    try:
        send_tasks(settings, names, [cycle_id])
    except BrokerUnreachable as exc:
        fail(f"{exc}\n{then}", EXIT_UNREACHABLE)


@cycle.command("run", options_metavar="--message TEXT [--voice-message TEXT] [--dry-run] [--json]")
@click.option("--message", required=True, help="The SMS text (also spoken on calls unless --voice-message).")
@click.option("--voice-message", default=None, help="What calls say instead of the SMS text.")
@click.option("--dry-run", is_flag=True, help="Only show who would get what and the cost; send nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def cycle_run(message: str, voice_message: str | None, dry_run: bool, as_json: bool) -> None:
    """Start a cycle now (or with --dry-run, show what it would do)."""
    from reach_cli.cycles import preview_lines
    from shared import cycles

    settings = settings_or_exit()
    message, voice_message = _messages(message, voice_message)
    if dry_run:
        with session_or_exit() as session:
            preview = cycles.preview(session, settings)
        if as_json:
            echo_json({"dry_run": True, **preview})
        else:
            click.echo("\n".join(preview_lines(preview)))
        return
    with session_or_exit() as session:
        try:
            cycle_id = cycles.start_cycle(session, message, voice_message)
        except cycles.CycleError as exc:
            fail(str(exc))
    if cycle_id is None:  # only a scheduled period can conflict; kept for safety
        fail("the cycle was not created")
    then = (
        f"cycle {cycle_id} is recorded (planning); the worker's housekeeping plans it within about 2 minutes "
        "once the broker is reachable again"
    )
    _send_or_exit(settings, ["reach.cycle.plan"], cycle_id, then)
    if as_json:
        echo_json({"id": cycle_id, "state": "planning"})
    else:
        click.echo(f"cycle {cycle_id} started (planning); follow it with: reach cycle watch {cycle_id}")


def _report_or_exit(cycle_id: int) -> dict[str, Any]:
    from shared import cycles

    with session_or_exit() as session:
        found = cycles.report(session, cycle_id)
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
        click.echo("\n".join(report_lines(found)))


@cycle.command("watch")
@click.argument("cycle_id", metavar="ID", type=int)
@click.option("--interval", default=5.0, show_default=True, type=click.FloatRange(0.1, 3600), metavar="SECONDS",
              help="Seconds between updates.")  # fmt: skip
def cycle_watch(cycle_id: int, interval: float) -> None:
    """Print the cycle's progress every few seconds until it is done (exit 0) or failed (exit 1).

    Ctrl-C stops watching; the cycle carries on.
    """
    from reach_cli.cycles import progress_line

    settings_or_exit()
    try:
        while True:
            found = _report_or_exit(cycle_id)
            click.echo(progress_line(found, datetime.now(UTC).astimezone()))
            if found["state"] in {"done", "failed"}:
                sys.exit(EXIT_FAILED if found["state"] == "failed" else 0)
            time.sleep(interval)
    except KeyboardInterrupt:
        click.echo("stopped watching; the cycle carries on")


@cycle.command("resume")
@click.argument("cycle_id", metavar="ID", type=int)
def cycle_resume(cycle_id: int) -> None:
    """Resume a cycle paused for an account problem (after topping up the AT balance, say)."""
    from shared import cycles

    settings = settings_or_exit()
    with session_or_exit() as session:
        try:
            cycles.resume(session, cycle_id)
        except cycles.CycleNotFound as exc:
            fail(str(exc), EXIT_NOT_FOUND)
        except cycles.CycleError as exc:
            fail(str(exc))
    then = (
        f"cycle {cycle_id} is resumed (dispatching); the worker's housekeeping restarts its sends within a minute "
        "once the broker is reachable again"
    )
    _send_or_exit(settings, ["reach.cycle.dispatch_sms", "reach.cycle.dispatch_calls"], cycle_id, then)
    click.echo(f"cycle {cycle_id} resumed (dispatching)")


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
        }
        for c in found
    ]
    if as_json:
        echo_json({"cycles": docs})
        return
    if not docs:
        click.echo("no cycles yet; start one with: reach cycle run --message TEXT")
        return
    rows = []
    for c, doc in zip(found, docs, strict=True):
        plan = doc["plan"] or {}
        state = f"{doc['state']} ({c.paused_reason})" if c.paused_reason else doc["state"]
        rows.append((
            c.id, state, f"{c.created_at:%Y-%m-%d %H:%M}", plan.get("sms"), plan.get("voice"),
            counts(plan["skipped"]) if "skipped" in plan else None, c.schedule_id,
        ))  # fmt: skip
    for line in table(("id", "state", "created (UTC)", "sms", "voice", "skipped", "schedule"), rows):
        click.echo(line)


# -- schedules -----------------------------------------------------------------------------------------------


@cli.group()
def schedule() -> None:
    """Recurring cycles: beat starts one for each due time of a cron expression, in its time zone."""


@schedule.command("add", options_metavar="--cron EXPR --message TEXT [--voice-message TEXT] [--timezone TZ]")
@click.argument("name")
@click.option("--cron", required=True, metavar="EXPR", help="Five cron fields, e.g. '0 9 * * 1' (Mondays 09:00).")
@click.option("--message", required=True, help="The SMS text (also spoken on calls unless --voice-message).")
@click.option("--voice-message", default=None, help="What calls say instead of the SMS text.")
@click.option(
    "--timezone", default="UTC", show_default=True, metavar="TZ", help="Time zone of --cron, e.g. Africa/Nairobi."
)
def schedule_add(name: str, cron: str, message: str, voice_message: str | None, timezone: str) -> None:
    """Add a schedule NAME that starts a cycle at each time of --cron."""
    from shared import schedules
    from shared.cycles import CycleError

    settings_or_exit()
    with session_or_exit() as session:
        try:
            added = schedules.schedule_json(
                schedules.add_schedule(session, name, cron, message, timezone=timezone, voice_message=voice_message)
            )
        except CycleError as exc:
            fail(str(exc))
    click.echo(
        f"schedule {added['id']} {added['name']!r} added: {added['cron']} ({added['timezone']}); "
        f"next run {added['next_run']}"
    )


@schedule.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def schedule_list(as_json: bool) -> None:
    """All schedules, with when each runs next."""
    from sqlalchemy import select

    from reach_cli.cycles import short, table
    from shared import schedules
    from shared.models import Schedule

    settings_or_exit()
    with session_or_exit() as session:
        found = [schedules.schedule_json(s) for s in session.scalars(select(Schedule).order_by(Schedule.id))]
    if as_json:
        echo_json({"schedules": found})
        return
    if not found:
        click.echo("no schedules; add one with: reach schedule add NAME --cron EXPR --message TEXT")
        return
    columns = ("id", "name", "cron", "timezone", "enabled", "next_run", "message")
    rows = ([s[k] if k != "message" else short(s[k], 40) for k in columns] for s in found)
    for line in table(columns, rows):
        click.echo(line)


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
    click.echo(f"schedule {key!r} removed")


# -- everything ----------------------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--demo", is_flag=True, help="Then run the demo: sample contacts, two cycles on the simulator, a summary."
)
def up(demo: bool) -> None:
    """Run everything here: receiver, worker and beat (and the AT simulator when AT is not configured).

    With no DATABASE_URL and no REDIS_URL everything is embedded in SQLite files under var/.
    """
    from reach_cli.up import run_up

    scenario = None
    if demo:
        from reach_cli.demo import data_file

        scenario = data_file("scenario.json")
    run_up(settings_or_exit(), demo=demo, demo_scenario=scenario)


@cli.command()
def demo() -> None:
    """Run the demo against a `reach up` whose simulator plays the demo scenario (`reach up --demo` does it)."""
    from reach_cli.demo import run_demo

    run_demo(settings_or_exit())


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
