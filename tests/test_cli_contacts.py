"""`reach contacts` (list, import, show, set, delete) through click's runner, against the real Postgres and the
test session's private Redis: the same rules as `PATCH` and `DELETE /api/contacts/<phone>`."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError

from reach_cli.main import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_USAGE
from shared.models import Call, Contact, ContactStatus, Message
from tests.cli_support import error_of, invoke, make_cycle

PHONE = "+254711000081"


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


# -- contacts list -------------------------------------------------------------------------------------------


def test_contacts_list_by_status(runner: CliRunner, contacts: dict[ContactStatus, list[Contact]]) -> None:
    result = invoke(runner, "contacts", "list", "--status", "inactive")

    assert result.exit_code == 0, result.stderr
    header, *rows, summary = result.output.splitlines()
    assert header.split()[:3] == ["phone", "status", "name"]
    assert [row.split()[0] for row in rows] == [c.phone for c in contacts[ContactStatus.INACTIVE]]
    assert all(row.split()[1] == "inactive" for row in rows)
    assert summary == "2 contacts inactive"

    everyone = invoke(runner, "contacts", "list", "--limit", "4")
    assert everyone.output.splitlines()[-1] == "10 contacts; the first 4 shown (--limit)"
    assert len(everyone.output.splitlines()) == 6

    doc = json.loads(invoke(runner, "contacts", "list", "--status", "opted_out", "--json").output)
    assert doc["total"] == 1
    assert [c["phone"] for c in doc["contacts"]] == [contacts[ContactStatus.OPTED_OUT][0].phone]


def test_contacts_list_refuses_an_unknown_status(runner: CliRunner) -> None:
    result = invoke(runner, "contacts", "list", "--status", "happy")
    assert result.exit_code == 2
    assert "'happy' is not one of 'new', 'pending', 'active', 'inactive', 'opted_out', 'invalid'" in result.stderr


# -- contacts import -----------------------------------------------------------------------------------------


def test_contacts_import_adds_updates_and_writes_refused_rows_with_reasons(
    runner: CliRunner, session: Any, tmp_path: Any
) -> None:
    session.add(Contact(phone="+254711000001", name="Old name", status=ContactStatus.ACTIVE))
    session.commit()
    source = tmp_path / "contacts.csv"
    source.write_text("phone,name\n+254711000001,Amina\n0711000002,Brian\n254711000003,\nhello,Bad\n0711000002,Again\n")

    result = invoke(runner, "contacts", "import", str(source))

    assert result.exit_code == 0, result.stderr
    summary, where = result.stdout.splitlines()
    assert summary.startswith("5 rows: 2 added, 1 updated, 2 refused (")
    refused = tmp_path / "contacts.refused.csv"
    assert where == f"refused rows and why: {refused}"
    assert list(csv.reader(refused.read_text().splitlines())) == [
        ["row", "phone", "reason"],
        ["4", "hello", "not a phone number (it has letters in it)"],
        ["5", "+254711000002", "duplicate of row 2"],
    ]
    session.expire_all()
    found = {c.phone: (c.name, c.status) for c in session.scalars(select(Contact))}
    assert found == {
        "+254711000001": ("Amina", ContactStatus.ACTIVE),  # an import never resets a status
        "+254711000002": ("Brian", ContactStatus.NEW),
        "+254711000003": (None, ContactStatus.NEW),
    }


def test_contacts_import_refused_file_option(runner: CliRunner, session: Any, tmp_path: Any) -> None:
    source, target = tmp_path / "in.csv", tmp_path / "why.csv"
    source.write_text("phone\n12\n")
    result = invoke(runner, "contacts", "import", str(source), "--refused", str(target))
    assert result.exit_code == 0
    [header, row] = csv.reader(target.read_text().splitlines())
    assert (header, row[:2]) == (["row", "phone", "reason"], ["1", "12"])
    assert not (tmp_path / "in.refused.csv").exists()


def test_contacts_import_without_a_phone_column_exits_2(runner: CliRunner, session: Any, tmp_path: Any) -> None:
    source = tmp_path / "contacts.csv"
    source.write_text("number,name\n+254711000001,Amina\n")
    result = invoke(runner, "contacts", "import", str(source))
    assert result.exit_code == EXIT_USAGE
    assert "needs a header row with a 'phone' column" in error_of(result)


def test_import_reports_progress_chunk_by_chunk(session: Any) -> None:
    from shared.imports import IMPORT_CHUNK, import_contacts

    rows = [{"phone": f"+2547110{i:05d}"} for i in range(2 * IMPORT_CHUNK + 500)]
    steps: list[int] = []
    report = import_contacts(session, rows, "KE", progress=steps.append)
    session.commit()

    assert steps == [IMPORT_CHUNK, IMPORT_CHUNK, 500]
    assert (report.created, report.updated, report.refused) == (len(rows), 0, [])
    assert session.scalar(select(func.count()).select_from(Contact)) == len(rows)


# -- contacts show -------------------------------------------------------------------------------------------


@pytest.fixture
def contact_with_history(session: Any) -> Contact:
    contact = Contact(
        phone="+254711000001", name="Amina", status=ContactStatus.INACTIVE, last_sms_status="Failed",
        last_failure_reason="AbsentSubscriber", last_hangup_cause="NO_ANSWER",
    )  # fmt: skip
    session.add(contact)
    session.flush()
    cycle_id = make_cycle(session)
    sent_at = datetime(2026, 11, 20, 9, 0, 5, tzinfo=UTC)
    session.add_all([
        Message(contact_id=contact.id, phone=contact.phone, text="Bill", cycle_id=cycle_id, send_state="sent",
                status="Failed", failure_reason="AbsentSubscriber", cost=Decimal("0.8000"), currency="KES",
                created_at=sent_at, status_at=sent_at.replace(minute=3)),
        Call(contact_id=contact.id, phone=contact.phone, cycle_id=cycle_id, send_state="sent", status="Aborted",
             outcome="retry_later", hangup_cause="NO_ANSWER", created_at=sent_at.replace(hour=10),
             ended_at=sent_at.replace(hour=10, minute=1)),
        Call(contact_id=contact.id, phone=contact.phone, cycle_id=cycle_id, send_state="sent", status="Success",
             outcome="answered", acknowledged=True, duration_seconds=14, amount=Decimal("2.5000"), currency="KES",
             created_at=sent_at.replace(hour=11), ended_at=sent_at.replace(hour=11, minute=1)),
    ])  # fmt: skip
    session.commit()
    contact.messages_cycle_id = cycle_id  # type: ignore[attr-defined]  (for the assertions)
    return contact


def test_contacts_show_prints_the_contact_and_its_history(runner: CliRunner, contact_with_history: Contact) -> None:
    result = invoke(runner, "contacts", "show", "0711000001")

    assert result.exit_code == 0, result.stderr
    out = result.output
    assert "phone: +254711000001" in out
    assert "status: inactive" in out
    sms = out.split("SMS (1 latest")[1].split("Calls (")[0].splitlines()
    assert sms[1].split()[:2] == ["sent", "cycle"]
    cycle_id = str(contact_with_history.messages_cycle_id)
    assert sms[2].split() == ["2026-11-20", "09:00:05", cycle_id, "sent", "Failed", "AbsentSubscriber",
                              "2026-11-20", "09:03:05", "KES", "0.8000"]  # fmt: skip
    calls = out.split("Calls (2 latest, newest first; times UTC)")[1].splitlines()
    answered, unanswered = calls[2].split(), calls[3].split()
    assert answered[:2] == ["2026-11-20", "11:00:05"]
    assert answered[3:7] == ["Success", "answered", "-", "yes"]
    assert answered[-2:] == ["KES", "2.5000"]
    assert unanswered[3:7] == ["Aborted", "retry_later", "NO_ANSWER", "no"]


def test_contacts_show_json_is_the_operator_apis_answer(
    runner: CliRunner, contact_with_history: Contact, client: Any, operator_headers: dict[str, str]
) -> None:
    result = invoke(runner, "contacts", "show", "+254711000001", "--json")

    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.output)
    assert doc == client.get("/api/contacts/+254711000001", headers=operator_headers).json
    assert [m["failure_reason"] for m in doc["messages"]] == ["AbsentSubscriber"]
    assert [(c["hangup_cause"], c["amount"]) for c in doc["calls"]] == [(None, "2.5000"), ("NO_ANSWER", None)]


def test_contacts_show_unknown_exits_4_and_bad_number_exits_2(runner: CliRunner, session: Any) -> None:
    unknown = invoke(runner, "contacts", "show", "+254711999999")
    assert unknown.exit_code == EXIT_NOT_FOUND
    assert error_of(unknown) == "error: no contact +254711999999\n"
    bad = invoke(runner, "contacts", "show", "hello")
    assert bad.exit_code == EXIT_USAGE
    assert "bad phone number 'hello'" in error_of(bad)


class AnswerAfter(io.BytesIO):
    """Standard input that runs `meanwhile` when the prompt first reads it (click probes it with read(0)
    before the command runs), then answers `answer`."""

    def __init__(self, meanwhile: Any, answer: bytes) -> None:
        super().__init__(answer)
        self.meanwhile: Any = meanwhile

    def _asked(self) -> None:
        if self.meanwhile is not None:
            self.meanwhile, check = None, self.meanwhile
            check()

    def read(self, size: int | None = -1) -> bytes:
        if size != 0:
            self._asked()
        return super().read(size)

    def read1(self, size: int = -1) -> bytes:
        self._asked()
        return super().read1(size)

    def readline(self, size: int | None = -1) -> bytes:
        self._asked()
        return super().readline(size)


def test_delete_holds_nothing_while_it_asks(runner, session, contact) -> None:
    """An operator may leave the question on screen for minutes: meanwhile a delivery report about the contact
    (the drain updates the contact's row) must not wait. Before, the contact stayed locked FOR UPDATE during the
    question, and every drain batch with a report about it waited."""
    changed: list[int] = []

    def report_about_the_contact() -> None:
        update = text("UPDATE contacts SET last_sms_status = 'Success' WHERE phone = :phone")
        try:
            with session.get_bind().connect() as drain, drain.begin():
                drain.execute(text("SET LOCAL lock_timeout = '2s'"))
                changed.append(drain.execute(update, {"phone": PHONE}).rowcount)
        except OperationalError as exc:
            changed.append(str(exc.orig))

    erased = invoke(runner, "contacts", "delete", PHONE, input=AnswerAfter(report_about_the_contact, b"y\n"))

    assert changed == [1]
    assert erased.exit_code == 0, erased.stderr
    assert reloaded(session) is None
