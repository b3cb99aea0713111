"""What callbacks change on a contact: statuses after an outcome; the customer's opt-out and opt-in are
`shared.consent`'s (an operator's go through the same functions, so both order by time)."""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.consent import opt_in, opt_out
from shared.models import Contact, ContactStatus
from shared.status_policy import Action

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

__all__ = ["CONTACT_STATUS_AFTER", "UNREACHABLE", "find_contact_id", "opt_in", "opt_out"]


def find_contact_id(session: Session, phone: str | None) -> int | None:
    if not phone:
        return None
    return session.scalar(select(Contact.id).where(Contact.phone == phone))
