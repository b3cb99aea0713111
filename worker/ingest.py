"""Applying queued AT callbacks to Postgres: plain functions, called by the drain task.

Each callback is applied exactly once: its raw row goes into `raw_callbacks` under the inbox id the
receiver gave it, and only callbacks whose raw row is new in this transaction are applied. Duplicates
that AT itself sends (a second post of the same report) are absorbed by each table's unique key.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import bindparam, case, func, select, text, update
from sqlalchemy.orm import Session

from shared import metrics, ussd
from shared.callbacks import (
    KINDS,
    Dlr,
    IncomingSms,
    UssdStep,
    VoiceEvent,
    parse,
    phone_or_raw,
    to_decimal,
    to_int,
)
from shared.db import greatest, insert_for
from shared.inbox import InboxItem
from shared.models import (
    Call,
    CallEvent,
    Channel,
    Contact,
    ContactStatus,
    DlrEvent,
    Message,
    RawCallback,
    UssdSession,
)
from shared.models import (
    IncomingSms as IncomingSmsRow,
)
from shared.status_policy import Action, Kind, decide, dlr_outcome, dlr_rank
from worker import fallback

log = logging.getLogger(__name__)

OPT_OUT_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "END", "CANCEL"})
OPT_IN_WORDS = frozenset({"START"})

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
_messages = Message.__table__


def apply_batch(session: Session, items: list[InboxItem]) -> Counter[str]:
    """Apply one drained batch in the caller's transaction; returns counts by kind (new ones only)."""
    fresh = record_raw(session, items)
    applied: Counter[str] = Counter()
    dlrs = [(item.received_at, parse(Dlr, item.data)) for item in fresh if item.kind == "dlr"]
    if dlrs:
        applied["dlr"] = apply_dlrs(session, dlrs)
    for item in fresh:
        if item.kind == "dlr":
            continue
        if item.kind not in _APPLY:
            log.warning("inbox item %s has unknown kind %r; kept in raw_callbacks only", item.id, item.kind)
            continue
        _APPLY[item.kind](session, item.received_at, parse(KINDS[item.kind], item.data))
        applied[item.kind] += 1
    return applied


#: Batch writes on Postgres pass one array per column to a short, fixed statement over unnest(): psycopg then
#: caches and prepares it, where a multi-row VALUES of ~3,500 placeholders per batch was re-parsed by psycopg
#: every time (a fifth of the drain's CPU, py-spy in bench/RESULTS.md "DLR apply"). SQLite (embedded mode)
#: passes the rows as executemany parameters to one cached `insert(table)` on the Core table, which SQLAlchemy
#: pages as multi-row VALUES (insertmanyvalues) with RETURNING.

RECORD_RAW = text(
    """
    INSERT INTO raw_callbacks (inbox_id, kind, received_at, payload)
    SELECT inbox_id, kind, received_at, CAST(payload AS jsonb)
    FROM unnest(CAST(:inbox_id AS text[]), CAST(:kind AS text[]), CAST(:received_at AS timestamptz[]),
                CAST(:payload AS text[])) AS t(inbox_id, kind, received_at, payload)
    ON CONFLICT (inbox_id) DO NOTHING
    RETURNING inbox_id
    """
)

INSERT_DLR_EVENTS = text(
    """
    INSERT INTO dlr_events (at_message_id, status, failure_reason, phone, network_code, retry_count, received_at)
    SELECT * FROM unnest(CAST(:at_message_id AS text[]), CAST(:status AS text[]), CAST(:failure_reason AS text[]),
                         CAST(:phone AS text[]), CAST(:network_code AS text[]), CAST(:retry_count AS int[]),
                         CAST(:received_at AS timestamptz[]))
    ON CONFLICT (at_message_id, status) DO NOTHING
    RETURNING at_message_id, status, failure_reason
    """
)


def record_raw(session: Session, items: list[InboxItem]) -> list[InboxItem]:
    """Keep every callback verbatim; returns the items not recorded before (in their original order)."""
    if not items:
        return []
    rows = [
        {"inbox_id": item.id, "kind": item.kind, "received_at": item.received_at, "payload": item.data}
        for item in items
    ]
    if _is_postgres(session):
        for row in rows:
            row["payload"] = json.dumps(row["payload"])
        new_ids = set(session.scalars(RECORD_RAW, _columns(rows)))
    else:
        table = RawCallback.__table__
        stmt = (
            insert_for(session, table).on_conflict_do_nothing(index_elements=["inbox_id"]).returning(table.c.inbox_id)
        )
        new_ids = set(session.scalars(stmt, rows))
    if len(new_ids) < len(items):
        log.info("skipped %d callbacks already applied", len(items) - len(new_ids))
    return [item for item in items if item.id in new_ids]


