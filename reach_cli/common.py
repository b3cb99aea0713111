"""What every `reach` command group shares: exit codes, settings, sessions and errors as one line."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

import click
from sqlalchemy.orm import Session

from shared.models import Fallback
from shared.settings import Settings, SettingsError, get_settings

EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_NOT_FOUND = 1, 2, 3, 4
#: `--fallback` of `reach cycle run` and `reach schedule add` (design §4.1).
FALLBACK_MODES = tuple(mode.value for mode in Fallback)
EXIT_CODES_HELP = (
    "Exit codes: 0 done, 1 failed, 2 bad usage or settings, 3 database or broker unreachable, 4 not found."
)


#: What a terminal acts on instead of showing: C0 controls (escape, bell, CR, LF, ...), DEL, C1 controls (a lone
#: 0x9b starts a sequence too) and the bidirectional marks that reorder what is shown ("Trojan Source").
_ACTING = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def visible(text: str) -> str:
    """`text` with every character a terminal would act on written out as an escape (`\\x1b`, `\\n`, `\\u202e`)."""
    return _ACTING.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def echo(line: str = "", *, err: bool = False) -> None:
    """Print one line for a person. Every human-readable line of the CLI goes through here: names, reasons and
    callback fields come from outsiders, and an escape sequence in them must show as text, not retitle or
    clear the terminal or forge a line (a line end inside `line` is shown as `\\n` too). JSON output goes
    through `echo_json`, whose escaping does the same."""
    click.echo(visible(line), err=err)


def settings_or_exit() -> Settings:
    try:
        return get_settings()
    except SettingsError as exc:
        first, *rest = str(exc).splitlines() or [""]  # one line per bad variable
        fail(first, EXIT_USAGE, also=rest)


def fail(message: str, code: int = EXIT_FAILED, also: Sequence[str] = ()) -> NoReturn:
    """`error: MESSAGE` (then the lines `also`) on stderr, and exit with `code`."""
    echo(f"error: {message}", err=True)
    for line in also:
        echo(line, err=True)
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


def tags_or_exit(given: Sequence[str]) -> list[str] | None:
    """The tags of repeated `--tag` options (shared/tags.py rules), None when none was given; exit 2 if bad."""
    from shared.tags import BadTags, normalise_tag

    try:
        return list(dict.fromkeys(normalise_tag(raw, "--tag") for raw in given)) or None
    except BadTags as exc:
        fail(str(exc), EXIT_USAGE)
