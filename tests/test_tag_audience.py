"""Tags as an audience (design §4.1): contacts get tags on import (JSON and CSV), and a cycle or a schedule
with `tags` reaches only the contacts carrying at least one of them. Against the real Postgres."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from reach_cli.main import cli
from shared.models import Contact, ContactStatus, Cycle, CycleItem

# `tasks`, not `tasks.start_due_cycles`: see tests/test_cycle_rules.py (collection and Celery's configuration).
from worker import cycles, tasks

VIP, NAIROBI, PLAIN, OTHER = "+254711000051", "+254711000052", "+254711000053", "+254711000054"


@pytest.fixture
def tagged(session: Any, task_lists: Any) -> None:
    session.add_all(
        [
            Contact(phone=VIP, status=ContactStatus.NEW, tags=["vip"]),
            Contact(phone=NAIROBI, status=ContactStatus.NEW, tags=["nairobi", "staff"]),
            Contact(phone=PLAIN, status=ContactStatus.NEW),
            Contact(phone=OTHER, status=ContactStatus.NEW, tags=["mombasa"]),
        ]
    )
    session.commit()


def stored_tags(session: Any) -> dict[str, list[str]]:
    session.expire_all()
    return {c.phone: c.tags for c in session.scalars(select(Contact).order_by(Contact.phone))}


def planned_phones(session: Any, cycle_id: int) -> set[str]:
    cycles.plan_cycle(session, cycle_id)
    session.commit()
    query = select(Contact.phone).join(CycleItem, CycleItem.contact_id == Contact.id)
    return set(session.scalars(query.where(CycleItem.cycle_id == cycle_id)))


# -- import ----------------------------------------------------------------------------------------------


def test_json_import_stores_tags_by_the_patch_rules(client: Any, operator_headers: dict[str, str], session) -> None:
    rows = [
        {"phone": "0711000051", "tags": ["VIP", " nairobi ", "vip"]},
        {"phone": "0711000052", "name": "Baraka"},
        {"phone": "0711000053", "tags": ["a;b"]},
        {"phone": "0711000054", "tags": "vip"},
    ]
    response = client.post("/api/contacts", json=rows, headers=operator_headers)

    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert (body["created"], [r["reason"] for r in body["refused"]]) == (
        2,
        ["field tags[0] must not contain ';' or ','", "field tags must be a list of strings, not a string"],
    )
    assert stored_tags(session) == {VIP: ["vip", "nairobi"], NAIROBI: []}


def test_csv_import_reads_tags_separated_by_semicolons(client: Any, operator_headers: dict[str, str], session) -> None:
    body = "phone,name,tags\n0711000051,Amina,VIP; nairobi\n0711000052,Baraka,\n"
    response = client.post("/api/contacts", data=body, content_type="text/csv", headers=operator_headers)

    assert response.status_code == 200, response.get_json()
    assert stored_tags(session) == {VIP: ["vip", "nairobi"], NAIROBI: []}
    # A row without tags keeps the tags a contact has; one with tags replaces them, as a name does.
    again = "phone,tags\n0711000051,\n0711000052,staff\n"
    client.post("/api/contacts", data=again, content_type="text/csv", headers=operator_headers)
    assert stored_tags(session) == {VIP: ["vip", "nairobi"], NAIROBI: ["staff"]}


# -- cycles ------------------------------------------------------------------------------------------------


def test_a_cycle_with_tags_reaches_only_contacts_carrying_one(
    client: Any, operator_headers: dict[str, str], session, tagged: None
) -> None:
    doc = {"message": "Staff meeting", "tags": ["VIP", "nairobi"]}
    response = client.post("/api/cycles", json=doc, headers=operator_headers)
    assert response.status_code == 202, response.get_json()
    cycle_id = response.get_json()["id"]

    assert planned_phones(session, cycle_id) == {VIP, NAIROBI}
    shown = client.get(f"/api/cycles/{cycle_id}", headers=operator_headers).get_json()
    assert shown["tags"] == ["vip", "nairobi"]
    assert shown["sms"] + shown["voice"] == 2


def test_a_cycle_without_tags_reaches_everyone(
    client: Any, operator_headers: dict[str, str], session, tagged: None
) -> None:
    response = client.post("/api/cycles", json={"message": "All hands"}, headers=operator_headers)
    cycle_id = response.get_json()["id"]

    assert planned_phones(session, cycle_id) == {VIP, NAIROBI, PLAIN, OTHER}
    assert client.get(f"/api/cycles/{cycle_id}", headers=operator_headers).get_json()["tags"] is None


def test_the_dry_run_counts_only_tagged_contacts(client: Any, operator_headers: dict[str, str], tagged: None) -> None:
    doc = {"message": "Staff meeting", "tags": ["staff"], "dry_run": True}
    body = client.post("/api/cycles", json=doc, headers=operator_headers).get_json()

    assert body["sms"] + body["voice"] == 1
    assert session_free_cycle_count(client, operator_headers) == 0


def session_free_cycle_count(client: Any, headers: dict[str, str]) -> int:
    return len(client.get("/api/cycles", headers=headers).get_json()["cycles"])


def test_the_cli_takes_repeatable_tags(session, tagged: None) -> None:
    runner = CliRunner()
    args = ["cycle", "run", "--message", "Hi", "--tag", "vip", "--tag", "Mombasa"]
    dry = runner.invoke(cli, [*args, "--dry-run", "--json"], prog_name="reach", catch_exceptions=False)
    assert dry.exit_code == 0, dry.output
    preview = json.loads(dry.output)
    assert preview["sms"] + preview["voice"] == 2

    started = runner.invoke(cli, [*args, "--json"], prog_name="reach", catch_exceptions=False)
    cycle_id = session.scalar(select(Cycle.id).order_by(Cycle.id.desc()))
    assert started.exit_code == 0, started.output
    assert planned_phones(session, cycle_id) == {VIP, OTHER}

    bad = runner.invoke(cli, [*args[:4], "--tag", "a;b"], prog_name="reach")
    assert bad.exit_code == 2 and "--tag must not contain ';' or ','" in bad.output, bad.output


BAD_TAGS = [
    ([], "field tags must list at least one tag (leave it out for every contact)"),
    ("vip", "field tags must be a list of strings, not a string"),
    (None, "field tags must be a list of strings, not null"),
    (["vip", 3], "field tags[1] must be a string, not a number"),
    (["  "], "field tags[0] is empty"),
]


@pytest.mark.parametrize(("tags", "error"), BAD_TAGS)
def test_empty_or_bad_tags_are_a_400_and_start_nothing(
    client: Any, operator_headers: dict[str, str], tags: Any, error: str, task_lists: Any
) -> None:
    for dry_run in (False, True):
        doc = {"message": "Hi", "tags": tags, "dry_run": dry_run}
        response = client.post("/api/cycles", json=doc, headers=operator_headers)
        assert (response.status_code, response.get_json()) == (400, {"error": error})
    schedule = {"name": "weekly", "cron": "0 9 * * 1", "message": "Hi", "tags": tags}
    response = client.post("/api/schedules", json=schedule, headers=operator_headers)
    assert (response.status_code, response.get_json()) == (400, {"error": error})
    assert session_free_cycle_count(client, operator_headers) == 0
    assert client.get("/api/schedules", headers=operator_headers).get_json()["schedules"] == []


# -- schedules ---------------------------------------------------------------------------------------------


def test_a_schedules_tags_carry_into_its_cycles(
    client: Any, operator_headers: dict[str, str], session, tagged: None
) -> None:
    doc = {"name": "hourly", "cron": "0 * * * *", "message": "News", "tags": ["Mombasa"]}
    response = client.post("/api/schedules", json=doc, headers=operator_headers)
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["tags"] == ["mombasa"]

    due = datetime.now(UTC).replace(minute=0, second=20, microsecond=0) + timedelta(hours=1)
    (cycle_id,) = tasks.start_due_cycles(due)

    assert planned_phones(session, cycle_id) == {OTHER}
    assert session.get(Cycle, cycle_id).tags == ["mombasa"]
