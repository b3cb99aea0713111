"""Bounded callback tables: housekeeping prunes what is done with after CALLBACK_RETENTION_DAYS, the rescan
of unmatched delivery reports gives up after UNMATCHED_DLR_HOURS, and matching a report by number reads an
index (Postgres plans)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select, text

from shared.models import Call, CallEvent, Contact, ContactStatus, DlrEvent, Message, RawCallback
from shared.settings import load_settings

PHONE = "+254711000401"


def ago(**delta: float) -> datetime:
    return datetime.now(UTC) - timedelta(**delta)


def add_raw(session: Any, name: str, received_at: datetime) -> None:
    session.add(RawCallback(inbox_id=name, kind="dlr", received_at=received_at, payload={"id": name}))


def add_dlr(session: Any, at_id: str, received_at: datetime, applied: bool, phone: str = PHONE) -> None:
    session.add(
        DlrEvent(
            at_message_id=at_id,
            status="Success",
            phone=phone,
            received_at=received_at,
            applied_at=received_at if applied else None,
        )
    )


def add_call_event(session: Any, session_id: str, received_at: datetime) -> None:
    session.add(Call(phone=PHONE, session_id=session_id, created_at=received_at, ended_at=received_at))
    session.add(CallEvent(session_id=session_id, event_key="0:Completed", is_active=False, received_at=received_at))


def remaining(session: Any, column: Any) -> set[str]:
    session.expire_all()
    return set(session.scalars(select(column)))


def test_housekeeping_prunes_old_applied_callbacks_and_keeps_recent_and_unapplied_young_ones(session) -> None:
    from worker.tasks import housekeeping

    add_raw(session, "raw-old", ago(days=100))
    add_raw(session, "raw-new", ago(days=1))
    add_dlr(session, "ATXid_old_applied", ago(days=100), applied=True)
    add_dlr(session, "ATXid_old_unmatched", ago(days=100), applied=False)  # given up on long ago
    add_dlr(session, "ATXid_new_applied", ago(days=1), applied=True)
    add_dlr(session, "ATXid_new_unmatched", ago(hours=1), applied=False)
    add_call_event(session, "ATVId_old", ago(days=100))
    add_call_event(session, "ATVId_new", ago(days=1))
    session.commit()

    housekeeping()  # CALLBACK_RETENTION_DAYS: the default, 90

    assert remaining(session, RawCallback.inbox_id) == {"raw-new"}
    assert remaining(session, DlrEvent.at_message_id) == {"ATXid_new_applied", "ATXid_new_unmatched"}
    assert remaining(session, CallEvent.session_id) == {"ATVId_new"}


def test_an_unapplied_report_younger_than_the_give_up_time_is_never_pruned(session) -> None:
    from worker import retention

    settings = load_settings(callback_retention_days=2, unmatched_dlr_hours=48)
    add_dlr(session, "ATXid_applied_old", ago(hours=50), applied=True)  # in the order they arrived
    add_dlr(session, "ATXid_given_up", ago(hours=50), applied=False)
    add_dlr(session, "ATXid_applied", ago(hours=47), applied=True)  # younger than retention: kept too
    add_dlr(session, "ATXid_still_matching", ago(hours=47), applied=False)
    session.commit()

    assert retention.prune_callbacks(settings)["dlr_events"] == 2
    assert remaining(session, DlrEvent.at_message_id) == {"ATXid_applied", "ATXid_still_matching"}


def test_pruning_goes_in_small_batches_oldest_first(session, monkeypatch: pytest.MonkeyPatch) -> None:
    from worker import retention

    monkeypatch.setattr(retention, "BATCH", 10)
    monkeypatch.setattr(retention, "STATEMENTS", 2)
    session.execute(
        insert(RawCallback),
        [
            {"inbox_id": f"raw-{i:02d}", "kind": "dlr", "received_at": ago(days=200 - i), "payload": {}}
            for i in range(25)
        ],
    )
    session.commit()
    settings = load_settings()

    assert retention.prune_callbacks(settings)["raw_callbacks"] == 20  # two statements of ten this run
    assert remaining(session, RawCallback.inbox_id) == {f"raw-{i:02d}" for i in range(20, 25)}
    assert retention.prune_callbacks(settings)["raw_callbacks"] == 5
    assert retention.prune_callbacks(settings)["raw_callbacks"] == 0


def test_the_rescan_does_not_touch_reports_older_than_the_give_up_time(session) -> None:
    from worker.ingest import apply_pending_dlrs

    contact = Contact(phone=PHONE, status=ContactStatus.PENDING)
    session.add(contact)
    session.flush()
    for at_id in ("ATXid_recent", "ATXid_given_up"):  # their messages appeared after the reports
        session.add(Message(contact_id=contact.id, phone=PHONE, text="hi", send_state="sent", at_message_id=at_id))
    add_dlr(session, "ATXid_recent", ago(hours=1), applied=False)
    add_dlr(session, "ATXid_given_up", ago(hours=49), applied=False)  # UNMATCHED_DLR_HOURS: the default, 48
    session.commit()

    assert apply_pending_dlrs(session) == 1
    session.commit()

    session.expire_all()
    statuses = dict(session.execute(select(Message.at_message_id, Message.status)).all())
    assert statuses == {"ATXid_recent": "Success", "ATXid_given_up": None}
    unapplied = select(DlrEvent.at_message_id).where(DlrEvent.applied_at.is_(None))
    assert set(session.scalars(unapplied)) == {"ATXid_given_up"}  # still stored, for audit


def test_matching_a_report_by_number_reads_the_phone_index(session) -> None:
    from worker.unknown_sends import unmatched_report_query

    report = {"status": "Success"}
    rows = [
        {**report, "at_message_id": f"ATXid_{i}", "phone": f"+2547{i % 5000:08d}", "received_at": ago(minutes=i)}
        for i in range(20_000)
    ]
    session.execute(insert(DlrEvent), rows)
    session.commit()
    session.execute(text("ANALYZE dlr_events"))
    compiled = unmatched_report_query(PHONE, ago(minutes=30)).compile(dialect=session.bind.dialect)
    connection = session.connection()
    plan = "\n".join(row[0] for row in connection.exec_driver_sql(f"EXPLAIN {compiled}", compiled.params))
    assert "ix_dlr_events_phone_received" in plan, plan
    assert session.scalar(select(func.count()).select_from(DlrEvent)) == 20_000


def test_housekeeping_prunes_alerts_older_than_the_callback_retention(session) -> None:
    """Alerts are the operator's recent history, not an archive: a parked-callback flood must not grow the
    table for ever. They are kept as long as the callbacks they are about."""
    from shared.operator_models import Alert
    from worker.tasks import housekeeping

    session.add_all(
        [
            Alert(kind="dlr_silence", message="old", created_at=ago(days=100)),
            Alert(kind="cycle_paused", message="new", created_at=ago(days=1)),
        ]
    )
    session.commit()

    housekeeping()

    assert remaining(session, Alert.message) == {"new"}
