"""Carrier incident guard (issue 14), rule by rule, in-process on real Postgres and Redis: one network's reports
all fail within minutes, far above its baseline. Housekeeping's look (`incidents.watch`, given its `now`) opens
an incident, raises an alert, and holds that network's downgrades and calls (planning, same-cycle fallback)
until it recovers or the operator releases it. The end-to-end run with the worker and the simulator's outage is
tests/test_incidents_live.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis as redis_lib
from click.testing import CliRunner
from sqlalchemy import select

from reach_cli.main import cli
from shared import incidents
from shared.callbacks import Dlr
from shared.db import session_scope
from shared.models import (
    Channel,
    Contact,
    ContactStatus,
    Cycle,
    CycleItem,
    CycleState,
    DlrEvent,
    Fallback,
    ItemState,
    Message,
)
from shared.operator_models import Alert, NetworkIncident
from shared.settings import load_settings
from worker.cycles import plan_cycle
from worker.ingest import apply_dlrs, apply_held_reports

AIRTEL, SAFARICOM = "63903", "63902"
DOWN = [f"+2547330000{i:02d}" for i in range(6)]  # on Airtel, whose reports all fail
UP = [f"+2547120000{i:02d}" for i in range(6)]  # on Safaricom: one fails, as any day
SETTINGS = {"incident_min_failures": 5, "incident_window_seconds": 600, "incident_recovery_seconds": 300}


@pytest.fixture
def nudges(task_lists: redis_lib.Redis) -> redis_lib.Redis:
    return task_lists


def settings(**overrides: Any) -> Any:
    return load_settings(**{**SETTINGS, **overrides})


def sent_cycle(session: Any, fallback: Fallback = Fallback.SAME_CYCLE) -> dict[str, int]:
    """A dispatching cycle whose SMS AT accepted for every number: item ids by phone."""
    cycle = Cycle(message="hi", state=CycleState.DISPATCHING, fallback=fallback)
    session.add(cycle)
    session.flush()
    items = {}
    for phone in DOWN + UP:
        contact = session.scalar(select(Contact).where(Contact.phone == phone))
        if contact is None:
            contact = Contact(phone=phone)
            session.add(contact)
            session.flush()
        contact.status = ContactStatus.PENDING
        item = CycleItem(cycle_id=cycle.id, contact_id=contact.id, channel=Channel.SMS, state=ItemState.SENT)
        session.add(item)
        session.flush()
        message = Message(
            contact_id=contact.id, cycle_id=cycle.id, cycle_item_id=item.id, phone=phone, text="hi",
            send_state="sent", at_message_id=f"ATXid_{cycle.id}_{phone[1:]}",
        )  # fmt: skip
        session.add(message)
        session.flush()
        item.message_id, contact.last_message_id = message.id, message.id
        if fallback is Fallback.SAME_CYCLE:
            item.fallback_at = datetime.now(UTC) + timedelta(hours=1)
        items[phone] = item.id
    session.commit()
    return items


def reports(session: Any, at: datetime, outcomes: dict[str, tuple[str, str | None]], apply: Any = None) -> None:
    """Delivery reports as AT posts them (networkCode by the number's network), stored and applied."""
    cycle_id = session.scalar(select(Cycle.id).order_by(Cycle.id.desc()).limit(1))
    batch = [
        (at, Dlr(id=f"ATXid_{cycle_id}_{phone[1:]}", status=status, phone_number=phone,
                 network_code=AIRTEL if phone in DOWN else SAFARICOM, failure_reason=reason))
        for phone, (status, reason) in outcomes.items()
    ]  # fmt: skip
    if apply is not None:
        apply(batch)
        return
    with session_scope() as s:
        apply_dlrs(s, batch)


def history(session: Any, network: str, at: datetime, failed: int, delivered: int) -> None:
    """Yesterday's reports of a network: its baseline."""
    rows = [("Failed", i) for i in range(failed)] + [("Success", i) for i in range(delivered)]
    session.add_all(
        DlrEvent(at_message_id=f"ATXid_old_{network}_{at.timestamp()}_{status}_{i}", status=status,
                 network_code=network, received_at=at, applied_at=at)
        for status, i in rows
    )  # fmt: skip
    session.commit()


def watch(at: datetime, **overrides: Any) -> list[Any]:
    with session_scope() as s:
        return incidents.watch(s, settings(**overrides), at, apply_held_reports)


def status_of(session: Any, phone: str) -> ContactStatus:
    session.expire_all()
    return session.scalar(select(Contact.status).where(Contact.phone == phone))


def item_of(session: Any, item_id: int) -> CycleItem:
    session.expire_all()
    return session.get_one(CycleItem, item_id)


ALL_FAIL = {phone: ("Failed", "DeliveryFailure") for phone in DOWN}
ONE_FAILS = {UP[0]: ("Failed", "UserIsInactive"), **{phone: ("Success", None) for phone in UP[1:]}}


def test_one_networks_failures_open_an_incident_that_holds_its_downgrades_and_calls(session, nudges) -> None:
    now = datetime.now(UTC)
    history(session, AIRTEL, now - timedelta(hours=5), failed=2, delivered=98)
    items = sent_cycle(session)
    reports(session, now - timedelta(seconds=60), {**ALL_FAIL, **ONE_FAILS})
    # Before housekeeping looks, the reports were applied as ever: the guard then takes them back.
    assert status_of(session, DOWN[0]) is ContactStatus.INACTIVE

    opened = watch(now)
    assert [i.network_code for i in opened] == [AIRTEL]
    incident = session.scalars(select(NetworkIncident)).one()
    assert (incident.failures, incident.reports, incident.ended_at) == (6, 6, None)
    assert incident.baseline_rate == pytest.approx(0.02)
    alert = session.scalars(select(Alert).where(Alert.kind == "network_incident")).one()
    assert "Airtel Kenya" in alert.message and alert.details["network_code"] == AIRTEL
    # Airtel's contacts are not downgraded and not called; Safaricom's failure is a failure as any day.
    assert {status_of(session, p) for p in DOWN} == {ContactStatus.PENDING}
    assert status_of(session, UP[0]) is ContactStatus.INACTIVE
    assert {item_of(session, items[p]).channel for p in DOWN} == {Channel.SMS}
    assert item_of(session, items[UP[0]]).channel is Channel.VOICE
    assert watch(now + timedelta(seconds=15)) == []  # one incident per network at a time

    # While it lasts, further Airtel failures are held as they arrive, and housekeeping calls none of them.
    items2 = sent_cycle(session)
    reports(session, now, ALL_FAIL)
    assert {status_of(session, p) for p in DOWN} == {ContactStatus.PENDING}
    assert {item_of(session, items2[p]).channel for p in DOWN} == {Channel.SMS}
    from worker import fallback

    with session_scope() as s:
        s.execute(CycleItem.__table__.update().values(fallback_at=now - timedelta(seconds=1)))
        fallback.start_due_calls(s)
    assert {item_of(session, items2[p]).channel for p in DOWN} == {Channel.SMS}
    assert {item_of(session, items2[p]).channel for p in UP} == {Channel.VOICE}

    # The next cycle neither calls nor texts them: skipped, network_incident.
    plan = next_plan(session)
    assert plan["skipped"]["network_incident"] == len(DOWN)

    # The operator releases it: the held reports are applied by the next look, and their calls are due.
    assert release(incident.id).exit_code == 0
    watch(now + timedelta(seconds=30))
    assert {status_of(session, p) for p in DOWN} == {ContactStatus.INACTIVE}
    assert {(item_of(session, items2[p]).channel, item_of(session, items2[p]).state) for p in DOWN} == {
        (Channel.VOICE, ItemState.PENDING)
    }
    session.expire_all()
    released = session.get_one(NetworkIncident, incident.id)
    assert released.ended_by == "operator" and released.applied_at is not None
    assert next_plan(session)["skipped"].get("network_incident", 0) == 0


def next_plan(session: Any) -> dict[str, Any]:
    cycle = Cycle(message="again", state=CycleState.PLANNING)
    session.add(cycle)
    session.commit()
    with session_scope() as s:
        return plan_cycle(s, cycle.id)


def release(incident_id: int) -> Any:
    return CliRunner().invoke(cli, ["incident", "release", str(incident_id)])


def test_a_network_that_always_fails_this_much_is_no_incident(session) -> None:
    now = datetime.now(UTC)
    history(session, AIRTEL, now - timedelta(hours=3), failed=60, delivered=40)  # 60 % on an ordinary day
    sent_cycle(session, Fallback.NEXT_CYCLE)
    reports(session, now - timedelta(seconds=30), {**ALL_FAIL, DOWN[0]: ("Success", None)})  # 5 of 6: 83 %
    assert watch(now) == []  # 83 % < 3 x 60 %
    assert watch(now, incident_min_failures=6) == []  # too few failures, whatever the rate
    assert session.scalars(select(NetworkIncident)).all() == []


def test_recovery_after_the_rate_stays_near_baseline(session) -> None:
    now = datetime.now(UTC)
    sent_cycle(session, Fallback.NEXT_CYCLE)
    reports(session, now - timedelta(seconds=60), ALL_FAIL)
    (incident,) = watch(now)
    assert {status_of(session, p) for p in DOWN} == {ContactStatus.PENDING}

    # Airtel delivers again: a window of successes starts the recovery; it ends after INCIDENT_RECOVERY_SECONDS.
    history(session, AIRTEL, now + timedelta(seconds=650), failed=0, delivered=20)
    assert watch(now + timedelta(seconds=660)) == []
    session.expire_all()
    recovering = session.get_one(NetworkIncident, incident.id)
    assert recovering.recovering_since is not None and recovering.ended_at is None
    history(session, AIRTEL, now + timedelta(seconds=900), failed=1, delivered=20)
    watch(now + timedelta(seconds=910))
    session.expire_all()
    assert session.get_one(NetworkIncident, incident.id).ended_at is None  # not for long enough yet
    history(session, AIRTEL, now + timedelta(seconds=960), failed=0, delivered=20)
    watch(now + timedelta(seconds=970))
    session.expire_all()
    ended = session.get_one(NetworkIncident, incident.id)
    assert ended.ended_by == "recovered" and ended.applied_at is not None
    assert {status_of(session, p) for p in DOWN} == {ContactStatus.INACTIVE}
    assert session.scalars(select(Alert.kind).order_by(Alert.id)).all() == ["network_incident", "network_recovered"]


def test_failures_again_while_recovering_start_the_recovery_over(session) -> None:
    now = datetime.now(UTC)
    sent_cycle(session, Fallback.NEXT_CYCLE)
    reports(session, now - timedelta(seconds=60), ALL_FAIL)
    (incident,) = watch(now)
    history(session, AIRTEL, now + timedelta(seconds=650), failed=0, delivered=20)
    watch(now + timedelta(seconds=660))
    history(session, AIRTEL, now + timedelta(seconds=700), failed=40, delivered=0)
    watch(now + timedelta(seconds=710))
    session.expire_all()
    assert session.get_one(NetworkIncident, incident.id).recovering_since is None


def test_api_lists_and_releases_incidents(session, client, operator_headers) -> None:
    now = datetime.now(UTC)
    sent_cycle(session, Fallback.NEXT_CYCLE)
    reports(session, now - timedelta(seconds=60), ALL_FAIL)
    (incident,) = watch(now)
    listed = client.get("/api/incidents", headers=operator_headers)
    assert listed.status_code == 200
    (row,) = listed.get_json()["incidents"]
    assert (row["id"], row["network_code"], row["network"], row["state"]) == (
        incident.id,
        AIRTEL,
        "Airtel Kenya",
        "open",
    )
    assert row["held_contacts"] == len(DOWN) and row["failure_rate"] == 1.0
    assert client.post("/api/incidents/999/release", headers=operator_headers).status_code == 404
    released = client.post(f"/api/incidents/{incident.id}/release", headers=operator_headers)
    assert released.status_code == 200 and released.get_json()["state"] == "released"
    assert client.post(f"/api/incidents/{incident.id}/release", headers=operator_headers).status_code == 409
    listing = CliRunner().invoke(cli, ["incident", "list"])
    assert listing.exit_code == 0 and "Airtel Kenya" in listing.output and "released" in listing.output


def test_the_guard_works_on_both_databases(dialect_engine) -> None:
    """Housekeeping runs the look in embedded mode too (SQLite): open, hold, plan around, release, apply."""
    from sqlalchemy.orm import Session

    from shared import holds

    now = datetime.now(UTC)
    with Session(dialect_engine) as s:
        sent_cycle(s, Fallback.NEXT_CYCLE)
        reports(s, now - timedelta(seconds=60), ALL_FAIL, apply=lambda batch: apply_dlrs(s, batch))
        (incident,) = incidents.watch(s, settings(), now, apply_held_reports)
        s.commit()
        assert {status_of(s, p) for p in DOWN} == {ContactStatus.PENDING}
        held = holds.hold_back_now(s)
        assert holds.count_held(s, Contact.id.is_not(None), held) == {"network_incident": len(DOWN)}
        incidents.release(s, incident.id, now)
        incidents.watch(s, settings(), now + timedelta(seconds=15), apply_held_reports)
        s.commit()
        assert {status_of(s, p) for p in DOWN} == {ContactStatus.INACTIVE}
        assert holds.hold_back_now(s) == {}


def test_after_a_release_only_new_failures_open_another(session, nudges) -> None:
    now = datetime.now(UTC)
    sent_cycle(session, Fallback.NEXT_CYCLE)
    reports(session, now - timedelta(seconds=60), ALL_FAIL)
    (first,) = watch(now)
    assert release(first.id).exit_code == 0
    assert watch(now + timedelta(seconds=15)) == []  # the reports it held open nothing once released
    assert {status_of(session, p) for p in DOWN} == {ContactStatus.INACTIVE}

    sent_cycle(session, Fallback.NEXT_CYCLE)  # Airtel still fails: new failures are a new incident
    reports(session, now + timedelta(seconds=20), ALL_FAIL)
    (second,) = watch(now + timedelta(seconds=30))
    session.expire_all()
    ended = session.get_one(NetworkIncident, first.id).ended_at
    assert second.id != first.id and second.since == ended and second.failures == len(DOWN)
    assert second.baseline_rate == 0.0  # the first incident's failures are not its baseline
    assert {status_of(session, p) for p in DOWN} == {ContactStatus.PENDING}


def test_cli_dry_run_says_who_an_incident_holds(session) -> None:
    now = datetime.now(UTC)
    sent_cycle(session, Fallback.NEXT_CYCLE)
    reports(session, now - timedelta(seconds=60), ALL_FAIL)
    watch(now)
    preview = CliRunner().invoke(cli, ["cycle", "run", "--message", "hello", "--dry-run"])
    assert preview.exit_code == 0, preview.output
    assert f"network_incident {len(DOWN)}" in preview.output and "reach incident list" in preview.output


def test_a_one_off_send_never_calls_a_contact_an_incident_holds(session, client, operator_headers) -> None:
    """A one-off send picks its channel as a cycle does, and a cycle leaves out whoever an incident holds: their
    last SMS failed on the network's word only, and the guard is there so no call goes into a network that is
    down before the operator decides. Before, `POST /communicate` called them (202, channel voice)."""
    now = datetime.now(UTC)
    sent_cycle(session, Fallback.NEXT_CYCLE)
    reports(session, now - timedelta(seconds=60), {**ALL_FAIL, **ONE_FAILS})
    (incident,) = watch(now)

    held = client.post("/communicate", json={"to": DOWN[0], "message": "Your order is ready"}, headers=operator_headers)
    other = client.post("/communicate", json={"to": UP[1], "message": "Your order is ready"}, headers=operator_headers)

    assert held.status_code == 409, held.get_json()
    assert f"incident {incident.id}" in held.get_json()["error"] and "Airtel Kenya" in held.get_json()["error"]
    assert (other.status_code, other.get_json()["channel"]) == (202, "sms")
    client.post(f"/api/incidents/{incident.id}/release", headers=operator_headers)
    released = client.post("/communicate", json={"to": DOWN[0], "message": "hi"}, headers=operator_headers)
    assert (released.status_code, released.get_json()["channel"]) == (202, "voice")  # the operator decided
