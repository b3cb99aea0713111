"""Contacts: finding or adding one, and what the API and CLI show of one (imports: shared/imports.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared import erasure
from shared.db import insert_for
from shared.models import Call, Contact, ContactStatus, Message


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
        # The latest proof the customer is reachable (their SMS, a USSD session, an acknowledged call): issue 14.
        "reached_at": iso(contact.reached_at),
        "reached_by": contact.reached_by,
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
                "grade": c.grade,
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
