"""What AT's answer to one send means for the message and the contact: one function for both the
cycle's batches and the operator's one-off sends."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from shared import metrics
from shared.at_client import SmsRecipient
from shared.models import Contact, ContactStatus, Message
from shared.status_policy import Action, Kind, Rule, decide
from worker import fallback
from worker.ingest import CONTACT_STATUS_AFTER, UNREACHABLE


def now() -> datetime:
    return datetime.now(UTC)


def record_recipient(session: Session, message: Message, recipient: SmsRecipient) -> Rule:
    """Record AT's answer for one recipient through the policy table and return the rule applied.

    Accepted: the message is sent and the contact pending on it. A permanent refusal: the message failed
    and the contact moves as the policy says. `RETRY` and `PAUSE` leave both for the caller to handle.
    """
    rule = decide(Kind.SEND, recipient.status_code)
    metrics.count_on_commit(
        session, "reach_sms_sends", code=metrics.bounded(recipient.status_code, Kind.SEND), action=rule.action.value
    )
    message.send_status_code, message.send_status = recipient.status_code, recipient.status
    message.cost, message.currency = recipient.cost, recipient.currency
    if rule.action is Action.ACCEPTED:
        message.send_state, message.at_message_id = "sent", recipient.message_id
        mark_contact_pending(session, message.contact_id, message.id)
    elif rule.action not in {Action.RETRY, Action.PAUSE}:
        message.send_state = "failed"
        message.send_error = f"{recipient.status} ({recipient.status_code}): {rule.why}"
        apply_contact_action(session, message.contact_id, rule.action)
    return rule


def mark_contact_pending(session: Session, contact_id: int, message_id: int) -> None:
    session.execute(
        update(Contact)
        .where(Contact.id == contact_id, Contact.status != ContactStatus.OPTED_OUT)
        .values(status=ContactStatus.PENDING, last_message_id=message_id, last_sms_at=now(), updated_at=now())
    )


def apply_contact_action(session: Session, contact_id: int, action: Action) -> None:
    """Move a contact as a policy action says (invalid, opted out, inactive); an opt-out always stays."""
    target = CONTACT_STATUS_AFTER.get(action)
    if target is None:
        return
    values: dict[str, Any] = {"status": target, "updated_at": now()}
    if target is ContactStatus.OPTED_OUT:
        values["opted_out_at"] = now()
    session.execute(
        update(Contact).where(Contact.id == contact_id, Contact.status != ContactStatus.OPTED_OUT).values(**values)
    )
    if target.value in UNREACHABLE:
        fallback.cancel_pending(session, [contact_id], f"the contact is {target.value}")
