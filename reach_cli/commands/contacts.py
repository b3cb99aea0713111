"""`reach contacts`: import, list, show, set, delete."""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click
from sqlalchemy.orm import Session

from reach_cli.common import (
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    echo,
    echo_json,
    fail,
    session_or_exit,
    settings_or_exit,
)
from reach_cli.progress import RowProgress
from shared.models import Contact, ContactStatus

if TYPE_CHECKING:
    from shared.imports import ImportReport, RefusedSink


@click.group()
def contacts() -> None:
    """Contacts: import, list, show, change, erase."""


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
    _print_fields(doc)
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


@contacts.command("set")
@click.argument("phone")
@click.option("--name", help="The contact's name (an empty one clears it).")
@click.option("--tag", "tags", multiple=True, help="A tag; repeat for more. Replaces the contact's tags.")
@click.option("--no-tags", is_flag=True, help="Remove every tag.")
@click.option("--language", help="An ISO 639 code such as sw or en (empty clears it).")
@click.option("--opt-out", is_flag=True, help="Record an opt-out: nothing more is sent or called.")
@click.option("--opt-in", is_flag=True, help="Record an opt-in: an opted-out contact becomes new.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the operator API's answer).")
def contacts_set(
    phone: str,
    name: str | None,
    tags: tuple[str, ...],
    no_tags: bool,
    language: str | None,
    opt_out: bool,
    opt_in: bool,
    as_json: bool,
) -> None:
    """Change a contact: name, tags, language, or an opt-out or opt-in (recorded as made by the CLI's user,
    now; a STOP or START the customer texted later still wins).

    Exit 4 when there is no such contact, 2 for a bad value or nothing to change.
    """
    from datetime import UTC, datetime

    from shared.contact_changes import BadChange, apply_changes, operator_label, read_changes

    if opt_out and opt_in:
        fail("give one of --opt-out and --opt-in", EXIT_USAGE)
    if tags and no_tags:
        fail("give --tag or --no-tags, not both (--tag and --no-tags)", EXIT_USAGE)
    doc: dict[str, object] = {}
    if name is not None:
        doc["name"] = name
    if tags or no_tags:
        doc["tags"] = list(tags)
    if language is not None:
        doc["language"] = language or None
    if opt_out or opt_in:
        doc["status"] = "opted_out" if opt_out else "new"
    try:
        changes = read_changes(doc)
    except BadChange as exc:
        fail(str(exc), EXIT_USAGE)
    e164 = _e164(phone)
    with session_or_exit() as session:
        contact = _locked_contact(session, e164)
        if not apply_changes(session, contact, changes, operator_label(f"CLI (user {_user()})"), datetime.now(UTC)):
            fail(f"contact {e164}: its consent changed after this command was given")
        session.flush()
        _print_contact(session, contact, as_json)


@contacts.command("delete")
@click.argument("phone")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def contacts_delete(phone: str, yes: bool) -> None:
    """Erase a contact and its personal data: the contact, the number and text of its messages and calls,
    its incoming SMS, USSD sessions and raw callbacks. Cycle counts and costs stay. Its opt-out, if any,
    outlives the erasure (kept as a keyed hash of the number). Asks first unless --yes.

    Exit 4 when there is no such contact, 2 when PHONE is not a phone number, 1 when not confirmed or when work
    about the contact kept its rows for 30 s (nothing erased; try again).
    """
    from shared.erasure import ErasureBusy, erase_contact
    from shared.store import get_store

    settings = settings_or_exit()
    e164 = _e164(phone)
    with session_or_exit() as session:
        _known_contact(session, e164)
    if not yes:  # no transaction open while the operator reads: a lock held here would stall the drain
        click.confirm(f"Erase {e164} and its personal data? This cannot be undone", abort=True)
    with session_or_exit() as session:
        try:
            if not erase_contact(session, get_store(), e164, settings.erasure_keys):
                fail(f"no contact {e164}", EXIT_NOT_FOUND)
        except ErasureBusy as exc:
            fail(str(exc), EXIT_FAILED)
    echo(f"erased {e164}")


def _e164(phone: str) -> str:
    from shared.phone import InvalidPhone, normalise_phone

    try:
        return normalise_phone(phone, settings_or_exit().default_country)
    except InvalidPhone as exc:
        fail(f"bad phone number {phone!r}: {exc}", EXIT_USAGE)


def _locked_contact(session: Session, e164: str) -> Contact:
    return _known_contact(session, e164, lock=True)


def _known_contact(session: Session, e164: str, lock: bool = False) -> Contact:
    from sqlalchemy import select

    query = select(Contact).where(Contact.phone == e164)
    contact = session.scalars(query.with_for_update() if lock else query).one_or_none()
    if contact is None:
        fail(f"no contact {e164}", EXIT_NOT_FOUND)
    return contact


def _user() -> str:
    """Who runs the CLI, for `consent_by` (a container may have no user name)."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _print_contact(session: Session, contact: Contact, as_json: bool) -> None:
    from shared.contacts import contact_history, contact_json

    doc = contact_json(contact)
    if as_json:
        echo_json({**doc, **contact_history(session, contact.id)})
        return
    _print_fields(doc)


def _print_fields(doc: dict[str, object]) -> None:
    """One `key: value` line per field of a contact (tags joined by commas)."""
    for key, value in doc.items():
        if key in {"messages", "calls"}:
            continue
        shown = ", ".join(map(str, value)) if isinstance(value, list) else "" if value is None else value
        echo(f"{key:>20}: {shown}")
