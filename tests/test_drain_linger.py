"""A drain whose batch was not full waits a moment (DRAIN_LINGER_MS) before it claims again, so that reports
trickling in are applied in fuller batches; the wait never holds back a report already claimed, never follows
a full batch and never outlasts the task's budget.

The wait is the drain's `sleep` argument: here it is AT posting more reports meanwhile, on the real inbox, and
the batches are read back from Postgres (the rows one transaction wrote share its `xmin`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import text

from shared import db, inbox
from tests.test_drain import applied_reports, push, seed_messages
from worker.drain import drain_inbox

#: The waits are recorded, not slept: long enough that no apply, however slow the machine, outlasts it (a drain
#: waits only for what is left of the linger after its apply; at 50 ms four of these tests failed at load 20).
LINGER = 10.0


def transactions_of(inbox_ids: list[str]) -> set[str]:
    """The transactions that recorded these callbacks."""
    with db.session_scope() as session:
        rows = session.execute(
            text("SELECT xmin::text FROM raw_callbacks WHERE inbox_id = ANY(:ids)"), {"ids": inbox_ids}
        )
        return {row[0] for row in rows}


def recording(then: Callable[[int], None] | None = None) -> tuple[list[float], Callable[[float], None]]:
    """A `sleep` that records each wait and runs `then(n)` on the n-th (0-based)."""
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        if then is not None:
            then(len(waits))
        waits.append(seconds)

    return waits, sleep


def test_reports_posted_while_the_drain_lingers_are_applied_in_one_batch(clean: None, redis_client: Any) -> None:
    first, *later = seed_messages(4)
    box = inbox.Inbox(redis_client)
    first_id = push(box, "dlr", first)
    later_ids: list[str] = []

    def at_posts(nth: int) -> None:
        if nth == 0:
            later_ids.extend(push(box, "dlr", report) for report in later)

    waits, sleep = recording(at_posts)
    assert drain_inbox(box, batch_size=500, budget_seconds=30, linger_seconds=LINGER, sleep=sleep) == 4
    assert applied_reports() == 4
    assert len(transactions_of(later_ids)) == 1, "the reports posted during the wait were claimed apart"
    assert transactions_of([first_id]).isdisjoint(transactions_of(later_ids))
    assert waits and all(0 < wait <= LINGER for wait in waits)


def test_a_lone_report_is_applied_before_the_drain_waits(clean: None, redis_client: Any) -> None:
    (report,) = seed_messages(1)
    box = inbox.Inbox(redis_client)
    push(box, "dlr", report)
    applied_when_waiting: list[int] = []
    _waits, sleep = recording(lambda _nth: applied_when_waiting.append(applied_reports()))
    assert drain_inbox(box, batch_size=500, budget_seconds=30, linger_seconds=LINGER, sleep=sleep) == 1
    assert applied_when_waiting == [1], "the drain waited before applying the report it held"
    assert redis_client.llen(inbox.INBOX) == 0 and redis_client.zcard(inbox.CLAIMS) == 0


def test_a_full_batch_is_followed_by_the_next_claim_without_a_wait(clean: None, redis_client: Any) -> None:
    box = inbox.Inbox(redis_client)
    for report in seed_messages(5):
        push(box, "dlr", report)
    depth_when_waiting: list[int] = []
    _waits, sleep = recording(lambda _nth: depth_when_waiting.append(redis_client.llen(inbox.INBOX)))
    assert drain_inbox(box, batch_size=2, budget_seconds=30, linger_seconds=LINGER, sleep=sleep) == 5
    assert depth_when_waiting == [0], "the drain waited after a full batch, or not after the last, partial one"


def test_the_wait_ends_with_the_budget(clean: None, redis_client: Any) -> None:
    (report,) = seed_messages(1)
    box = inbox.Inbox(redis_client)
    push(box, "dlr", report)
    waits, sleep = recording()
    drain_inbox(box, batch_size=500, budget_seconds=5, linger_seconds=600, sleep=sleep)
    assert len(waits) == 1 and waits[0] <= 5


def counting_inbox(redis_client: Any) -> tuple[inbox.Inbox, list[int]]:
    """The real inbox, whose wake-ups (a drain task sent) are counted."""
    wakes: list[int] = []
    return inbox.Inbox(redis_client, wake=lambda: wakes.append(1)), wakes


def test_reports_posted_while_the_drain_lingers_wake_no_second_drainer(clean: None, redis_client: Any) -> None:
    first, *later = seed_messages(3)
    box, wakes = counting_inbox(redis_client)
    push(box, "dlr", first)
    redis_client.delete(inbox.NUDGE)  # the first push's mark has expired, as it does during a long drain
    woken_by_later: list[int] = []

    def at_posts(nth: int) -> None:
        if nth == 0:
            before = len(wakes)
            for report in later:
                push(box, "dlr", report)
            woken_by_later.append(len(wakes) - before)

    _waits, sleep = recording(at_posts)
    assert drain_inbox(box, batch_size=500, budget_seconds=30, linger_seconds=LINGER, sleep=sleep) == 3
    assert woken_by_later == [0], "a drain task was sent while a drainer was awake and waiting for them"


def test_a_drain_whose_budget_ran_out_wakes_its_successor(clean: None, redis_client: Any) -> None:
    box, wakes = counting_inbox(redis_client)
    for report in seed_messages(2):
        push(box, "dlr", report)
    assert wakes == [1] and redis_client.exists(inbox.NUDGE)  # the pushes' mark: a drainer was woken
    assert drain_inbox(box, batch_size=1, budget_seconds=0) == 0
    assert wakes == [1, 1], "the budget ran out with work left and no drainer was woken to go on"


def test_the_beats_safety_net_drain_never_lingers(clean: None, redis_client: Any, monkeypatch: Any) -> None:
    """beat sends a drain every 2 s in case a wake-up was lost. While a woken drain lingers, reports wait in the
    inbox, so that safety-net drain finds work: had it lingered too, the worker's two processes would both sit
    in drains' waits under steady traffic, and housekeeping (resending an interrupted item) waited 20-40 s
    instead of 9 (tests/test_worker.py, steady callback traffic). It applies what it finds and goes."""
    from worker import drain, tasks

    lingers: list[float] = []

    def drain_inbox_noting_its_linger(*args: Any, **kwargs: Any) -> int:
        lingers.append(kwargs.get("linger_seconds", 0.0))
        return drain_inbox(*args, **kwargs)

    monkeypatch.setattr(drain, "drain_inbox", drain_inbox_noting_its_linger)  # what beat's sweep_inbox calls
    box = inbox.Inbox(redis_client)
    for report in seed_messages(2):
        push(box, "dlr", report)
    beat_entry = tasks.app.conf.beat_schedule["drain-inbox"]
    assert tasks.drain.run(*beat_entry.get("args", ()), **beat_entry.get("kwargs", {})) == 2
    assert applied_reports() == 2 and lingers == [0.0]
