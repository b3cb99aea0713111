"""Reachable again (issue 14): the customer texting us, opening a USSD session or acknowledging a call proves
the number works now. A contact made `inactive` by an SMS failure the policy table marks `clears_on_reach`
(a phone that was off: `AbsentSubscriber`) is `active` again, so the next cycle sends SMS, not a call; a
lasting failure (a deactivated subscriber, a DND block) keeps it `inactive`, reachable by call only.

Events are ordered by when the receiver got them, as consent is (shared/consent.py): `reached_at` only moves
forward, a proof older than the failure (`last_sms_at`, when its report came) does not clear it, and a
failure report older than the proof, drained after it, does not make the contact inactive again
(worker/ingest/dlr.py asks `failure_cleared`).
"""

from __future__ import annotations

import enum
import logging
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, or_, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from shared.models import Contact, ContactStatus
from shared.status_policy import Kind, values_clearing_on_reach

log = logging.getLogger(__name__)

_contacts = Contact.__table__


class ReachedBy(enum.StrEnum):
    SMS = "sms"  # an SMS from the customer (any text)
    USSD = "ussd"  # a USSD session they opened
    CALL = "call"  # a call of ours they acknowledged (pressed 1)


def clears(status: Any, reason: Any) -> ColumnElement[bool]:
    """SQL: an SMS that ended with this status and reason is a failure the customer gets over by proving
    reachable (`status_policy.clears_on_reach`, set-wise: the reason decides when there is one)."""
    return or_(
        and_(reason.is_not(None), reason.in_(values_clearing_on_reach(Kind.FAILURE))),
        and_(reason.is_(None), status.in_(values_clearing_on_reach(Kind.DLR))),
    )


def failure_cleared(at: datetime) -> ColumnElement[bool]:
    """SQL: the contact is inactive for a failure that a proof of reach at `at` clears, and that failure's
    report came no later than `at`."""
    c = _contacts.c
    return and_(
        c.status == ContactStatus.INACTIVE.value,
        clears(c.last_sms_status, c.last_failure_reason),
        or_(c.last_sms_at.is_(None), c.last_sms_at <= at),
    )


def mark_reached(session: Session, phone: str, at: datetime, by: ReachedBy) -> bool:
    """Record that the customer at `phone` proved reachable at `at`; an inactive contact whose last SMS failed
    transiently before that is active again. False when the number is no contact of ours."""
    c = _contacts.c
    newer = or_(c.reached_at.is_(None), c.reached_at < at)
    result = session.execute(
        update(_contacts)
        .where(c.phone == phone)
        .values(
            # Every SET reads the row as it was: the status check sees the old last_sms_at and status.
            reached_at=case((newer, at), else_=c.reached_at),
            reached_by=case((newer, by.value), else_=c.reached_by),
            status=case((failure_cleared(at), ContactStatus.ACTIVE.value), else_=c.status),
            updated_at=func.now(),
        )
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return False
    log.debug("contact reached by %s at %s", by.value, at.isoformat())
    return True
