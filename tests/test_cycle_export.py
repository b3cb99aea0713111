"""A cycle's results as CSV and the follow-up list of contacts it did not reach, through the API and the CLI.
Against the real Postgres; the rows are what the worker would have written for each outcome."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from typing import Any

import pytest
from click.testing import CliRunner

from reach_cli.main import cli
from shared.models import Call, Channel, Contact, ContactStatus, Cycle, CycleItem, CycleState, ItemState, Message
from tests.cycle_support import record_items_range

DELIVERED, FAILED, ANSWERED, MISSED = "+254711000061", "+254711000062", "+254711000063", "+254711000064"


@pytest.fixture
def cycle_id(session: Any) -> int:
    """Four contacts: an SMS delivered, an SMS failed, a call answered, a call not answered."""
    cycle = Cycle(message="Hi", state=CycleState.DONE)
    contacts = {
        phone: Contact(phone=phone, name=name, status=ContactStatus.ACTIVE)
        for phone, name in [(DELIVERED, "Amina"), (FAILED, "=HYPERLINK(1)"), (ANSWERED, None), (MISSED, "Otieno")]
    }
    session.add_all([cycle, *contacts.values()])
    session.flush()
    sms = {
        DELIVERED: Message(phone=DELIVERED, text="Hi", status="Success", cost=Decimal("0.80"), currency="KES"),
        FAILED: Message(phone=FAILED, text="Hi", status="Failed", failure_reason="UserInBlacklist"),
    }
    calls = {
        ANSWERED: Call(phone=ANSWERED, status="Success", outcome="answered", amount=Decimal("1.50"), currency="KES"),
        MISSED: Call(phone=MISSED, status="NotAnswered", outcome="not_answered", hangup_cause="NO_ANSWER"),
    }
    for row in [*sms.values(), *calls.values()]:
        row.cycle_id, row.contact_id = cycle.id, contacts[row.phone].id
    session.add_all([*sms.values(), *calls.values()])
    session.flush()
    for phone, contact in contacts.items():
        channel = Channel.SMS if phone in sms else Channel.VOICE
        state = ItemState.FAILED if phone == FAILED else ItemState.SENT if channel is Channel.SMS else ItemState.DONE
        session.add(
            CycleItem(
                cycle_id=cycle.id,
                contact_id=contact.id,
                channel=channel,
                state=state,
                message_id=sms[phone].id if phone in sms else None,
                call_id=calls[phone].id if phone in calls else None,
            )
        )
    record_items_range(session, cycle.id)
    session.commit()
    return cycle.id


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_results_csv_has_every_contacts_outcome(client: Any, operator_headers: dict[str, str], cycle_id: int) -> None:
    response = client.get(f"/api/cycles/{cycle_id}/results.csv", headers=operator_headers)

    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert f'filename="cycle-{cycle_id}-results.csv"' in response.headers["Content-Disposition"]
    found = {row["phone"]: row for row in rows(response.get_data(as_text=True))}
    assert set(found) == {DELIVERED, FAILED, ANSWERED, MISSED}
    delivered, failed, answered, missed = (found[p] for p in (DELIVERED, FAILED, ANSWERED, MISSED))
    assert (delivered["name"], delivered["channel"], delivered["sms_status"], Decimal(delivered["cost"])) == (
        "Amina",
        "sms",
        "Success",
        Decimal("0.80"),  # as AT billed it, to the precision stored
    )
    assert (failed["name"], failed["item_state"], failed["sms_failure_reason"]) == (
        "'=HYPERLINK(1)",  # through shared/csv_safe.py: never a formula in a spreadsheet
        "failed",
        "UserInBlacklist",
    )
    assert (answered["channel"], answered["call_status"], Decimal(answered["cost"]), answered["currency"]) == (
        "voice",
        "Success",
        Decimal("1.50"),
        "KES",
    )
    assert (missed["call_status"], missed["hangup_cause"], missed["cost"]) == ("NotAnswered", "NO_ANSWER", "")


def test_unreached_csv_lists_only_contacts_reached_neither_by_sms_nor_by_an_answered_call(
    client: Any, operator_headers: dict[str, str], cycle_id: int
) -> None:
    response = client.get(f"/api/cycles/{cycle_id}/unreached.csv", headers=operator_headers)

    assert response.status_code == 200
    assert sorted(row["phone"] for row in rows(response.get_data(as_text=True))) == [FAILED, MISSED]


def test_exports_of_an_unknown_cycle_are_a_404(client: Any, operator_headers: dict[str, str], session) -> None:
    for name in ("results", "unreached"):
        response = client.get(f"/api/cycles/999999/{name}.csv", headers=operator_headers)
        assert (response.status_code, response.get_json()) == (404, {"error": "no cycle 999999"})


def test_the_cli_exports_to_a_file_and_the_unreached_to_stdout(cycle_id: int, tmp_path) -> None:
    runner = CliRunner()
    out = tmp_path / "results.csv"
    written = runner.invoke(cli, ["cycle", "export", str(cycle_id), "--out", str(out)], prog_name="reach")
    assert written.exit_code == 0, written.output
    assert {row["phone"] for row in rows(out.read_text())} == {DELIVERED, FAILED, ANSWERED, MISSED}

    unreached = runner.invoke(cli, ["cycle", "export", str(cycle_id), "--unreached"], prog_name="reach")
    assert unreached.exit_code == 0, unreached.output
    assert sorted(row["phone"] for row in rows(unreached.output)) == [FAILED, MISSED]

    missing = runner.invoke(cli, ["cycle", "export", "999999"], prog_name="reach")
    assert missing.exit_code == 4 and "no cycle 999999" in missing.output


def test_a_contact_who_confirmed_on_ussd_is_reached(
    client: Any, operator_headers: dict[str, str], cycle_id: int, session: Any
) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import select

    failed = session.scalars(
        select(CycleItem).join(Contact, Contact.id == CycleItem.contact_id).where(Contact.phone == FAILED)
    ).one()
    failed.confirmed_at = datetime.now(UTC)  # issue 14: read and confirmed on the USSD menu
    session.commit()
    response = client.get(f"/api/cycles/{cycle_id}/unreached.csv", headers=operator_headers)
    assert [row["phone"] for row in rows(response.get_data(as_text=True))] == [MISSED]
