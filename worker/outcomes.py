"""What AT's answer to a send means for the messages and the contacts: one function for both the cycle's
batches and the operator's one-off sends, written set-based (a few statements per batch, not per SMS)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import String, bindparam, func, update
from sqlalchemy.orm import Session

from shared import metrics
from shared.at_client import SmsRecipient
from shared.models import Contact, ContactStatus, Message
from shared.status_policy import Action, Kind, Rule, decide
from worker import fallback
from worker.ingest import CONTACT_STATUS_AFTER, UNREACHABLE

_messages = Message.__table__
_contacts = Contact.__table__


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Send:
    """One recipient of AT's answer and the message row (already written, `submitting`) it answers."""

    message_id: int
    contact_id: int
    recipient: SmsRecipient


def send_error(recipient: SmsRecipient, rule: Rule) -> str:
    return f"{recipient.status} ({recipient.status_code}): {rule.why}"


#: One executemany over the batch, sorted by id (concurrent writers lock rows in the same order). A
#: NULL parameter leaves the column as it was: `RETRY` and `PAUSE` rows keep their state for the caller.
_RECORD_MESSAGES = (
    update(_messages)
    .where(_messages.c.id == bindparam("m_id"))
    .values(
        send_status_code=bindparam("m_code"),
        send_status=bindparam("m_status"),
        cost=bindparam("m_cost"),
        currency=bindparam("m_currency"),
        send_state=func.coalesce(bindparam("m_state", type_=String), _messages.c.send_state),
        send_error=func.coalesce(bindparam("m_error", type_=String), _messages.c.send_error),
        at_message_id=func.coalesce(bindparam("m_at_id", type_=String), _messages.c.at_message_id),
    )
)


def record_sends(session: Session, sends: Sequence[Send]) -> list[Rule]:
    """Record AT's answer for a batch of recipients through the policy table; the rule of each, in order.

    Accepted: the message is sent and the contact pending on it. A permanent refusal: the message failed
    and the contact moves as the policy says. `RETRY` and `PAUSE` record the statusCode on the message and
    leave its state, the item and the contact for the caller. Statements per batch: one executemany for the
    messages, one UPDATE for the contacts now pending, one per other contact outcome present.
    """
    rules = [decide(Kind.SEND, s.recipient.status_code) for s in sends]
    counts = Counter(
        (metrics.bounded(s.recipient.status_code, Kind.SEND), r.action.value) for s, r in zip(sends, rules, strict=True)
    )
    for (code, action), amount in sorted(counts.items()):
        metrics.count_on_commit(session, "reach_sms_sends", amount, code=code, action=action)
    rows: list[dict[str, Any]] = []
    pending: list[tuple[int, int]] = []  # (contact, message)
    moved: dict[Action, list[int]] = defaultdict(list)
    for send, rule in zip(sends, rules, strict=True):
        recipient = send.recipient
        row = {
            "m_id": send.message_id,
            "m_code": recipient.status_code,
            "m_status": recipient.status,
            "m_cost": recipient.cost,
            "m_currency": recipient.currency,
            "m_state": None,
            "m_error": None,
            "m_at_id": None,
        }
        if rule.action is Action.ACCEPTED:
            row.update(m_state="sent", m_at_id=recipient.message_id)
            pending.append((send.contact_id, send.message_id))
        elif rule.action not in {Action.RETRY, Action.PAUSE}:
            row.update(m_state="failed", m_error=send_error(recipient, rule))
            moved[rule.action].append(send.contact_id)
        rows.append(row)
    if rows:
        session.execute(_RECORD_MESSAGES, sorted(rows, key=lambda r: r["m_id"]))
    mark_contacts_pending(session, pending)
    for action, contact_ids in moved.items():
        apply_contact_action(session, contact_ids, action)
    return rules


def record_recipient(session: Session, message: Message, recipient: SmsRecipient) -> Rule:
    """`record_sends` for one message (the operator's one-off send); `message` is reloaded afterwards."""
    session.flush()
    rule = record_sends(session, [Send(message.id, message.contact_id, recipient)])[0]
    session.expire(message)
    return rule


def mark_contacts_pending(session: Session, sent: Sequence[tuple[int, int]]) -> None:
    """Contacts whose SMS AT accepted wait for its report: pending on that message (an opt-out stays)."""
    if not sent:
        return
    # UPDATE … FROM messages (Postgres, SQLite ≥ 3.33): each contact takes its own message's id.
    session.execute(
        update(_contacts)
        .where(
            _contacts.c.id == _messages.c.contact_id,
            _messages.c.id.in_(sorted(message for _, message in sent)),
            _contacts.c.status != ContactStatus.OPTED_OUT.value,
        )
        .values(status=ContactStatus.PENDING.value, last_message_id=_messages.c.id, last_sms_at=now(), updated_at=now())
    )


def mark_contact_pending(session: Session, contact_id: int, message_id: int) -> None:
    mark_contacts_pending(session, [(contact_id, message_id)])


def apply_contact_action(session: Session, contact_ids: int | Sequence[int], action: Action) -> None:
    """Move contacts as a policy action says (invalid, opted out, inactive); an opt-out always stays."""
    target = CONTACT_STATUS_AFTER.get(action)
    ids = sorted([contact_ids] if isinstance(contact_ids, int) else contact_ids)
    if target is None or not ids:
        return
    values: dict[str, Any] = {"status": target.value, "updated_at": now()}
    if target is ContactStatus.OPTED_OUT:
        values["opted_out_at"] = now()
    session.execute(
        update(_contacts)
        .where(_contacts.c.id.in_(ids), _contacts.c.status != ContactStatus.OPTED_OUT.value)
        .values(**values)
    )
    if target.value in UNREACHABLE:
        fallback.cancel_pending(session, ids, f"the contact is {target.value}")
