"""Delivery reports applied by `worker.ingest.apply_dlrs` give the same messages and contacts on Postgres
(one UPDATE ... FROM unnest(arrays) per table) and on SQLite (one UPDATE per row): the rules of
design §6 case by case, in one batch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import sessionmaker

from shared.callbacks import Dlr
from shared.models import Contact, ContactStatus, DlrEvent, Message
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
    with sessions.begin() as session:
        for table in (DlrEvent, Message, Contact):
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
    reports = [
        (now, Dlr(id=f"ATXid_d{suffix}", status=status, phone_number=f"+2547440000{suffix}", failure_reason=reason))
        for suffix, (_c, _m, status, reason, _ec, _em) in CASES.items()
    ]
    with sessions.begin() as session:
        assert ingest.apply_dlrs(session, reports) == len(CASES)
    with sessions() as session:
        for suffix, (*_given, contact_after, message_after) in CASES.items():
            contact = session.scalars(select(Contact).where(Contact.phone == f"+2547440000{suffix}")).one()
            message = session.get(Message, contact.last_message_id)
            assert (contact.status, message.status) == (contact_after, message_after), suffix
            assert contact.last_network_code == "63999"  # a report without a network code keeps the last one
        unapplied = session.scalars(select(DlrEvent).where(DlrEvent.applied_at.is_(None))).all()
        assert unapplied == []
