"""`reach`: the operator's command line.

Exit codes scripts can rely on: 0 done, 1 the operation failed, 2 bad usage or settings (click's own),
3 a service Reach needs is unreachable.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from shared.settings import Settings, SettingsError, get_settings

EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3


def settings_or_exit() -> Settings:
    try:
        return get_settings()
    except SettingsError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Reach: SMS to your customers over Africa's Talking, with a voice call when the SMS did not arrive."""


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
    """Run the Africa's Talking simulator: SMS and voice APIs on loopback, callbacks by scenario."""
    from simulator.app import serve
    from simulator.scenario import Scenario

    settings = settings_or_exit()
    scenario = Scenario.from_file(scenario_file) if scenario_file else Scenario.from_dict({})
    callback_url = callback_url or f"http://{settings.host}:{settings.port}"
    token = settings.webhook_token.get_secret_value() or None
    click.echo(f"AT simulator on http://{host}:{port} (SMS: /version1/messaging, voice: /call)")
    click.echo(f"posting callbacks to {callback_url}")
    serve(host, port, scenario, api_key, username, callback_url, token)


# -- contacts ------------------------------------------------------------------------------------------------


@cli.group()
def contacts() -> None:
    """Contacts: import, list, show."""


@contacts.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--refused", "refused_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write refused rows with their reasons here (default: FILE.refused.csv).")  # fmt: skip
def contacts_import(file: Path, refused_file: Path | None) -> None:
    """Import contacts from a CSV file with a `phone,name` header."""
    import csv

    from shared.contacts import BadImport, import_contacts, rows_from_csv
    from shared.db import session_scope

    settings = settings_or_exit()
    try:
        rows = rows_from_csv(file.read_text(encoding="utf-8-sig", errors="replace"))
    except BadImport as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    with session_scope() as session:
        report = import_contacts(session, rows, settings.default_country)
    refused = len(report.refused)
    click.echo(f"{report.received} rows: {report.created} added, {report.updated} updated, {refused} refused")
    if report.refused:
        target = refused_file or file.with_suffix(".refused.csv")
        with target.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["row", "phone", "reason"])
            writer.writeheader()
            writer.writerows(report.refused)
        click.echo(f"refused rows and why: {target}")


@contacts.command("show")
@click.argument("phone")
def contacts_show(phone: str) -> None:
    """Show one contact."""
    from sqlalchemy import select

    from shared.contacts import contact_json
    from shared.db import session_scope
    from shared.models import Contact
    from shared.phone import InvalidPhone, normalise_phone

    settings = settings_or_exit()
    try:
        e164 = normalise_phone(phone, settings.default_country)
    except InvalidPhone as exc:
        click.echo(f"error: bad phone number {phone!r}: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    with session_scope() as session:
        contact = session.scalars(select(Contact).where(Contact.phone == e164)).one_or_none()
        if contact is None:
            click.echo(f"error: no contact {e164}", err=True)
            sys.exit(EXIT_FAILED)
        for key, value in contact_json(contact).items():
            click.echo(f"{key:>20}: {'' if value is None else value}")


@cli.command()
def up() -> None:
    """Run everything here: receiver, worker and beat (plus Redis and the AT simulator if not configured)."""
    from reach_cli.up import run_up

    run_up(settings_or_exit())


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
