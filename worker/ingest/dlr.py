"""SMS delivery reports: stored once per (id, status), applied forward-only to their message, then its contact."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, case, func, select, update
from sqlalchemy.orm import Session

from shared import cycle_items, incidents, metrics
from shared.callbacks import (
    Dlr,
    phone_or_raw,
    to_int,
)
from shared.db import insert_for
from shared.models import (
    Channel,
    Contact,
    ContactStatus,
    DlrEvent,
    ItemState,
    Message,
)
from shared.settings import get_settings
from shared.status_policy import Action, Kind, clears_on_reach, decide, dlr_outcome, dlr_rank
from worker import fallback
from worker.ingest.batch_sql import as_columns, fetch, is_postgres
from worker.ingest.contacts import CONTACT_STATUS_AFTER, UNREACHABLE

log = logging.getLogger(__name__)

_contacts = Contact.__table__
#: Why a contact's items not yet claimed are cancelled when a report shows the number cannot be reached.
CANNOT_REACH = "the contact can no longer be reached"
_messages = Message.__table__
#: An unapplied report as `apply_pending_events` takes it: event id, message id, status, failure reason,
#: network code, received at.
PendingEvent = tuple[int, int, str, str | None, str | None, datetime]
#: A contact and its last SMS after the update: contact id, message id, status, failure reason, network, at.
ContactRow = tuple[int, int, str, str | None, str | None, datetime]


def event_values(dlr: Dlr) -> tuple[str, str, str | None, str | None, str | None, int | None]:
    """A report as `dlr_events` stores it: at_message_id, status, failure_reason, phone, network_code,
    retry_count (the staging table's columns too, worker/ingest/staging.py)."""
    return (
        dlr.id,
        dlr.status,
        dlr.failure_reason or None,
        phone_or_raw(dlr.phone_number),
        dlr.network_code or None,
        to_int(dlr.retry_count),
    )


_EVENT_COLUMNS = ("at_message_id", "status", "failure_reason", "phone", "network_code", "retry_count")


def apply_dlrs(session: Session, reports: Iterable[tuple[datetime, Dlr]]) -> int:
    """Store new delivery reports and apply them to messages that exist; returns how many were new. (The drain on
    Postgres stores them with its COPY instead: worker/ingest/staging.py.)"""
    rows = [
        {**dict(zip(_EVENT_COLUMNS, event_values(dlr), strict=True)), "received_at": received_at}
        for received_at, dlr in reports
    ]
    if not rows:
        return 0
    table = DlrEvent.__table__
    stmt = (
        insert_for(session, table)
        .on_conflict_do_nothing(index_elements=["at_message_id", "status"])
        .returning(table.c.at_message_id, table.c.status, table.c.failure_reason)
    )
    new_rows = session.execute(stmt, rows).all()
    new_ids = count_new_reports(session, [tuple(row) for row in new_rows])
    if new_ids:
        apply_pending_dlrs(session, new_ids)
    return len(new_ids)


def count_new_reports(session: Session, new_reports: list[tuple[str, str, str | None]]) -> set[str]:
    """Count newly stored reports (at_message_id, status, failure_reason) into the metrics once the transaction
    commits; returns their message ids."""
    for (status, reason), count in Counter((status, reason) for _id, status, reason in new_reports).items():
        metrics.count_on_commit(
            session,
            "reach_sms_delivery_reports",
            count,
            status=metrics.bounded(status, Kind.DLR),
            failure_reason=metrics.bounded(reason, Kind.FAILURE),
        )
    return {at_message_id for at_message_id, _status, _reason in new_reports}


@dataclass(frozen=True)
class _Best:
    message_id: int
    status: str
    rank: int
    failure_reason: str | None
    network_code: str | None
    at: datetime


def rescan_since() -> datetime:
    """Reports received before this that still match no message are given up on (UNMATCHED_DLR_HOURS)."""
    return datetime.now(UTC) - timedelta(hours=get_settings().unmatched_dlr_hours)


def apply_pending_dlrs(session: Session, at_message_ids: Collection[str] | None = None, limit: int = 5000) -> int:
    """Apply stored reports whose message now exists: forward-only, then the contact. Returns messages moved.

    Called for each drained batch, by the send path once it has recorded AT's message ids (a report may
    arrive first), and by housekeeping (no ids) for the case where both committed at the same moment: that
    rescan reads only reports from the last UNMATCHED_DLR_HOURS (`ix_dlr_events_unapplied_received`).
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
    if at_message_ids:
        query = query.where(DlrEvent.at_message_id.in_(at_message_ids))
    else:  # the rescan: reports older than UNMATCHED_DLR_HOURS are kept for audit, not looked at again
        query = query.where(DlrEvent.received_at >= rescan_since()).limit(limit)
    return apply_pending_events(session, [tuple(row) for row in session.execute(query)])


def apply_pending_events(session: Session, events: list[PendingEvent], unmarked: list[int] | None = None) -> int:
    """Apply stored, unapplied reports (event id, message id, status, failure reason, network, received at) to
    their messages, forward-only, then to the contacts and fallbacks; mark them applied (only those of `unmarked`
    when given: the drain stores new ones applied). Returns messages moved."""
    if not events:
        return 0
    best: dict[int, _Best] = {}
    for _event_id, message_id, status, reason, network, received_at in events:
        candidate = _Best(message_id, status, dlr_rank(status), reason, network, received_at)
        current = best.get(message_id)
        if current is None or (candidate.rank, candidate.status) > (current.rank, current.status):
            best[message_id] = candidate
    advancing = [b for b in best.values() if b.rank > 0]
    event_ids = [row[0] for row in events] if unmarked is None else unmarked
    if is_postgres(session):
        advanced = _advance_and_read_contacts(session, advancing, sorted(best), event_ids)
        _update_contacts(session, advanced.contacts, maybe_held=advanced.incident_open)
        if advanced.fallback_waits:
            fallback.after_reports(session, sorted(best))
        return advanced.moved
    moved = _advance_messages(session, advancing)
    apply_held_reports(session, sorted(best))
    if event_ids:
        session.execute(update(DlrEvent).where(DlrEvent.id.in_(event_ids)).values(applied_at=datetime.now(UTC)))
    return moved


#: On Postgres the per-row UPDATE of contacts is one statement over arrays: an executemany sent one UPDATE per
#: row. Same SET and WHERE as the SQLAlchemy statement in `_update_contacts`, which SQLite (embedded mode)
#: keeps. Rows are locked in the join's order; a deadlock between two drainers is an OperationalError, so the
#: batch goes back and is applied again. The same statement cancels what the reports make pointless, as
#: `fallback.cancel_fallback_calls` (delivered: its voice items not yet claimed) and `consent.cancel_pending`
#: (unreachable: all its items not yet claimed) do on SQLite: two ORM statements a batch were a sixth of the
#: drain's time end to end (py-spy, bench/RESULTS.md "drain batches end to end"). A contact is in one list or
#: the other, never both, so the two never touch the same row. A contact's pending items are looked for only in the
#: cycles that may still send, through the unique (cycle_id, contact_id) (shared/cycle_items.py): not among every
#: item the contact ever had.
UPDATE_CONTACTS = """
    WITH delivered AS (
        UPDATE cycle_items SET state = %(cancelled)s, error = %(delivered_why)s, updated_at = %(now)s
        WHERE {may_send} AND contact_id = ANY(CAST(%(delivered)b AS bigint[]))
            AND state = %(pending)s AND channel = %(voice)s
    ),
    unreachable AS (
        UPDATE cycle_items SET state = %(cancelled)s, error = %(unreachable_why)s, updated_at = %(now)s
        WHERE {may_send} AND contact_id = ANY(CAST(%(unreachable)b AS bigint[])) AND state = %(pending)s
    )
    UPDATE contacts AS c
    SET status = CASE
            WHEN c.status = 'opted_out' THEN c.status
            WHEN c.status = 'invalid' AND u.target = 'inactive' THEN c.status
            WHEN u.target = 'inactive' AND u.clears AND c.reached_at > u.at THEN 'active'
            ELSE coalesce(u.target, c.status)
        END,
        last_sms_status = u.status, last_failure_reason = u.reason,
        last_network_code = coalesce(u.network, c.last_network_code), last_sms_at = u.at, updated_at = now()
    FROM unnest(CAST(%(c_id)b AS bigint[]), CAST(%(c_message)b AS bigint[]), CAST(%(c_target)b AS text[]),
                CAST(%(c_status)b AS text[]), CAST(%(c_reason)b AS text[]), CAST(%(c_network)b AS text[]),
                CAST(%(c_at)b AS timestamptz[]), CAST(%(c_clears)b AS boolean[]))
         AS u(id, message_id, target, status, reason, network, at, clears)
    WHERE c.id = u.id AND c.last_message_id = u.message_id
    """.replace("{may_send}", cycle_items.in_cycles_that_may_send_sql())


#: On Postgres, the messages' forward-only move, marking the reports applied and reading back what the contacts
#: follow are one statement (they were three round trips). Its SELECT sees the messages as they were before the
#: statement, so a message it moved is read from the UPDATE's RETURNING, the others from the table: the same rows
#: `_contact_rows` reads after the UPDATE. (Not one LEFT JOIN of the moved rows: planned for the 10 rows unnest()
#: is estimated at, it scanned them once per message, 250,000 comparisons a batch of 500.) The count of moved
#: messages comes on every row, and on a row of its own when no contact follows any of these messages; with it,
#: whether a carrier incident holds reports (`incidents.holding` is read only then) and whether a cycle item of
#: these messages waits for a fallback (`fallback.after_reports` runs only then): two reads a batch that
#: nearly always find nothing, one round trip and ORM query each.
ADVANCE_AND_READ_CONTACTS = """
    WITH moved AS (
        UPDATE messages AS m
        SET status = b.status, status_rank = b.rank, failure_reason = b.reason,
            network_code = coalesce(b.network, m.network_code), status_at = b.at
        FROM unnest(CAST(%(b_id)b AS bigint[]), CAST(%(b_status)b AS text[]), CAST(%(b_rank)b AS int[]),
                    CAST(%(b_reason)b AS text[]), CAST(%(b_network)b AS text[]), CAST(%(b_at)b AS timestamptz[]))
             AS b(id, status, rank, reason, network, at)
        WHERE m.id = b.id AND m.status_rank < b.rank
        RETURNING m.id, m.status, m.failure_reason, m.network_code, m.status_at
    ),
    applied AS (
        UPDATE dlr_events SET applied_at = %(now)s WHERE id = ANY(CAST(%(event_ids)b AS bigint[]))
    ),
    followed AS (
        SELECT c.id AS contact_id, v.id AS message_id, v.status, v.failure_reason, v.network_code, v.status_at
        FROM moved AS v JOIN contacts AS c ON c.last_message_id = v.id
        UNION ALL
        SELECT c.id, m.id, m.status, m.failure_reason, m.network_code, m.status_at
        FROM messages AS m JOIN contacts AS c ON c.last_message_id = m.id
        WHERE m.id = ANY(CAST(%(message_ids)b AS bigint[])) AND m.id NOT IN (SELECT id FROM moved)
    )
    SELECT n.moved, n.incident_open, n.fallback_waits,
           f.contact_id, f.message_id, f.status, f.failure_reason, f.network_code, f.status_at
    FROM (
        SELECT (SELECT count(*) FROM moved) AS moved,
               EXISTS (SELECT 1 FROM network_incidents WHERE applied_at IS NULL) AS incident_open,
               EXISTS (
                   SELECT 1 FROM messages AS m
                   JOIN cycle_items AS ci ON ci.id = m.cycle_item_id AND ci.message_id = m.id
                   WHERE m.id = ANY(CAST(%(message_ids)b AS bigint[])) AND ci.fallback_at IS NOT NULL
               ) AS fallback_waits
    ) AS n
    LEFT JOIN followed AS f ON f.status IS NOT NULL
    ORDER BY f.contact_id
    """


@dataclass(frozen=True)
class _Advanced:
    """What ADVANCE_AND_READ_CONTACTS did and read."""

    moved: int
    incident_open: bool
    fallback_waits: bool
    contacts: list[ContactRow]


def _advance_and_read_contacts(
    session: Session, best: list[_Best], message_ids: list[int], event_ids: list[int]
) -> _Advanced:
    params = _advance_params(best)
    rows = fetch(
        session,
        ADVANCE_AND_READ_CONTACTS,
        {
            **{key: [p[key] for p in params] for key in _ADVANCE_KEYS},
            "now": datetime.now(UTC),
            "event_ids": event_ids,
            "message_ids": message_ids,
        },
    )
    first = rows[0]
    return _Advanced(int(first[0]), first[1], first[2], [row[3:] for row in rows if row[3] is not None])


_ADVANCE_KEYS = ("b_id", "b_status", "b_rank", "b_reason", "b_network", "b_at")


def _advance_params(best: list[_Best]) -> list[dict[str, object]]:
    # Sorted by id so concurrent drainers lock rows in the same order (no deadlock).
    return [
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


def _advance_messages(session: Session, best: list[_Best]) -> int:
    """SQLite's forward-only move (Postgres': ADVANCE_AND_READ_CONTACTS)."""
    if not best:
        return 0
    params = _advance_params(best)
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
    return max(session.execute(stmt, params).rowcount, 0)  # type: ignore[attr-defined]


def apply_held_reports(session: Session, message_ids: list[int]) -> None:
    """What the messages' reports mean for their contacts, then for same-cycle fallbacks (stop, call now, or
    keep waiting); also how a carrier incident's held reports are applied once it ended (shared/incidents.py)."""
    _update_contacts_from_messages(session, message_ids)
    fallback.after_reports(session, message_ids)


