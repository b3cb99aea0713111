"""`reach contacts`: import, list, show."""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from reach_cli.common import (
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    echo,
    echo_json,
    fail,
    session_or_exit,
    settings_or_exit,
)
from reach_cli.progress import RowProgress
from shared.models import ContactStatus

if TYPE_CHECKING:
    from shared.imports import ImportReport, RefusedSink


@click.group()
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
    written, with the reason, to a CSV file. The file is read as it is imported (any size); on a terminal,
    stderr shows the rows done. Exit 0 even when some rows were refused (the summary says how many); 2 when
    the file cannot be read as CSV with a phone column (then nothing is imported).
    """
    from shared.imports import BadImport
    from shared.refusals import RefusedCsvFile

    settings = settings_or_exit()
    started = time.monotonic()
    refused = RefusedCsvFile(refused_file or file.with_suffix(".refused.csv"))
    try:
        report = _import_file(file, settings.default_country, refused)
    except BadImport as exc:
        refused.discard()
        fail(f"{file}: {exc}", EXIT_USAGE)
    finally:
        refused.close()
    seconds = time.monotonic() - started
    rows_read = f"{report.received} row{'' if report.received == 1 else 's'}"
    counts = f"{report.created} added, {report.updated} updated, {report.refused_count} refused"
    echo(f"{rows_read}: {counts} ({seconds:.1f} s)")
    if refused.written:
        echo(f"refused rows and why: {refused.path}")


def _import_file(file: Path, default_country: str, refused: RefusedSink) -> ImportReport:
    """Stream FILE's rows into one transaction; a `BadImport` anywhere in it rolls everything back."""
    from shared.imports import import_contacts, rows_from_csv

    with file.open("rb") as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline=None) as text:
        rows = rows_from_csv(text)
        progress = RowProgress.on_terminal(sys.stderr, f"importing {file.name}", file.stat().st_size, raw.tell)
        try:
            with session_or_exit() as session:
                return import_contacts(
                    session, rows, default_country, refused=refused, progress=progress.update if progress else None
                )
        finally:
            if progress:
                progress.finish()


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
            echo(f"{key:>20}: {'' if value is None else value}")
    for line in history_lines(doc["messages"], doc["calls"]):
        echo(line)


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
        echo(line)
    more = f"; the first {len(found)} shown (--limit)" if matching > len(found) else ""
    echo(f"{matching} contact{'s' if matching != 1 else ''}{' ' + status if status else ''}{more}")
