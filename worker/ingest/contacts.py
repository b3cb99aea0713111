"""What callbacks change on a contact: statuses after an outcome, and the customer's opt-out and opt-in."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session

from shared.db import insert_for
from shared.models import (
    Channel,
    Contact,
    ContactStatus,
)
from shared.status_policy import Action
from worker import fallback

log = logging.getLogger(__name__)


#: Contacts in these states get nothing more: their pending cycle items are cancelled.
UNREACHABLE = {ContactStatus.OPTED_OUT.value, ContactStatus.INVALID.value}

#: A contact's status after a final outcome of its last SMS or call.
CONTACT_STATUS_AFTER = {
    Action.DELIVERED: ContactStatus.ACTIVE,
    Action.UNDELIVERED: ContactStatus.INACTIVE,
    Action.INVALID: ContactStatus.INVALID,
    Action.OPT_OUT: ContactStatus.OPTED_OUT,
}

_contacts = Contact.__table__


def find_contact_id(session: Session, phone: str | None) -> int | None:
    if not phone:
        return None
    return session.scalar(select(Contact.id).where(Contact.phone == phone))


def _newer_than_consent(at: datetime) -> Any:
    """The update applies only to a contact whose consent last changed no later than `at` (the customer's
    time): a STOP, START or USSD choice re-delivered after a newer one (a recovered batch, a late retry) is
    ignored."""
    consent = _contacts.c.consent_at
    return or_(consent.is_(None), consent <= at)


def opt_out(session: Session, phone: str, at: datetime) -> None:
    """The customer asked to stop: recorded even for a number we never messaged, so it stays stopped."""
    stmt = insert_for(session, Contact).values(
        phone=phone, status=ContactStatus.OPTED_OUT, opted_out_at=at, consent_at=at, created_at=at, updated_at=at
    )
    contact_id = session.scalar(
        stmt.on_conflict_do_update(
            index_elements=["phone"],
            set_={
                "status": ContactStatus.OPTED_OUT.value,
                "opted_out_at": func.coalesce(_contacts.c.opted_out_at, at),
                "consent_at": at,
                "updated_at": at,
            },
            where=_newer_than_consent(at),
        ).returning(Contact.id)
    )
    if contact_id is None:
        log.info("opt-out of %s at %s ignored: the customer chose again after it", phone, at.isoformat())
        return
    fallback.cancel_pending(session, [contact_id], "the customer opted out")


def opt_in(session: Session, phone: str, at: datetime, preference: Channel | None = None) -> None:
    """The customer asked for messages: an opted-out contact becomes `new`; a stranger is added."""
    values: dict[str, object] = {"updated_at": at, "consent_at": at}
    if preference is not None:
        values["channel_preference"] = preference.value
    status_col = _contacts.c.status
    stmt = insert_for(session, Contact).values(
        phone=phone,
        status=ContactStatus.NEW,
        channel_preference=preference,
        consent_at=at,
        created_at=at,
        updated_at=at,
    )
    set_ = {
        **values,
        "status": case((status_col == ContactStatus.OPTED_OUT.value, ContactStatus.NEW.value), else_=status_col),
        "opted_out_at": None,
    }
    applied = session.scalar(
        stmt.on_conflict_do_update(index_elements=["phone"], set_=set_, where=_newer_than_consent(at)).returning(
            Contact.id
        )
    )
    if applied is None:
        log.info("opt-in of %s at %s ignored: the customer chose again after it", phone, at.isoformat())
