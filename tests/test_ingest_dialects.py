"""Delivery reports applied by `worker.ingest.apply_dlrs`, and drained batches by `worker.ingest.apply_batch`,
give the same messages and contacts on Postgres (a COPY into a staging table, then set-based statements) and on
SQLite (one statement per row): the rules of design §6 case by case, in one batch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from shared.callbacks import Dlr
from shared.inbox import InboxItem
from shared.models import Contact, ContactStatus, DlrEvent, IncomingSms, Message, RawCallback
from simulator import wire
from worker import ingest

#: phone suffix → (contact status before, message status before, report status, report failure reason,
#: expected contact status, expected message status)
CASES = {
    "01": (ContactStatus.PENDING, None, "Success", "", ContactStatus.ACTIVE, "Success"),
    "02": (ContactStatus.PENDING, None, "Failed", "DeliveryFailure", ContactStatus.INACTIVE, "Failed"),
    "03": (ContactStatus.OPTED_OUT, None, "Success", "", ContactStatus.OPTED_OUT, "Success"),
    "04": (ContactStatus.INVALID, None, "Failed", "DeliveryFailure", ContactStatus.INVALID, "Failed"),
    "05": (ContactStatus.INVALID, None, "Success", "", ContactStatus.ACTIVE, "Success"),
    "06": (ContactStatus.ACTIVE, "Success", "Sent", "", ContactStatus.ACTIVE, "Success"),  # never backwards
    "07": (ContactStatus.PENDING, None, "Buffered", "", ContactStatus.PENDING, "Buffered"),
    # Issue 14: a transient failure reported before the customer proved reachable leaves them active; one
    # reported after, or a lasting failure, makes them inactive (shared/reachability.py).
    "08": (ContactStatus.PENDING, None, "AbsentSubscriber", "", ContactStatus.ACTIVE, "AbsentSubscriber"),
    "09": (ContactStatus.PENDING, None, "AbsentSubscriber", "", ContactStatus.INACTIVE, "AbsentSubscriber"),
    "10": (ContactStatus.PENDING, None, "Failed", "UserIsInactive", ContactStatus.INACTIVE, "Failed"),
}
#: phone suffix → when the customer last proved reachable, relative to the reports' receipt time.
REACHED = {"08": timedelta(minutes=1), "09": timedelta(minutes=-1), "10": timedelta(minutes=1)}


@pytest.fixture
def engine(dialect_engine: Engine) -> Engine:
    return dialect_engine


def test_reports_apply_the_same_on_both_databases(engine: Engine) -> None:
    sessions = sessionmaker(engine, expire_on_commit=False)
    now = datetime.now(UTC)
    seed(sessions, now)
    reports = [
        (now, Dlr(id=f"ATXid_d{suffix}", status=status, phone_number=f"+2547440000{suffix}", failure_reason=reason))
        for suffix, (_c, _m, status, reason, _ec, _em) in CASES.items()
    ]
    with sessions.begin() as session:
        assert ingest.apply_dlrs(session, reports) == len(CASES)
    check(sessions)


def test_a_drained_batch_applies_the_same_on_both_databases(engine: Engine) -> None:
    """The drain's own path: raw callbacks kept once per inbox id, a report stored before its message (applied
    with the batch that brings a later one), a report for no message kept unapplied, an SMS beside the reports
    (with a receipt time without a zone); the same batch drained again changes nothing."""
    sessions = sessionmaker(engine, expire_on_commit=False)
    now = datetime.now(UTC)
    with sessions.begin() as session:  # came before its message existed: kept, not applied
        assert ingest.apply_dlrs(session, [(now, Dlr(id="ATXid_d01", status="Sent", phone_number="+254744000001"))])
    seed(sessions, now)
    items = [
        InboxItem(f"inbox-{suffix}", "dlr", now, report(f"ATXid_d{suffix}", status, f"+2547440000{suffix}", reason))
        for suffix, (_c, _m, status, reason, _ec, _em) in CASES.items()
    ]
    items.append(InboxItem("inbox-nomessage", "dlr", now, report("ATXid_none", "Success", "0711 000 099", "")))
    sms = wire.incoming_sms("+254744000050", "21512", "hello", "in-d-1")
    items.append(InboxItem("inbox-sms", "sms", now.replace(tzinfo=None), sms))  # queued by hand: no time zone
    with sessions.begin() as session:
        assert ingest.apply_batch(session, items) == {"dlr": len(CASES) + 1, "sms": 1}
    with sessions.begin() as session:
        assert ingest.apply_batch(session, items) == {}
    check(sessions)
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(RawCallback)) == len(items)
        kept = session.execute(select(DlrEvent.status, DlrEvent.phone).where(DlrEvent.at_message_id == "ATXid_none"))
        assert kept.one() == ("Success", "+254711000099")
        assert session.scalar(select(func.count()).select_from(DlrEvent)) == len(CASES) + 2
        assert session.scalar(select(func.count()).select_from(IncomingSms)) == 1


def report(message_id: str, status: str, phone: str, reason: str) -> dict[str, str]:
    """A report's fields as the inbox keeps them, without a network code (the contact keeps its last one)."""
    fields = {"id": message_id, "status": status, "phoneNumber": phone}
    return {**fields, "failureReason": reason} if reason else fields


def seed(sessions: sessionmaker[Session], now: datetime) -> None:
    with sessions.begin() as session:
        for table in (Message, Contact):
            session.execute(delete(table))
        for suffix, (contact_status, message_status, *_rest) in CASES.items():
            contact = Contact(phone=f"+2547440000{suffix}", status=contact_status, last_network_code="63999")
            contact.reached_at = now + REACHED[suffix] if suffix in REACHED else None
            session.add(contact)
            session.flush()
            message = Message(
                at_message_id=f"ATXid_d{suffix}",
                contact_id=contact.id,
                phone=contact.phone,
                text="hello",
                send_state="sent",
                created_at=now,
            )
            if message_status is not None:
                message.status, message.status_rank = message_status, 99
            session.add(message)
            session.flush()
            contact.last_message_id = message.id


def check(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        for suffix, (*_given, contact_after, message_after) in CASES.items():
            contact = session.scalars(select(Contact).where(Contact.phone == f"+2547440000{suffix}")).one()
            message = session.get(Message, contact.last_message_id)
            assert (contact.status, message.status) == (contact_after, message_after), suffix
            assert contact.last_network_code == "63999"  # a report without a network code keeps the last one
        unapplied = session.scalars(select(DlrEvent.at_message_id).where(DlrEvent.applied_at.is_(None))).all()
        assert unapplied in ([], ["ATXid_none"])