# -- delivery reports ---------------------------------------------------------------------------------------


def apply_dlrs(session: Session, reports: Iterable[tuple[datetime, Dlr]]) -> int:
    """Store new delivery reports and apply them to messages that exist; returns how many were new."""
    rows = [
        {
            "at_message_id": dlr.id,
            "status": dlr.status,
            "failure_reason": dlr.failure_reason or None,
            "phone": phone_or_raw(dlr.phone_number),
            "network_code": dlr.network_code or None,
            "retry_count": to_int(dlr.retry_count),
            "received_at": received_at,
        }
        for received_at, dlr in reports
    ]
    if not rows:
        return 0
    if _is_postgres(session):
        new_rows = session.execute(INSERT_DLR_EVENTS, _columns(rows)).all()
    else:
        table = DlrEvent.__table__
        stmt = (
            insert_for(session, table)
            .on_conflict_do_nothing(index_elements=["at_message_id", "status"])
            .returning(table.c.at_message_id, table.c.status, table.c.failure_reason)
        )
        new_rows = session.execute(stmt, rows).all()
    new_ids = {row.at_message_id for row in new_rows}
    for (status, reason), count in Counter((row.status, row.failure_reason) for row in new_rows).items():
        metrics.count_on_commit(
            session,
            "reach_sms_delivery_reports",
            count,
            status=metrics.bounded(status, Kind.DLR),
            failure_reason=metrics.bounded(reason, Kind.FAILURE),
        )
    if new_ids:
        apply_pending_dlrs(session, new_ids)
    return len(new_ids)


@dataclass(frozen=True)
class _Best:
    message_id: int
    status: str
    rank: int
    failure_reason: str | None
    network_code: str | None
    at: datetime


def apply_pending_dlrs(session: Session, at_message_ids: Collection[str] | None = None, limit: int = 5000) -> int:
    """Apply stored reports whose message now exists: forward-only, then the contact. Returns messages moved.

    Called for each drained batch, by the send path once it has recorded AT's message ids (a report may
    arrive first), and by housekeeping for the case where both committed at the same moment.
    """
    query = (
        select(
            DlrEvent.id,
            Message.id,
            DlrEvent.status,
            DlrEvent.failure_reason,
            DlrEvent.network_code,
            DlrEvent.received_at,
        )
        .join(Message, Message.at_message_id == DlrEvent.at_message_id)
        .where(DlrEvent.applied_at.is_(None))
    )
    query = query.where(DlrEvent.at_message_id.in_(at_message_ids)) if at_message_ids else query.limit(limit)
    events = session.execute(query).all()
    if not events:
        return 0
    best: dict[int, _Best] = {}
    for _event_id, message_id, status, reason, network, received_at in events:
        candidate = _Best(message_id, status, dlr_rank(status), reason, network, received_at)
        current = best.get(message_id)
        if current is None or (candidate.rank, candidate.status) > (current.rank, current.status):
            best[message_id] = candidate
    moved = _advance_messages(session, [b for b in best.values() if b.rank > 0])
    _update_contacts_from_messages(session, sorted(best))
    now = datetime.now(UTC)
    event_ids = [row[0] for row in events]
    session.execute(update(DlrEvent).where(DlrEvent.id.in_(event_ids)).values(applied_at=now))
    return moved


#: On Postgres the two per-row UPDATEs of a batch (messages, then their contacts) are one statement each over
#: arrays: an executemany sent one UPDATE per row (~1,000 statements per 500 reports). Same SET and WHERE as
#: the SQLAlchemy statements below, which SQLite (embedded mode) keeps. Rows are locked in the join's order;
#: a deadlock between two drainers is an OperationalError, so the batch goes back and is applied again.
ADVANCE_MESSAGES = text(
    """
    UPDATE messages AS m
    SET status = b.status, status_rank = b.rank, failure_reason = b.reason,
        network_code = coalesce(b.network, m.network_code), status_at = b.at
    FROM unnest(CAST(:b_id AS bigint[]), CAST(:b_status AS text[]), CAST(:b_rank AS int[]),
                CAST(:b_reason AS text[]), CAST(:b_network AS text[]), CAST(:b_at AS timestamptz[]))
         AS b(id, status, rank, reason, network, at)
    WHERE m.id = b.id AND m.status_rank < b.rank
    """
)

