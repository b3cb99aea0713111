"""Contacts: bulk import with per-row reasons, and the channel a contact is reached on."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared import erasure
from shared.db import insert_for
from shared.models import Call, Contact, ContactStatus, Message
from shared.phone import InvalidPhone, normalise_phone

MAX_NAME = 200
#: Rows written per INSERT statement during an import.
IMPORT_CHUNK = 1000


@dataclass
class ImportReport:
    received: int = 0
    created: int = 0
    updated: int = 0
    refused: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "created": self.created,
            "updated": self.updated,
            "refused_count": len(self.refused),
            "refused": self.refused,
        }


class BadImport(ValueError):
    """The upload as a whole cannot be read (not a list, no `phone` column, ...)."""


def rows_from_json(doc: Any) -> list[Mapping[str, Any]]:
    rows = doc.get("contacts") if isinstance(doc, dict) else doc
    if not isinstance(rows, list):
        raise BadImport('expected a JSON list of {"phone", "name"} or {"contacts": [...]}')
    return rows


def rows_from_csv(text: str) -> list[Mapping[str, Any]]:
    # newline=None reads \n, \r\n and a lone \r (old spreadsheet exports) all as line ends.
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff"), newline=None), strict=True)
    try:
        headers = [h.strip().lower() for h in reader.fieldnames or []]
        if "phone" not in headers:
            raise BadImport("CSV needs a header row with a 'phone' column (and optionally 'name')")
        reader.fieldnames = headers
        return list(reader)
    except csv.Error as exc:
        raise BadImport(f"not readable as CSV (line {reader.reader.line_num}): {exc}") from None


def import_contacts(
    session: Session, rows: Iterable[Any], default_country: str, progress: Callable[[int], None] | None = None
) -> ImportReport:
    """Add new contacts and update names of known ones; statuses are never reset by an import.

    Rows are checked and written IMPORT_CHUNK at a time (one INSERT each); `progress(n)` is called after
    each chunk with how many rows it held, so a caller can show a progress bar.
    """
    report = ImportReport()
    first_row: dict[str, int] = {}
    chunk: dict[str, str | None] = {}
    in_chunk = 0
    for number, row in enumerate(rows, start=1):
        report.received += 1
        in_chunk += 1
        try:
            phone, name = _read_row(row, default_country)
        except InvalidPhone as exc:
            raw = row.get("phone") if isinstance(row, Mapping) else row
            report.refused.append({"row": number, "phone": raw, "reason": str(exc)})
        else:
            if phone in first_row:
                report.refused.append({"row": number, "phone": phone, "reason": f"duplicate of row {first_row[phone]}"})
            else:
                first_row[phone] = number
                chunk[phone] = name
        if in_chunk == IMPORT_CHUNK:
            _write_chunk(session, chunk, report)
            chunk, in_chunk = {}, 0
            if progress:
                progress(IMPORT_CHUNK)
    _write_chunk(session, chunk, report)
    if progress and in_chunk:
        progress(in_chunk)
    return report


def _write_chunk(session: Session, chunk: dict[str, str | None], report: ImportReport) -> None:
    if chunk:
        created = _upsert_chunk(session, chunk)
        report.created += created
        report.updated += len(chunk) - created


def _read_row(row: Any, default_country: str) -> tuple[str, str | None]:
    if not isinstance(row, Mapping):
        raise InvalidPhone('each contact must be an object like {"phone": "+254711000001"}')
    raw_phone = row.get("phone")
    if not isinstance(raw_phone, str | int):
        raise InvalidPhone("missing phone")
    name = row.get("name")
    if name is not None and not isinstance(name, str):
        raise InvalidPhone("name must be text")
    if name and "\x00" in name:  # Postgres text cannot hold NUL
        raise InvalidPhone("name must not contain NUL characters")
    name = (name or "").strip()[:MAX_NAME] or None
    return normalise_phone(str(raw_phone), default_country), name


def _upsert_chunk(session: Session, chunk: dict[str, str | None]) -> int:
    """Insert new numbers, update names of known ones; returns how many were new.

    One statement, executed for many rows (executemany): compiled once and cached, where a
    1000-row VALUES list was compiled anew for every chunk (most of a 100k-row import's time).
    """
    known = set(session.scalars(select(Contact.phone).where(Contact.phone.in_(chunk))))
    table = Contact.__table__
    stmt = insert_for(session, table)
    stmt = stmt.on_conflict_do_update(
        index_elements=["phone"],
        set_={"name": func.coalesce(stmt.excluded.name, table.c.name), "updated_at": func.now()},
    )
    rows = [{"phone": phone, "name": name, "status": ContactStatus.NEW} for phone, name in chunk.items()]
    session.execute(stmt, rows)
    erasure.restore_consent(session, [phone for phone in chunk if phone not in known])
    return len(chunk) - len(known)


def get_or_create(session: Session, phone: str) -> Contact:
    contact = session.scalars(select(Contact).where(Contact.phone == phone)).one_or_none()
    if contact is None:
        session.execute(insert_for(session, Contact).values(phone=phone).on_conflict_do_nothing())
        erasure.restore_consent(session, [phone])
        contact = session.scalars(select(Contact).where(Contact.phone == phone)).one()
    return contact


def contact_json(contact: Contact) -> dict[str, Any]:
    def iso(value: Any) -> str | None:
        return value.isoformat() if value else None

    return {
        "id": contact.id,
        "phone": contact.phone,
        "name": contact.name,
        "status": contact.status.value,
        "channel_preference": contact.channel_preference.value if contact.channel_preference else None,
        "last_sms_status": contact.last_sms_status,
        "last_failure_reason": contact.last_failure_reason,
        "last_network_code": contact.last_network_code,
        "last_sms_at": iso(contact.last_sms_at),
        "last_call_status": contact.last_call_status,
        "last_hangup_cause": contact.last_hangup_cause,
        "last_call_at": iso(contact.last_call_at),
        "opted_out_at": iso(contact.opted_out_at),
        "consent_at": iso(contact.consent_at),
        "consent_by": contact.consent_by,
        "tags": list(contact.tags or []),
        "language": contact.language,
        "created_at": iso(contact.created_at),
        "updated_at": iso(contact.updated_at),
    }


def _iso(value: Any) -> str | None:
    return value.isoformat() if value else None


def _money(value: Any) -> str | None:
    return None if value is None else str(value)


def contact_history(session: Session, contact_id: int, limit: int = 20) -> dict[str, Any]:
    """The contact's latest messages and calls, newest first: what happened, when, why, and the cost."""
    messages = session.scalars(
        select(Message).where(Message.contact_id == contact_id).order_by(Message.id.desc()).limit(limit)
    )
    calls = session.scalars(select(Call).where(Call.contact_id == contact_id).order_by(Call.id.desc()).limit(limit))
    return {
        "messages": [
            {
                "id": m.id,
                "at_message_id": m.at_message_id,
                "cycle_id": m.cycle_id,
                "send_state": m.send_state,
                "send_status_code": m.send_status_code,
                "status": m.status,
                "failure_reason": m.failure_reason,
                "cost": _money(m.cost),
                "currency": m.currency,
                "created_at": _iso(m.created_at),
                "status_at": _iso(m.status_at),
            }
            for m in messages
        ],
        "calls": [
            {
                "id": c.id,
                "session_id": c.session_id,
                "cycle_id": c.cycle_id,
                "send_state": c.send_state,
                "status": c.status,
                "hangup_cause": c.hangup_cause,
                "outcome": c.outcome,
                "acknowledged": c.acknowledged,
                "duration_seconds": c.duration_seconds,
                "amount": _money(c.amount),
                "currency": c.currency,
                "created_at": _iso(c.created_at),
                "ended_at": _iso(c.ended_at),
            }
            for c in calls
        ],
    }


def counts_by_status(session: Session) -> dict[str, int]:
    """How many contacts have each status, every status listed (zero included)."""
    found = dict(session.execute(select(Contact.status, func.count()).group_by(Contact.status)).all())
    return {status.value: found.get(status, 0) for status in ContactStatus}
