"""Placeholders in a message (design §4.1): `{name}` and `{phone}` filled per contact, removed cleanly for a
contact without a name, anything else in braces a 400 naming it, `{{` and `}}` literal braces. SMS batches
group by rendered text; the voice script speaks the rendered text.

Rendering is a pure function (a table of cases); dispatch runs in-process against the AT simulator and the
real Postgres and Redis, no worker."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import insert, select

from shared import cycles as shared_cycles
from shared.at_client import AtClient
from shared.models import Call, Contact, ContactStatus, Message
from shared.store import get_store
from simulator import Scenario, SimulatorServer, run_simulator_in_thread
from tests.conftest import API_TOKEN
from tests.sim_fixtures import SIM_KEY, sim_settings
from worker import cycles

HEADERS = {"Authorization": f"Bearer {API_TOKEN}"}
PHONE = "+254711000061"

#: (template, name, rendered): the rule for a contact without a name is in shared/placeholders.py.
RENDERED = [
    ("Dear {name}, your order is ready", "Amina", "Dear Amina, your order is ready"),
    ("Dear {name}, your order is ready", None, "Dear, your order is ready"),
    ("Hi {name}, your order is ready", "", "Hi, your order is ready"),
    ("Hi {name}, your order is ready", "   ", "Hi, your order is ready"),
    ("Hello {name}! Your order is ready", None, "Hello! Your order is ready"),
    ("Thank you, {name}.", None, "Thank you."),
    ("Thank you, {name}", None, "Thank you"),
    ("Thanks {name}", None, "Thanks"),
    ("{name}, your order is ready", None, "Your order is ready"),
    ("{name} your order is ready", None, "Your order is ready"),
    ("{name}: your code is 1234", None, "Your code is 1234"),
    ("Order ready. {name}, come and get it", None, "Order ready. Come and get it"),
    ("Your order, {name}, is ready", None, "Your order is ready"),
    ("Hello {name} and welcome", None, "Hello and welcome"),
    ("Habari {name},\nOda yako iko tayari", None, "Habari,\nOda yako iko tayari"),
    ("Hi {name} ({phone})", None, "Hi (+254711000061)"),
    ("Hi {name} ({phone})", "Amina", "Hi Amina (+254711000061)"),
    ("Your number is {phone}", None, "Your number is +254711000061"),
    ("Use code {{SAVE10}} at {{shop}}", None, "Use code {SAVE10} at {shop}"),
    ("A } then a { stay as they are", None, "A } then a { stay as they are"),
    ("Smile :} {name}", "Amina", "Smile :} Amina"),
    ("{{name}} is literal", "Amina", "{name} is literal"),
    ("Hi {name}", "Wanjirũ Kamau", "Hi Wanjirũ Kamau"),
]


@pytest.mark.parametrize(("template", "name", "expected"), RENDERED)
def test_rendering(template: str, name: str | None, expected: str) -> None:
    from shared.placeholders import render

    assert render(template, name=name, phone=PHONE) == expected


@pytest.mark.parametrize(
    ("template", "error"),
    [
        ("Hi {nme}", "unknown placeholder {nme}"),
        ("Hi {Name}", "unknown placeholder {Name}"),
        ("Hi { name }", "unknown placeholder { name }"),
        ("Hi {}", "unknown placeholder {}"),
        ('Data {"a": 1}', 'unknown placeholder {"a": 1}'),
        ("{name}", "is empty for a contact without a name"),
        (" {name} ", "is empty for a contact without a name"),
    ],
)
def test_check_names_what_is_wrong(template: str, error: str) -> None:
    from shared.placeholders import BadPlaceholder, check

    with pytest.raises(BadPlaceholder, match=None) as caught:
        check(template, "message")
    assert error in str(caught.value) and str(caught.value).startswith("message ")


@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        ("/api/cycles", {"message": "Hi {nme}"}, "message has an unknown placeholder {nme}"),
        (
            "/api/cycles",
            {"message": "Hi", "voice_message": "Hi {first_name}"},
            "voice_message has an unknown placeholder {first_name}",
        ),
        ("/api/cycles", {"message": "Hi {nme}", "dry_run": True}, "unknown placeholder {nme}"),
        ("/api/schedules", {"name": "s", "cron": "0 9 * * *", "message": "Hi {x}"}, "unknown placeholder {x}"),
        ("/communicate", {"to": PHONE, "message": "Hi {nme}"}, "unknown placeholder {nme}"),
    ],
)
def test_unknown_placeholders_are_a_400_naming_them(
    client, session, path: str, body: dict[str, Any], error: str
) -> None:
    response = client.post(path, json=body, headers=HEADERS)
    assert response.status_code == 400
    assert error in response.get_json()["error"]
    assert "{name}" in response.get_json()["error"]  # says what is allowed


def test_a_one_off_send_is_rendered_for_its_contact(client, session, monkeypatch) -> None:
    monkeypatch.setattr(client.application.extensions["reach"].celery, "send_task", lambda *a, **k: None)
    session.add(Contact(phone=PHONE, name="Amina", status=ContactStatus.NEW))
    session.commit()
    for to in (PHONE, "+254711000062"):  # a known contact with a name, and a new number without one
        response = client.post(
            "/communicate", json={"to": to, "message": "Hi {name}, call us on {{0800}}"}, headers=HEADERS
        )
        assert response.status_code == 202, response.get_data(as_text=True)
    texts = {m.phone: m.text for m in session.scalars(select(Message))}
    assert texts == {PHONE: "Hi Amina, call us on {0800}", "+254711000062": "Hi, call us on {0800}"}


# -- a cycle: SMS grouped by rendered text, the voice script rendered ------------------------------------------


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    server = run_simulator_in_thread(Scenario.from_dict({}), api_key=SIM_KEY, username="sandbox")
    yield server
    server.stop()


@pytest.fixture
def at(sim: SimulatorServer, monkeypatch: pytest.MonkeyPatch) -> AtClient:
    client = AtClient(sim_settings(sim))
    monkeypatch.setattr(cycles.sms, "get_at_client", lambda: client)
    monkeypatch.setattr(cycles.calls, "get_at_client", lambda: client)
    return client


NAMES = {"+254711000071": "Amina", "+254711000072": "Baraka", "+254711000073": None, "+254711000074": None}


def cycle_over(session, message: str, voice_message: str | None = None, status=ContactStatus.NEW) -> int:
    session.execute(insert(Contact), [{"phone": p, "name": n, "status": status} for p, n in NAMES.items()])
    cycle_id = shared_cycles.start_cycle(session, message, voice_message)
    cycles.plan_cycle(session, cycle_id)
    session.commit()
    return cycle_id


def sent_texts(sim: SimulatorServer) -> Counter[tuple[str, int]]:
    """(text, recipients) of each /messaging request the simulator got."""
    return Counter((r["form"]["message"], len(r["form"]["to"].split(","))) for r in sim.requests("/version1/messaging"))


def test_sms_to_many_contacts_go_one_request_per_rendered_text(session, sim, at) -> None:
    cycle_id = cycle_over(session, "Hi {name}, order {{42}} is ready")

    assert cycles.dispatch_sms(cycle_id, budget_seconds=5) == "idle"

    assert sent_texts(sim) == Counter(
        {
            ("Hi Amina, order {42} is ready", 1): 1,
            ("Hi Baraka, order {42} is ready", 1): 1,
            ("Hi, order {42} is ready", 2): 1,  # the two without a name share one request
        }
    )
    texts = {m.phone: (m.text, m.send_state) for m in session.scalars(select(Message))}
    assert texts["+254711000071"] == ("Hi Amina, order {42} is ready", "sent")
    assert texts["+254711000074"] == ("Hi, order {42} is ready", "sent")


def test_a_text_without_placeholders_is_still_one_request_per_batch(session, sim, at) -> None:
    cycle_id = cycle_over(session, "Your order {{42}} is ready")
    assert cycles.dispatch_sms(cycle_id, budget_seconds=5) == "idle"
    assert sent_texts(sim) == Counter({("Your order {42} is ready", 4): 1})


def test_the_call_speaks_the_rendered_voice_text(session, sim, at) -> None:
    cycle_id = cycle_over(session, "Hi {name}", "Hello {name}, this is your bank", status=ContactStatus.INACTIVE)

    cycles.dispatch_calls(cycle_id)

    calls = {c.phone: c for c in session.scalars(select(Call))}
    assert calls["+254711000072"].message == "Hello Baraka, this is your bank"
    assert calls["+254711000073"].message == "Hello, this is your bank"
    store = get_store()
    for phone, call in calls.items():
        assert call.session_id is not None
        assert store.lookup_script(session_id=call.session_id, phone=None) == call.message
        assert store.lookup_script(session_id="unknown", phone=phone) == call.message
