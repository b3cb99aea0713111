"""At most one drain lingers at a time (DRAIN_LINGER_MS): a drain takes the inbox's linger lease before it waits
for more reports, and one that cannot take it applies what waits and goes.

Without the lease two woken drains lingered at once, and a worker of two processes serving every queue (`reach
up`) sat in waits for a drain's whole budget while cycles and sends waited (tests/test_worker.py, steady
callback traffic). A drain that ends while another lingers leaves the wake-up mark to it: that one claims again
and takes the last look, so the reports pushed meanwhile wake no drain of their own.

As in tests/test_drain_linger.py the wait is the drain's `sleep` argument; here another drain runs during it,
on the real inbox.
"""

from __future__ import annotations

from typing import Any

import pytest

from shared import inbox
from tests.conftest import wait_for
from tests.test_drain import applied_reports, push, seed_messages
from tests.test_drain_linger import LINGER, counting_inbox, recording
from worker.drain import drain_inbox


def test_a_drain_woken_while_another_lingers_applies_what_waits_without_lingering(
    clean: None, redis_client: Any
) -> None:
    first, second = seed_messages(2)
    box = inbox.Inbox(redis_client)
    push(box, "dlr", first)
    second_waits: list[float] = []
    second_applied: list[int] = []

    def second_drain_runs(nth: int) -> None:
        if nth == 0:
            push(box, "dlr", second)
            waits, sleep = recording()
            applied = drain_inbox(box, batch_size=500, budget_seconds=30, linger_seconds=LINGER, sleep=sleep)
            second_applied.append(applied)
            second_waits.extend(waits)

    first_waits, sleep = recording(second_drain_runs)
    assert drain_inbox(box, batch_size=500, budget_seconds=30, linger_seconds=LINGER, sleep=sleep) == 1
    assert first_waits, "the first drain did not linger"
    assert second_applied == [1] and applied_reports() == 2
    assert second_waits == [], "a second drain lingered while the first one did"


def test_a_drain_that_ends_while_another_lingers_leaves_it_the_wake_up_mark(clean: None, redis_client: Any) -> None:
    first, second, later = seed_messages(3)
    box, wakes = counting_inbox(redis_client)
    push(box, "dlr", first)
    woken_by_later: list[int] = []

    def second_drain_then_at_posts(nth: int) -> None:
        if nth == 0:
            push(box, "dlr", second)
            drain_inbox(box, batch_size=500, budget_seconds=30, linger_seconds=LINGER, sleep=recording()[1])
            before = len(wakes)
            push(box, "dlr", later)
            woken_by_later.append(len(wakes) - before)

    _waits, sleep = recording(second_drain_then_at_posts)
    assert drain_inbox(box, batch_size=500, budget_seconds=30, linger_seconds=LINGER, sleep=sleep) == 2
    assert applied_reports() == 3
    assert woken_by_later == [0], "a report pushed while a drain lingered woke another drain"
    assert not redis_client.exists(inbox.NUDGE), "the lingering drain went idle without clearing the mark"


def test_the_lease_is_let_go_when_the_drain_ends_and_when_it_fails(clean: None, redis_client: Any) -> None:
    first, second = seed_messages(2)
    box = inbox.Inbox(redis_client)
    push(box, "dlr", first)
    held_while_waiting: list[bool] = []
    _waits, sleep = recording(lambda _nth: held_while_waiting.append(bool(redis_client.exists(inbox.LINGER_LEASE))))
    drain_inbox(box, batch_size=500, budget_seconds=30, linger_seconds=LINGER, sleep=sleep)
    assert held_while_waiting and all(held_while_waiting)
    assert not redis_client.exists(inbox.LINGER_LEASE), "a drain that ended kept the linger lease"

    push(box, "dlr", second)

    def interrupted(_seconds: float) -> None:
        raise KeyboardInterrupt  # a warm shutdown, or a time limit, during the wait

    with pytest.raises(KeyboardInterrupt):
        drain_inbox(box, batch_size=500, budget_seconds=30, linger_seconds=LINGER, sleep=interrupted)
    assert not redis_client.exists(inbox.LINGER_LEASE), "a drain stopped during its wait kept the linger lease"


def test_a_lease_left_by_a_dead_drainer_never_stops_draining_and_lapses(clean: None, redis_client: Any) -> None:
    """A drainer killed while it lingered (SIGKILL, OOM) leaves its lease: the next drains apply what waits without
    lingering, the wake-up mark lapses as it always did, and once the lease lapses a drain lingers again."""
    first, second, third = seed_messages(3)
    box, wakes = counting_inbox(redis_client)
    redis_client.set(inbox.LINGER_LEASE, "a drainer killed during its wait", px=1500)
    push(box, "dlr", first)
    waits, sleep = recording()
    assert drain_inbox(box, batch_size=500, budget_seconds=30, linger_seconds=LINGER, sleep=sleep) == 1
    assert waits == [] and applied_reports() == 1

    wait_for(lambda: not redis_client.exists(inbox.NUDGE), timeout=5, what="the wake-up mark to lapse")
    before = len(wakes)
    push(box, "dlr", second)
    assert len(wakes) == before + 1, "a report pushed after the mark lapsed woke no drain"

    wait_for(lambda: not redis_client.exists(inbox.LINGER_LEASE), timeout=5, what="the dead drainer's lease to lapse")
    push(box, "dlr", third)
    waits, sleep = recording()
    assert drain_inbox(box, batch_size=500, budget_seconds=30, linger_seconds=LINGER, sleep=sleep) == 2
    assert waits, "no drain lingered once the dead drainer's lease had lapsed"


def test_the_beats_safety_net_leaves_a_lingering_drain_its_batch(clean: None, redis_client: Any) -> None:
    """beat's drain every 2 s is for wake-ups that were lost. While a drain lingers none is: that drain claims
    again within its wait and takes the last look. A safety-net drain that claimed meanwhile split the lingering
    drain's batch in two (two transactions where one would do, every 2 s under steady traffic) and held a worker
    process for nothing; it now leaves the inbox to the lingering drain, and sweeps as before once none lingers."""
    from worker import tasks

    (report,) = seed_messages(1)
    box = inbox.Inbox(redis_client)
    assert box.hold_linger("a-drain-lingering-elsewhere", 30)
    push(box, "dlr", report)
    beat_entry = tasks.app.conf.beat_schedule["drain-inbox"]

    assert tasks.drain.run(*beat_entry.get("args", ()), **beat_entry.get("kwargs", {})) == 0
    assert box.depth() == 1 and applied_reports() == 0
    box.release_linger("a-drain-lingering-elsewhere")
    assert tasks.drain.run(*beat_entry.get("args", ()), **beat_entry.get("kwargs", {})) == 1
    assert applied_reports() == 1