def _update_contacts_from_messages(session: Session, message_ids: list[int]) -> None:
    _update_contacts(session, _contact_rows(session, message_ids))


def _contact_rows(session: Session, message_ids: list[int]) -> list[ContactRow]:
    """The contacts whose last SMS is one of these, with its status read back after the forward-only update."""
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
    )
    return [tuple(row) for row in rows]


def _update_contacts(session: Session, rows: list[ContactRow], maybe_held: bool = True) -> None:
    """Contacts follow the status of their *last* SMS (`rows` as `_contact_rows` reads them). A downgrade to
    `inactive` from a network in a carrier incident waits for its end (shared/incidents.py); `maybe_held` False
    when the caller knows no incident holds reports."""
    params = []
    held = incidents.holding(session) if rows and maybe_held else []
    for contact_id, message_id, status, reason, network, status_at in rows:
        target = CONTACT_STATUS_AFTER.get(dlr_outcome(status, reason))
        if held and incidents.defers(held, target, network, status_at):
            target = None  # the contact stays as it was; the report is kept on the message
        params.append(
            {
                "c_id": contact_id,
                "c_message": message_id,
                "c_target": target.value if target else None,
                "c_status": status,
                "c_reason": reason,
                "c_network": network,
                "c_at": status_at,
                # A transient failure reported before the customer last proved reachable does not make
                # them inactive again (shared/reachability.py).
                "c_clears": target is ContactStatus.INACTIVE and clears_on_reach(status, reason),
            }
        )
    if not params:
        return
    delivered = [p["c_id"] for p in params if p["c_target"] == ContactStatus.ACTIVE.value]
    unreachable = [p["c_id"] for p in params if p["c_target"] in UNREACHABLE]
    if is_postgres(session):
        fetch(session, UPDATE_CONTACTS, {**as_columns(params, "c_"), **_cancel_params(delivered, unreachable)})
        return
    fallback.cancel_fallback_calls(session, delivered)
    fallback.cancel_pending(session, unreachable, CANNOT_REACH)
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
                (
                    bindparam("c_clears") & (_contacts.c.reached_at > bindparam("c_at")),
                    ContactStatus.ACTIVE.value,
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
    session.execute(stmt, params)


def _cancel_params(delivered: list[int], unreachable: list[int]) -> dict[str, object]:
    return {
        "delivered": delivered,
        "delivered_why": fallback.DELIVERED_FIRST,
        "unreachable": unreachable,
        "unreachable_why": CANNOT_REACH,
        "cancelled": ItemState.CANCELLED.value,
        "pending": ItemState.PENDING.value,
        "voice": Channel.VOICE.value,
        "now": datetime.now(UTC),
    }
