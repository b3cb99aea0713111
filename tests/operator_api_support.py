"""What the operator API tests share (tests/test_operator_api*.py): bearer headers, the JSON error, contacts
added directly, and `sent_tasks`, the tasks the receiver hands to Celery, captured. A plugin (tests/conftest.py
`pytest_plugins`), so `sent_tasks` is there for every test module; the helpers are imported."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

from shared.models import Contact, ContactStatus
from tests.conftest import FIXTURES

SEED_SEND = json.loads((FIXTURES / "seed" / "communicate_send.json").read_text())
SEED_PHONE = "+254722000000"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error_of(response: Any) -> str:
    """The JSON error message; every error must be JSON, never an HTML page."""
    assert response.is_json, response.get_data(as_text=True)
    return response.get_json()["error"]


def add_contact(session: Any, phone: str, status: ContactStatus = ContactStatus.NEW, **fields: Any) -> Contact:
    contact = Contact(phone=phone, status=status, **fields)
    session.add(contact)
    session.commit()
    return contact


def phones_in_db(session: Any) -> dict[str, str | None]:
    session.expire_all()
    return {c.phone: c.name for c in session.scalars(select(Contact))}


@pytest.fixture
def sent_tasks(app: Any, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[Any], str | None]]:
    """Capture the tasks the receiver hands to Celery (name, args, the queue it routes to) unpublished."""
    calls: list[tuple[str, list[Any], str | None]] = []
    celery = app.extensions["reach"].celery

    def record(name: str, args: list[Any] | None = None, queue: str | None = None, **_: Any) -> None:
        calls.append((name, list(args or []), queue or celery.amqp.router.route({}, name)["queue"].name))

    monkeypatch.setattr(celery, "send_task", record)
    return calls
