"""Callbacks arrive duplicated, reordered and batched any old way; the outcome must not depend on it.

Hypothesis draws, for a few contacts, what really happened (each message's delivery reports in AT's order,
a fallback call's steps, opt-out and opt-in texts) and a way it could reach us: shuffled, some callbacks
posted twice by AT (a new inbox id), some batches drained twice (the same inbox id), cut into drain
batches at random. Both go through the real path (inbox item → `shared.callbacks.parse` →
`worker.ingest.apply_batch`, one transaction per batch) into the test Postgres; the final contacts,
messages and calls must be the same as when the true history is applied in order, once each.

What the ingest cannot know and so is not reordered: one contact's STOP and START texts keep their order
(the last word wins), and a contact that texts STOP/START gets no other callbacks here (whether a
delivery report came before or after START is not in the data either).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from shared import db
from shared.inbox import InboxItem, encode
from shared.models import Base, Call, CallEvent, Contact, ContactStatus, DlrEvent, IncomingSms, Message
from simulator import wire
from worker import ingest

AT_NUMBER = "+254711082369"
SHORTCODE = "21512"
#: Contacts whose SMS got delivery reports and (when it failed) a fallback call.
REPORTED = ["+254711000001", "+254711000002", "+254711000003"]
#: A contact that only texts keywords.
TEXTER = "+254711000009"

IN_TRANSIT = ["Sent", "Submitted", "Buffered"]
FINALS = [
    ("Success", None),
    ("Failed", "UserIsInactive"),
    ("Failed", "UserDoesNotExist"),  # the contact becomes invalid
    ("Failed", "UserInBlackList"),  # the contact opted out with the network
    ("Rejected", "DeliveryFailure"),
    ("AbsentSubscriber", None),
    ("Expired", None),
]
HANGUPS = ["NORMAL_CLEARING", "NO_ANSWER", "USER_BUSY", "UNALLOCATED_NUMBER", "CALL_REJECTED"]


@dataclass(frozen=True)
class Event:
    """One callback as AT would post it: its inbox kind and form fields."""

    key: str  # what makes it one event of the history (a duplicate has the same key)
    kind: str
    data: dict[str, str]
    keeps_order: bool = False  # keyword texts of one contact: never overtaken by a later one


@st.composite
def reported_contact(draw: Any, phone: str, n: int) -> list[Event]:
    """One contact's SMS history, and a fallback call when the SMS did not arrive."""
    message_id = f"ATXid_{n:032x}"
    steps = sorted(draw(st.sets(st.sampled_from(IN_TRANSIT))), key=IN_TRANSIT.index)
    final = draw(st.sampled_from([None, *FINALS]))
    events = [Event(f"{phone}:dlr:{s}", "dlr", wire.dlr(message_id, s, phone)) for s in steps]
    if final is not None:
        status, reason = final
        body = wire.dlr(message_id, status, phone, failure_reason=reason)
        events.append(Event(f"{phone}:dlr:{status}", "dlr", body))
    if final is not None and final[0] != "Success" and draw(st.booleans()):
        session = f"ATVId_{n:032x}"
        hangup = draw(st.sampled_from(HANGUPS))
        events.append(Event(f"{phone}:ring", "voice", wire.voice_active(session, phone, AT_NUMBER)))
        if hangup == "NORMAL_CLEARING":
            if draw(st.booleans()):
                dtmf = wire.voice_active(session, phone, AT_NUMBER, dtmf_digits="1")
                events.append(Event(f"{phone}:dtmf", "voice", dtmf))
            final_call = wire.voice_final_answered(session, phone, AT_NUMBER, duration=20 + n)
        else:
            final_call = wire.voice_final_not_answered(session, phone, AT_NUMBER, hangup)
        events.append(Event(f"{phone}:hangup", "voice", final_call))
    if draw(st.booleans()):  # STOP outranks everything, wherever it lands
        stop = wire.incoming_sms(phone, SHORTCODE, "STOP", f"in-{phone}-stop", date="2026-11-28 10:00:00")
        events.append(Event(f"{phone}:stop", "sms", stop))
    return events


@st.composite
def texter(draw: Any) -> list[Event]:
    words = draw(st.lists(st.sampled_from(["STOP", "START", "stop please", "Start"]), max_size=4))
    return [
        Event(f"texter:{i}", "sms", wire.incoming_sms(TEXTER, SHORTCODE, word, f"in-texter-{i}"), keeps_order=True)
        for i, word in enumerate(words)
    ]


