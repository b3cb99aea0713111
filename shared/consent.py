"""A contact's consent: opt-out and opt-in, by the customer (STOP, START, USSD) or by an operator (`PATCH`,
`reach contacts set`), ordered by when each was made, whoever made it.

`consent_at` holds the time of the change last applied and `consent_by` who made it; a change older than
that is ignored, so a STOP texted before an operator's opt-in (and drained after it) does not undo it, and
an operator's opt-out does not undo the START the customer texted after it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import case, func, or_, update
from sqlalchemy.orm import Session

from shared.cycle_items import pending_of_contacts
from shared.db import insert_for
from shared.models import Channel, Contact, ContactStatus, CycleItem, ItemState

log = logging.getLogger(__name__)

_contacts = Contact.__table__

#: `consent_by` of the customer's own changes.
BY_SMS_STOP, BY_SMS_START, BY_USSD = "customer: SMS STOP", "customer: SMS START", "customer: USSD"


def cancel_pending(session: Session, contact_ids: Sequence[int], why: str, channel: Channel | None = None) -> int:
    """Items not yet claimed for these contacts will not be sent (opt-out, invalid number, late delivery)."""
    if not contact_ids:
        return 0
    stmt = update(CycleItem).where(pending_of_contacts(session, contact_ids))
    if channel is not None:
        stmt = stmt.where(CycleItem.channel == channel)
    result = session.execute(stmt.values(state=ItemState.CANCELLED, error=why, updated_at=datetime.now(UTC)))
    return max(result.rowcount, 0)  # type: ignore[attr-defined]


def newer_than_consent(at: datetime) -> Any:
    """The update applies only to a contact whose consent last changed no later than `at`: a STOP, START or
    choice re-delivered after a newer one (a recovered batch, a late retry) is ignored."""
    consent = _contacts.c.consent_at
    return or_(consent.is_(None), consent <= at)


def opt_out(session: Session, phone: str, at: datetime, by: str = BY_SMS_STOP) -> bool:
    """Stop messaging `phone`: recorded even for a number we never messaged, so it stays stopped. Returns
    False when a newer consent change wins."""
    stmt = insert_for(session, Contact).values(
        phone=phone,
        status=ContactStatus.OPTED_OUT,
        opted_out_at=at,
        consent_at=at,
        consent_by=by,
        created_at=at,
        updated_at=at,
    )
    contact_id = session.scalar(
        stmt.on_conflict_do_update(
            index_elements=["phone"],
            set_={
                "status": ContactStatus.OPTED_OUT.value,
                "opted_out_at": func.coalesce(_contacts.c.opted_out_at, at),
                "consent_at": at,
                "consent_by": by,
                "updated_at": at,
            },
            where=newer_than_consent(at),
        ).returning(Contact.id)
    )
    if contact_id is None:
        log.info("opt-out at %s ignored: a newer consent change wins", at.isoformat())
        return False
    cancel_pending(session, [contact_id], f"opted out ({by})")
    return True


def opt_in(
    session: Session, phone: str, at: datetime, preference: Channel | None = None, by: str = BY_SMS_START
) -> bool:
    """Messages again: an opted-out contact becomes `new`, another keeps its status; a stranger is added.
    Returns False when a newer consent change wins."""
    values: dict[str, object] = {"updated_at": at, "consent_at": at, "consent_by": by}
    if preference is not None:
        values["channel_preference"] = preference.value
    status_col = _contacts.c.status
    stmt = insert_for(session, Contact).values(
        phone=phone,
        status=ContactStatus.NEW,
        channel_preference=preference,
        consent_at=at,
        consent_by=by,
        created_at=at,
        updated_at=at,
    )
    set_ = {
        **values,
        "status": case((status_col == ContactStatus.OPTED_OUT.value, ContactStatus.NEW.value), else_=status_col),
        "opted_out_at": None,
    }
    applied = session.scalar(
        stmt.on_conflict_do_update(index_elements=["phone"], set_=set_, where=newer_than_consent(at)).returning(
            Contact.id
        )
    )
    if applied is None:
        log.info("opt-in at %s ignored: a newer consent change wins", at.isoformat())
        return False
    return True