UPDATE_CONTACTS = text(
    """
    UPDATE contacts AS c
    SET status = CASE
            WHEN c.status = 'opted_out' THEN c.status
            WHEN c.status = 'invalid' AND u.target = 'inactive' THEN c.status
            ELSE coalesce(u.target, c.status)
        END,
        last_sms_status = u.status, last_failure_reason = u.reason,
        last_network_code = coalesce(u.network, c.last_network_code), last_sms_at = u.at, updated_at = now()
    FROM unnest(CAST(:c_id AS bigint[]), CAST(:c_message AS bigint[]), CAST(:c_target AS text[]),
                CAST(:c_status AS text[]), CAST(:c_reason AS text[]), CAST(:c_network AS text[]),
                CAST(:c_at AS timestamptz[]))
         AS u(id, message_id, target, status, reason, network, at)
    WHERE c.id = u.id AND c.last_message_id = u.message_id
    """
)


def _is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _columns(rows: list[dict[str, object]], prefix: str = "") -> dict[str, list[object]]:
    """Rows of parameters as one array per column (for the unnest statements)."""
    return {key: [row[key] for row in rows] for key in rows[0] if key.startswith(prefix)}


def _advance_messages(session: Session, best: list[_Best]) -> int:
    if not best:
        return 0
    # Sorted by id so concurrent drainers lock rows in the same order (no deadlock).
    params = [
        {
            "b_id": b.message_id,
            "b_status": b.status,
            "b_rank": b.rank,
            "b_reason": b.failure_reason if decide(Kind.DLR, b.status).action is not Action.DELIVERED else None,
            "b_network": b.network_code,
            "b_at": b.at,
        }
        for b in sorted(best, key=lambda b: b.message_id)
    ]
    stmt = (
        update(_messages)
        .where(_messages.c.id == bindparam("b_id"), _messages.c.status_rank < bindparam("b_rank"))
        .values(
            status=bindparam("b_status"),
            status_rank=bindparam("b_rank"),
            failure_reason=bindparam("b_reason"),
            network_code=func.coalesce(bindparam("b_network"), _messages.c.network_code),
            status_at=bindparam("b_at"),
        )
    )
    if _is_postgres(session):
        result = session.execute(ADVANCE_MESSAGES, _columns(params, "b_"))
    else:
        result = session.execute(stmt, params)
    return max(result.rowcount, 0)


def _update_contacts_from_messages(session: Session, message_ids: list[int]) -> None:
    """Contacts follow the status of their *last* SMS, read back after the forward-only update."""
    rows = session.execute(
        select(
            Contact.id,
            Message.id,
            Message.status,
            Message.failure_reason,
            Message.network_code,
            Message.status_at,
        )
        .join(Contact, Contact.last_message_id == Message.id)
        .where(Message.id.in_(message_ids), Message.status.is_not(None))
        .order_by(Contact.id)
    ).all()
    params = []
    for contact_id, message_id, status, reason, network, status_at in rows:
        target = CONTACT_STATUS_AFTER.get(dlr_outcome(status, reason))
        params.append(
            {
                "c_id": contact_id,
                "c_message": message_id,
                "c_target": target.value if target else None,
                "c_status": status,
                "c_reason": reason,
                "c_network": network,
                "c_at": status_at,
            }
        )
    if not params:
        return
    delivered = [p["c_id"] for p in params if p["c_target"] == ContactStatus.ACTIVE.value]
    fallback.cancel_fallback_calls(session, delivered)
    unreachable = [p["c_id"] for p in params if p["c_target"] in UNREACHABLE]
    fallback.cancel_pending(session, unreachable, "the contact can no longer be reached")
    status_col = _contacts.c.status
    stmt = (
        update(_contacts)
        .where(_contacts.c.id == bindparam("c_id"), _contacts.c.last_message_id == bindparam("c_message"))
        .values(
            # An opt-out is the customer's word: no delivery report overrides it. A number a call found
            # unallocated stays invalid when a failure report for the SMS before it arrives late (only a
            # handset receipt, `Success`, outranks that): else the order of arrival would decide.
            status=case(
                (status_col == ContactStatus.OPTED_OUT.value, status_col),
                (
                    (status_col == ContactStatus.INVALID.value)
                    & (bindparam("c_target") == ContactStatus.INACTIVE.value),
                    status_col,
                ),
                else_=func.coalesce(bindparam("c_target"), status_col),
            ),
            last_sms_status=bindparam("c_status"),
            last_failure_reason=bindparam("c_reason"),
            last_network_code=func.coalesce(bindparam("c_network"), _contacts.c.last_network_code),
            last_sms_at=bindparam("c_at"),
            updated_at=func.now(),
        )
    )
    if _is_postgres(session):
        session.execute(UPDATE_CONTACTS, _columns(params, "c_"))
    else:
        session.execute(stmt, params)


