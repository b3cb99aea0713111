"""What every `reach` command group shares: exit codes, settings, sessions and errors as one line."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import click
from sqlalchemy.orm import Session

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
