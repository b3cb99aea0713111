"""`reach db`: the database schema."""

from __future__ import annotations

import click

from reach_cli.common import (
    EXIT_FAILED,
    EXIT_UNREACHABLE,
    echo,
    fail,
    settings_or_exit,
)


@click.group()
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
        fail(f"database unreachable: {exc.orig}", EXIT_UNREACHABLE)
    echo(f"database is at revision {revision}")


@db.command("check")
def db_check() -> None:
    """Fail if the models and the migrations disagree."""
    from alembic.util.exc import CommandError

    from shared import migrate

    settings = settings_or_exit()
    try:
        migrate.check(settings.effective_database_url)
    except CommandError as exc:
        fail(str(exc), EXIT_FAILED)
    echo("models and migrations agree")