# -- contacts touched by the customer ------------------------------------------------------------------------


def find_contact_id(session: Session, phone: str | None) -> int | None:
    if not phone:
        return None
    return session.scalar(select(Contact.id).where(Contact.phone == phone))


def opt_out(session: Session, phone: str, at: datetime) -> None:
    """The customer asked to stop: recorded even for a number we never messaged, so it stays stopped."""
    stmt = insert_for(session, Contact).values(
        phone=phone, status=ContactStatus.OPTED_OUT, opted_out_at=at, created_at=at, updated_at=at
    )
    contact_id = session.scalar(
        stmt.on_conflict_do_update(
            index_elements=["phone"],
            set_={
                "status": ContactStatus.OPTED_OUT.value,
                "opted_out_at": func.coalesce(_contacts.c.opted_out_at, at),
                "updated_at": at,
            },
        ).returning(Contact.id)
    )
    fallback.cancel_pending(session, [contact_id], "the customer opted out")


def opt_in(session: Session, phone: str, at: datetime, preference: Channel | None = None) -> None:
    """The customer asked for messages: an opted-out contact becomes `new`; a stranger is added."""
    values: dict[str, object] = {"updated_at": at}
    if preference is not None:
        values["channel_preference"] = preference.value
    status_col = _contacts.c.status
    stmt = insert_for(session, Contact).values(
        phone=phone, status=ContactStatus.NEW, channel_preference=preference, created_at=at, updated_at=at
    )
    set_ = {
        **values,
        "status": case((status_col == ContactStatus.OPTED_OUT.value, ContactStatus.NEW.value), else_=status_col),
        "opted_out_at": None,
    }
    session.execute(stmt.on_conflict_do_update(index_elements=["phone"], set_=set_))


# -- incoming SMS -------------------------------------------------------------------------------------------


def apply_incoming_sms(session: Session, received_at: datetime, sms: IncomingSms) -> None:
    phone = phone_or_raw(sms.from_) or sms.from_
    text = sms.text or ""
    words = text.split()
    word = words[0].upper().strip(".!") if words else ""
    keyword = word if word in OPT_OUT_WORDS | OPT_IN_WORDS else None
    stmt = (
        insert_for(session, IncomingSmsRow)
        .values(
            at_id=sms.id,
            from_phone=phone,
            to=sms.to,
            text=text,
            link_id=sms.link_id,
            network_code=sms.network_code,
            sent_date=sms.date,
            keyword=keyword,
            contact_id=find_contact_id(session, phone),
            received_at=received_at,
        )
        .on_conflict_do_nothing(index_elements=["at_id"])
        .returning(IncomingSmsRow.id)
    )
    if session.scalar(stmt) is None:
        return  # AT posted it twice
    if keyword in OPT_OUT_WORDS:
        opt_out(session, phone, received_at)
        log.info("contact %s opted out by SMS (%s)", phone, keyword)
    elif keyword in OPT_IN_WORDS and find_contact_id(session, phone) is not None:
        opt_in(session, phone, received_at)
        log.info("contact %s opted back in by SMS", phone)


# -- voice --------------------------------------------------------------------------------------------------


def apply_voice_event(session: Session, received_at: datetime, event: VoiceEvent) -> None:
    inserted = session.scalar(
        insert_for(session, CallEvent)
        .values(
            session_id=event.session_id,
            event_key=event.event_key,
            is_active=event.live,
            call_session_state=event.call_session_state,
            status=event.status,
            hangup_cause=event.hangup_cause,
            dtmf_digits=event.dtmf_digits,
            received_at=received_at,
        )
        .on_conflict_do_nothing(index_elements=["session_id", "event_key"])
        .returning(CallEvent.id)
    )
    if inserted is None:
        return  # the same step posted twice
    call = _lock_call(session, event, received_at)
    if event.dtmf_digits:
        call.dtmf_digits = event.dtmf_digits
        call.acknowledged = call.acknowledged or event.dtmf_digits.strip() == "1"
    if event.live:
        if call.ended_at is None:
            call.call_session_state = event.call_session_state or "Active"
        return
    _finish_call(session, call, event, received_at)