@st.composite
def scenarios(draw: Any) -> tuple[list[Event], list[list[tuple[str, Event]]]]:
    """The true history, and the batches it reaches us in: (inbox id, event) pairs."""
    history = [e for n, phone in enumerate(REPORTED) for e in draw(reported_contact(phone, n + 1))]
    history += draw(texter())
    delivered = draw(st.permutations(history))
    ordered = iter([e for e in history if e.keeps_order])
    delivered = [next(ordered) if e.keeps_order else e for e in delivered]
    arrivals: list[tuple[str, Event]] = [(f"first:{e.key}", e) for e in delivered]
    for _ in range(draw(st.integers(0, 6))):  # AT posts again: a new receipt of an event already posted
        if arrivals:
            where = draw(st.integers(0, len(arrivals) - 1))
            _, event = arrivals[where]
            arrivals.insert(draw(st.integers(where + 1, len(arrivals))), (f"again:{len(arrivals)}", event))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(arrivals) - 1)), max_size=len(arrivals))))
    batches = [arrivals[a:b] for a, b in zip([0, *cuts], [*cuts, len(arrivals)], strict=True) if arrivals[a:b]]
    for _ in range(draw(st.integers(0, 2))):  # a batch applied, then recovered and drained again
        if batches:
            batches.insert(len(batches), batches[draw(st.integers(0, len(batches) - 1))])
    return history, batches


def reset() -> None:
    with db.get_engine().begin() as connection:  # DELETE: far quicker than TRUNCATE on a few rows
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())
    factory = db._session_factory()
    with factory() as session, session.begin():
        for n, phone in enumerate(REPORTED, start=1):
            contact = Contact(phone=phone, status=ContactStatus.PENDING)
            session.add(contact)
            session.flush()
            message = Message(contact_id=contact.id, phone=phone, text="hello", at_message_id=f"ATXid_{n:032x}")
            session.add(message)
            session.flush()
            contact.last_message_id = message.id


def apply(batches: list[list[tuple[str, Event]]]) -> None:
    """Each batch as the drain task applies it: one transaction, items as the inbox hands them over."""
    clock = datetime(2026, 11, 28, 10, tzinfo=UTC)
    items: dict[str, InboxItem] = {}
    factory = db._session_factory()
    for batch in batches:
        drained = []
        for inbox_id, event in batch:
            if inbox_id not in items:
                clock += timedelta(seconds=1)
                _, payload = encode(event.kind, event.data, now=clock)
                items[inbox_id] = InboxItem.from_json(payload)
            drained.append(items[inbox_id])
        with factory() as session, session.begin():
            ingest.apply_batch(session, drained)


def outcome() -> dict[str, Any]:
    """Everything the callbacks decide, without the times they arrived at."""
    factory = db._session_factory()
    with factory() as session:
        contacts = {
            c.phone: (
                c.status.value,
                c.opted_out_at is not None,
                c.channel_preference,
                c.last_sms_status,
                c.last_failure_reason,
                c.last_network_code,
                c.last_call_status,
                c.last_hangup_cause,
            )
            for c in session.scalars(select(Contact))
        }
        messages = {
            m.at_message_id: (m.status, m.status_rank, m.failure_reason, m.network_code)
            for m in session.scalars(select(Message))
        }
        calls = {
            c.session_id: (
                c.phone,
                c.contact_id is not None,
                c.direction,
                c.status,
                c.call_session_state,
                c.hangup_cause,
                c.outcome,
                c.duration_seconds,
                c.amount,
                c.currency,
                c.dtmf_digits,
                c.acknowledged,
                c.ended_at is not None,
            )
            for c in session.scalars(select(Call))
        }
        counts = {
            model.__tablename__: session.scalar(select(func.count()).select_from(model))
            for model in (DlrEvent, CallEvent, IncomingSms)
        }
        unapplied = session.scalar(select(func.count()).select_from(DlrEvent).where(DlrEvent.applied_at.is_(None)))
    return {"contacts": contacts, "messages": messages, "calls": calls, "counts": counts, "unapplied": unapplied}


@settings(
    max_examples=25,
    derandomize=True,  # the same examples on every run: CI is deterministic
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios())
def test_duplicated_and_reordered_callbacks_end_as_the_ordered_history(clean: None, scenario: Any) -> None:
    history, batches = scenario
    reset()
    apply([[(f"first:{e.key}", e)] for e in history])  # the truth: in order, once each, one per drain
    expected = outcome()
    reset()
    apply(batches)
    assert outcome() == expected
    assert expected["unapplied"] == 0


