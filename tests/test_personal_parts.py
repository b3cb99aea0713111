"""SMS parts of a text with placeholders (design §4.1, issue 13): `segments` is the most parts any SMS contact
of the audience gets once `{name}` and `{phone}` are filled, and the estimated cost counts each contact's own
parts. Both are counted in SQL, whatever the audience size (shared/personal_parts.py)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from shared import cycle_money, cycles, placeholders, segments
from shared.models import Contact, ContactStatus
from worker.cycles import plan_cycle

#: 7 septets around the name, then 140: 147 without the name, so a name over 13 letters makes it 2 parts.
DEAR = "Dear {name}, " + "x" * 140
SHORT, LONG = "Ann", "Bartholomew Wanjiru"  # 150 and 166 septets once filled in


def add(session: Session, *rows: tuple[str, str | None], status: ContactStatus = ContactStatus.NEW) -> None:
    session.execute(insert(Contact), [{"phone": p, "name": n, "status": status} for p, n in rows])
    session.commit()


def dry_run(make_app: Any, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    client = make_app(sms_cost_estimate="0.80", call_cost_estimate="3.00").test_client()
    answer = client.post("/api/cycles", json={**body, "dry_run": True}, headers=headers)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return answer.get_json()


def test_the_longest_name_makes_the_parts_and_each_contact_is_billed_its_own(make_app, operator_headers, session):
    add(session, ("+254711000301", SHORT), ("+254711000302", LONG), ("+254711000303", None))

    answer = dry_run(make_app, operator_headers, message=DEAR)

    assert answer["segments"] == {"encoding": "GSM-7", "parts": 2}
    # Ann 1 part, Bartholomew 2, the nameless contact ("Dear, xxx…") 1: 4 parts x 0.80.
    assert answer["estimated_cost"] == {"amount": "3.20", "currency": "KES"}


def test_a_name_with_an_emoji_sends_the_text_in_ucs2(make_app, operator_headers, session) -> None:
    add(session, ("+254711000311", SHORT), ("+254711000312", "Zawadi 😀"))

    answer = dry_run(make_app, operator_headers, message="Dear {name}, your order is ready for collection today")

    # 50 GSM-7 septets for Ann; 55 UTF-16 units for Zawadi (the emoji is two): 1 part, but in UCS-2.
    assert answer["segments"] == {"encoding": "UCS-2", "parts": 1}
    long_text = "Dear {name}, your order " + "is ready " * 5
    assert dry_run(make_app, operator_headers, message=long_text)["segments"] == {"encoding": "UCS-2", "parts": 2}


def test_only_the_cycles_sms_audience_counts(make_app, operator_headers, session, client) -> None:
    client.post(
        "/api/contacts",
        json=[
            {"phone": "+254711000321", "name": SHORT, "tags": ["nairobi"]},
            {"phone": "+254711000322", "name": LONG, "tags": ["mombasa"]},
        ],
        headers=operator_headers,
    )
    add(session, ("+254711000323", LONG + " 😀"), status=ContactStatus.INACTIVE)  # called, not texted
    add(session, ("+254711000324", LONG + " 😀"), status=ContactStatus.OPTED_OUT)  # skipped

    nairobi = dry_run(make_app, operator_headers, message=DEAR, tags=["nairobi"])
    assert nairobi["segments"] == {"encoding": "GSM-7", "parts": 1}
    assert nairobi["estimated_cost"] == {"amount": "0.80", "currency": "KES"}
    assert dry_run(make_app, operator_headers, message=DEAR)["segments"] == {"encoding": "GSM-7", "parts": 2}


def test_the_cycle_answer_carries_the_planned_parts(make_app, operator_headers, session) -> None:
    add(session, ("+254711000331", SHORT), ("+254711000332", LONG))
    cycle_id = cycles.start_cycle(session, DEAR)
    plan_cycle(session, cycle_id)
    session.commit()

    answer = make_app(sms_cost_estimate="0.80").test_client().get(f"/api/cycles/{cycle_id}", headers=operator_headers)

    assert answer.get_json()["segments"] == {"encoding": "GSM-7", "parts": 2}
    assert answer.get_json()["estimated_cost"] == {"amount": "2.40", "currency": "KES"}


def test_a_cycle_planned_before_parts_were_recorded_is_counted_from_its_items(make_app, operator_headers, session):
    from shared.models import Cycle

    add(session, ("+254711000341", SHORT), ("+254711000342", LONG))
    cycle_id = cycles.start_cycle(session, DEAR)
    plan_cycle(session, cycle_id)
    cycle = session.get(Cycle, cycle_id)
    cycle.plan = {k: v for k, v in cycle.plan.items() if k in ("sms", "voice", "skipped", "sms_by_prefix")}
    session.commit()

    answer = make_app(sms_cost_estimate="0.80").test_client().get(f"/api/cycles/{cycle_id}", headers=operator_headers)

    assert answer.get_json()["segments"] == {"encoding": "GSM-7", "parts": 2}
    assert answer.get_json()["estimated_cost"] == {"amount": "2.40", "currency": "KES"}


# -- the SQL count against the exact one, on both databases ---------------------------------------------------

NAMES = [None, "Ann", "Zoë", "Zawadi 😀", "Жанна", "A[b]c{d}", "€" * 30, "x" * 60, "😀" * 20, "Mary-Jane O'Neil"]
TEMPLATES = [
    "Dear {name}, " + "x" * 140,
    "Dear {name}, your number {phone} is registered",
    "{name}, your code is ready. Call {phone}.",
    "Habari {name}! " + "ж" * 50,
    "Hello {name} " + "[" * 70,
    "{{hi}} {name} " + "😀" * 30,
    "Thank you, {name}.",
]


@pytest.mark.parametrize("template", TEMPLATES)
def test_sql_parts_match_the_exact_count_or_overshoot_by_one_at_a_pair(dialect_engine, template: str) -> None:
    """Exact for texts without two-unit characters; with them, never fewer and at most one more (module doc)."""
    from shared import personal_parts

    with Session(dialect_engine) as session:
        session.execute(insert(Contact), [{"phone": f"+25471100{i:04d}", "name": n} for i, n in enumerate(NAMES)])
        session.commit()
        phones = dict(session.execute(select(Contact.id, Contact.phone)).all())
        names = dict(session.execute(select(Contact.id, Contact.name)).all())
        measured = personal_parts.per_contact(session, template, Contact.id.in_(phones))
        bill = cycle_money.sms_bill(session, template, Contact.id.in_(phones))
    assert set(measured) == set(phones)
    assert bill.contacts == {"+254": len(NAMES)}
    assert bill.parts == {"+254": sum(parts for _e, parts in measured.values())}
    assert bill.segments == segments.Segments(*max(measured.values(), key=lambda m: (m[1], m[0] == segments.UCS2)))
    for contact_id, (encoding, parts) in measured.items():
        exact = segments.count(placeholders.render(template, name=names[contact_id], phone=phones[contact_id]))
        assert encoding == exact.encoding, names[contact_id]
        assert exact.parts <= parts <= exact.parts + (0 if parts == 1 else 1), names[contact_id]
        if not _has_pairs(placeholders.render(template, name=names[contact_id], phone=phones[contact_id])):
            assert parts == exact.parts, names[contact_id]


def _has_pairs(text: str) -> bool:
    return any(c in segments.GSM7_EXTENSION or ord(c) > 0xFFFF for c in text)