def _lock_call(session: Session, event: VoiceEvent, at: datetime) -> Call:
    """The call row for this session, created for calls we did not place (inbound) and locked."""
    phone = phone_or_raw(event.caller_number) or ""
    # AT may call back before `/call` has answered us: adopt our own call to this number still in flight.
    session.execute(
        update(Call)
        .where(
            Call.id
            == select(Call.id)
            .where(Call.phone == phone, Call.session_id.is_(None), Call.send_state == "submitting")
            .order_by(Call.id.desc())
            .limit(1)
            .scalar_subquery(),
            ~select(Call.id).where(Call.session_id == event.session_id).exists(),
        )
        .values(session_id=event.session_id)
    )
    session.execute(
        insert_for(session, Call)
        .values(
            session_id=event.session_id,
            phone=phone,
            direction=event.direction or "Inbound",
            contact_id=find_contact_id(session, phone),
            created_at=at,
        )
        .on_conflict_do_nothing(index_elements=["session_id"])
    )
    return session.scalars(select(Call).where(Call.session_id == event.session_id).with_for_update()).one()


def _finish_call(session: Session, call: Call, event: VoiceEvent, at: datetime) -> None:
    outcome = call_outcome(event)
    call.status = event.status
    call.call_session_state = event.call_session_state
    call.hangup_cause = event.hangup_cause
    call.duration_seconds = to_int(event.duration_in_seconds)
    call.amount = to_decimal(event.amount)
    call.currency = event.currency_code or None
    call.recording_url = event.recording_url or None
    call.outcome = outcome.value
    call.ended_at = at
    metrics.count_on_commit(
        session,
        "reach_calls_ended",
        hangup_cause=metrics.bounded(event.hangup_cause, Kind.HANGUP),
        outcome=outcome.value,
    )
    fallback.after_call_ended(session, call, outcome)
    if call.contact_id is None:
        return
    target = CONTACT_STATUS_AFTER.get(outcome) if outcome is Action.INVALID else None
    if target is not None:
        fallback.cancel_pending(session, [call.contact_id], "the number does not exist")
    status_col = _contacts.c.status
    session.execute(
        update(_contacts)
        .where(_contacts.c.id == call.contact_id)
        .values(
            last_call_status=event.status,
            last_hangup_cause=event.hangup_cause,
            last_call_at=at,
            status=case(
                (status_col == ContactStatus.OPTED_OUT.value, status_col),
                else_=func.coalesce(target.value if target else None, status_col),
            ),
            updated_at=func.now(),
        )
    )


def call_outcome(event: VoiceEvent) -> Action:
    """What a final voice callback means, through the policy table."""
    if event.hangup_cause:
        return decide(Kind.HANGUP, event.hangup_cause).action
    if (event.status or "") == "Success":
        return Action.ANSWERED
    return decide(Kind.HANGUP, None).action


# -- USSD ---------------------------------------------------------------------------------------------------


def apply_ussd_step(session: Session, received_at: datetime, step: UssdStep) -> None:
    phone = phone_or_raw(step.phone_number) or step.phone_number
    screen = ussd.step(step.text)
    text = step.text or ""
    outcome = screen.effect.value if screen.effect not in {ussd.Effect.NONE, ussd.Effect.SHOW_STATUS} else None
    stmt = insert_for(session, UssdSession).values(
        session_id=step.session_id,
        phone=phone,
        service_code=step.service_code,
        network_code=step.network_code,
        last_text=text,
        outcome=outcome,
        started_at=received_at,
        updated_at=received_at,
    )
    # Steps may arrive out of order: keep the longest input and the first effect.
    table = UssdSession.__table__
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=["session_id"],
            set_={
                "last_text": case(
                    (func.length(stmt.excluded.last_text) > func.length(table.c.last_text), stmt.excluded.last_text),
                    else_=table.c.last_text,
                ),
                "outcome": func.coalesce(table.c.outcome, stmt.excluded.outcome),
                "updated_at": greatest(session, table.c.updated_at, stmt.excluded.updated_at),
            },
        )
    )
    match screen.effect:
        case ussd.Effect.PREFER_SMS:
            opt_in(session, phone, received_at, Channel.SMS)
        case ussd.Effect.PREFER_VOICE:
            opt_in(session, phone, received_at, Channel.VOICE)
        case ussd.Effect.OPT_OUT:
            opt_out(session, phone, received_at)


_APPLY = {"sms": apply_incoming_sms, "voice": apply_voice_event, "ussd": apply_ussd_step}