def test_a_late_failure_report_leaves_a_number_a_call_found_unallocated_invalid(clean: None) -> None:
    """Found by the property above: the fallback call (placed because no report came in time) finds the
    number unallocated, then the SMS's `Failed` report arrives; it used to make the contact `inactive`
    again, to be called again next cycle, where the same two in the other order left it `invalid`."""
    phone, message_id, session_id = REPORTED[0], f"ATXid_{1:032x}", f"ATVId_{1:032x}"
    failed = Event("failed", "dlr", wire.dlr(message_id, "Failed", phone, failure_reason="UserIsInactive"))
    call = Event("call", "voice", wire.voice_final_not_answered(session_id, phone, AT_NUMBER, "UNALLOCATED_NUMBER"))
    states = []
    for order in ([failed, call], [call, failed]):
        reset()
        apply([[(e.key, e)] for e in order])
        states.append(outcome()["contacts"][phone][0])
    assert states == [ContactStatus.INVALID.value, ContactStatus.INVALID.value]


# -- consent follows the customer's own order, whatever path re-delivers a callback ----------------------------

T1 = datetime(2026, 11, 28, 9, tzinfo=UTC)
T2 = T1 + timedelta(minutes=5)


def apply_at(kind: str, data: dict[str, str], received_at: datetime) -> None:
    """One callback as the drain applies it, received by the receiver at `received_at`."""
    _, payload = encode(kind, data, now=received_at)
    factory = db._session_factory()
    with factory() as session, session.begin():
        ingest.apply_batch(session, [InboxItem.from_json(payload)])


def contact_of(phone: str) -> Contact:
    factory = db._session_factory()
    with factory() as session:
        return session.scalars(select(Contact).where(Contact.phone == phone)).one()


def texted(word: str, n: int) -> dict[str, str]:
    return wire.incoming_sms(TEXTER, SHORTCODE, word, f"in-consent-{n}")


def test_a_stale_start_after_a_newer_stop_leaves_the_customer_opted_out(clean: None) -> None:
    reset()
    apply_at("sms", texted("START", 0), T1 - timedelta(hours=1))  # a known contact
    apply_at("sms", texted("STOP", 1), T2)
    apply_at("sms", texted("START", 2), T1)  # sent before the STOP, applied after it (a recovered batch)
    assert contact_of(TEXTER).status is ContactStatus.OPTED_OUT


def test_a_stale_stop_after_a_newer_start_leaves_the_customer_subscribed(clean: None) -> None:
    reset()
    apply_at("sms", texted("STOP", 0), T1 - timedelta(hours=1))
    apply_at("sms", texted("START", 1), T2)
    apply_at("sms", texted("STOP", 2), T1)
    contact = contact_of(TEXTER)
    assert contact.status is ContactStatus.NEW and contact.opted_out_at is None


def test_a_stale_ussd_choice_does_not_undo_a_newer_one(clean: None) -> None:
    reset()
    apply_at("ussd", wire.ussd("ATUid_new", TEXTER, "3"), T2)
    apply_at("ussd", wire.ussd("ATUid_old", TEXTER, "2"), T1)
    assert contact_of(TEXTER).channel_preference == "voice"


def test_a_dead_drainers_start_recovered_after_a_newer_stop_leaves_the_customer_opted_out(
    clean: None, redis_client: Any
) -> None:
    """The issue's path: a drainer claims a batch with START and dies; the STOP texted after it is applied;
    housekeeping puts the START back (`recover_stale`)."""
    from shared.inbox import Inbox
    from worker.drain import drain_inbox

    reset()
    apply_at("sms", texted("START", 0), T1 - timedelta(hours=1))
    box = Inbox(redis_client)
    box.push("sms", texted("START", 1))
    assert box.claim(10) is not None  # the drainer that took it dies here
    box.push("sms", texted("STOP", 2))
    drain_inbox(box, batch_size=10, budget_seconds=10)
    assert contact_of(TEXTER).status is ContactStatus.OPTED_OUT
    assert box.recover_stale(stale_after=-1) == 1
    drain_inbox(box, batch_size=10, budget_seconds=10)
    assert contact_of(TEXTER).status is ContactStatus.OPTED_OUT
