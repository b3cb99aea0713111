"""A cycle not planned yet has no items (only planning inserts them, and it records their range of ids in the same
transaction: shared/cycle_items.py). Reading or deleting such a cycle (a scheduled or skipped one, one still
planning or paused before its plan) must therefore read none of cycle_items, which holds every cycle's items
(millions); it read all of them, with no index on the cycle's id to go by."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

from sqlalchemy import delete

from shared import cycle_export, cycle_failures, cycle_report
from shared.models import Cycle, CycleState
from tests.cycle_support import items_read, plan_new_cycle


def _planned_and_waiting(session: Any) -> int:
    contacts = [{"phone": f"+2547112{n:05d}", "status": "active"} for n in range(40)]
    plan_new_cycle(session, contacts, "planned")
    waiting = Cycle(message="not planned yet", state=CycleState.PAUSED)
    session.add(waiting)
    session.commit()
    return waiting.id


def test_reading_a_cycle_not_planned_yet_reads_none_of_the_items(session: Any) -> None:
    waiting = _planned_and_waiting(session)
    before = items_read(session)
    report = cycle_report.report(session, waiting)
    page = cycle_failures.failures_page(session, waiting)
    exported = "".join(cycle_export.results_csv(lambda: nullcontext(session), waiting)).splitlines()
    assert items_read(session) == before
    assert report is not None and report["sms"] == 0
    assert page.rows == [] and len(exported) == 1  # the header only


def test_deleting_a_cycle_not_planned_yet_reads_none_of_the_items(session: Any) -> None:
    waiting = _planned_and_waiting(session)
    before = items_read(session)
    session.execute(delete(Cycle).where(Cycle.id == waiting))
    assert items_read(session) == before
