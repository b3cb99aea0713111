"""`reach contacts set` and `reach contacts delete` through click's runner, against the real Postgres and the
test session's private Redis: the same rules as `PATCH` and `DELETE /api/contacts/<phone>`."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from reach_cli.main import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_USAGE, cli
from shared.models import Contact, ContactStatus, Message

PHONE = "+254711000081"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def invoke(runner: CliRunner, *args: str, input: str | None = None) -> Result:
    return runner.invoke(cli, list(args), prog_name="reach", catch_exceptions=False, input=input)


def error_of(result: Result) -> str:
    assert result.stderr.startswith("error: "), result.stderr
    assert "Traceback" not in result.output + result.stderr
    return result.stderr


@pytest.fixture
def contact(session: Any) -> Contact:
    row = Contact(phone=PHONE, name="Amina", status=ContactStatus.ACTIVE)
    session.add(row)
    session.commit()
    return row


def reloaded(session: Any) -> Contact | None:
    session.expire_all()
    return session.scalars(select(Contact).where(Contact.phone == PHONE)).one_or_none()


def test_set_changes_name_tags_and_language(runner, session, contact) -> None:
    result = invoke(
        runner, "contacts", "set", "0711000081", "--name", "Amina W.", "--tag", "VIP", "--tag", "nairobi",
        "--language", "sw", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.output)
    assert (doc["name"], doc["tags"], doc["language"], doc["status"]) == (
        "Amina W.",
        ["vip", "nairobi"],
        "sw",
        "active",
    )
    row = reloaded(session)
    assert (row.name, row.tags, row.language) == ("Amina W.", ["vip", "nairobi"], "sw")


def test_set_without_tags_clears_them_and_leaves_the_rest(runner, session, contact) -> None:
    invoke(runner, "contacts", "set", PHONE, "--tag", "vip")
    result = invoke(runner, "contacts", "set", PHONE, "--no-tags")
    assert result.exit_code == 0, result.stderr
    row = reloaded(session)
    assert (row.name, row.tags or []) == ("Amina", [])


def test_opt_out_and_back_in_are_recorded_as_the_cli(runner, session, contact) -> None:
    result = invoke(runner, "contacts", "set", PHONE, "--opt-out")
    assert result.exit_code == 0, result.stderr
    row = reloaded(session)
    assert row.status is ContactStatus.OPTED_OUT and row.opted_out_at is not None
    assert row.consent_by.startswith("operator: CLI")
    assert invoke(runner, "contacts", "set", PHONE, "--opt-in").exit_code == 0
    assert reloaded(session).status is ContactStatus.NEW


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--language", "english"], "field language must be a language code"),
        (["--tag", "a;b"], "field tags[0] must not contain ';' or ','"),
        (["--name", "x" * 201], "field name is too long"),
        ([], "nothing to change"),
        (["--opt-out", "--opt-in"], "--opt-out and --opt-in"),
        (["--tag", "a", "--no-tags"], "--tag and --no-tags"),
    ],
)
def test_set_refuses_bad_input_with_exit_2(runner, session, contact, args: list[str], message: str) -> None:
    result = invoke(runner, "contacts", "set", PHONE, *args)
    assert result.exit_code == EXIT_USAGE
    assert message in error_of(result)
    assert reloaded(session).name == "Amina"


def test_set_and_delete_of_an_unknown_contact_exit_4(runner, session) -> None:
    assert invoke(runner, "contacts", "set", PHONE, "--name", "x").exit_code == EXIT_NOT_FOUND
    assert invoke(runner, "contacts", "delete", PHONE, "--yes").exit_code == EXIT_NOT_FOUND
    assert invoke(runner, "contacts", "delete", "hello", "--yes").exit_code == EXIT_USAGE


def test_delete_asks_first(runner, session, contact) -> None:
    session.add(Message(contact_id=contact.id, phone=PHONE, text="Hi Amina"))
    session.commit()
    kept = invoke(runner, "contacts", "delete", PHONE, input="n\n")
    assert kept.exit_code == EXIT_FAILED
    assert "Erase +254711000081" in kept.output
    assert reloaded(session) is not None

    erased = invoke(runner, "contacts", "delete", PHONE, input="y\n")
    assert erased.exit_code == 0, erased.stderr
    assert reloaded(session) is None
    message = session.scalars(select(Message)).one()
    assert PHONE not in message.phone and "Amina" not in message.text


def test_delete_yes_does_not_ask(runner, session, contact) -> None:
    result = invoke(runner, "contacts", "delete", "0711000081", "--yes")
    assert result.exit_code == 0, result.stderr
    assert "erased +254711000081" in result.output
    assert reloaded(session) is None
