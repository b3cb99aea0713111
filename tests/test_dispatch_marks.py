"""Cycle housekeeping (every 15 s) restarts a cycle's dispatchers only where no dispatcher chain is at work:
a chain marks its cycle while it runs and clears the mark when it ends. Without the marks, every
housekeeping run started more chains beside the running ones on a long cycle.

No worker runs in this module: the tasks are called in-process and what they enqueue is read off the
broker's `send` queue in the private Redis.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from sqlalchemy import insert

from shared import cycles as shared_cycles
from shared.models import Contact, ContactStatus
from shared.store import SqlStore, Store, get_store
from tests.conftest import wait_for
from worker import cycles, tasks

SEND_QUEUE = "send"  # shared.broker.TASK_ROUTES: reach.cycle.dispatch_* go there


def queued_dispatchers(redis_client) -> Counter[str]:
    """Dispatcher tasks waiting on the broker, by task name."""
    names: Counter[str] = Counter()
    for key in redis_client.scan_iter(f"{SEND_QUEUE}*"):
        if redis_client.type(key) == b"list":
            names.update(json.loads(raw)["headers"]["task"] for raw in redis_client.lrange(key, 0, -1))
    return names


@pytest.fixture
def dispatching_cycle(session, redis_client) -> int:
    """A planned cycle with due SMS and voice items, and an empty send queue."""
    session.execute(
        insert(Contact),
        [
            {"phone": "+254711000001", "status": ContactStatus.ACTIVE},  # last SMS delivered: SMS
            {"phone": "+254711000002", "status": ContactStatus.INACTIVE},  # not delivered: a call
        ],
    )
    cycle_id = shared_cycles.start_cycle(session, "Hello", "Hello by voice")
    plan = cycles.plan_cycle(session, cycle_id)
    session.commit()
    assert plan is not None and plan["sms"] == 1 and plan["voice"] == 1
    for key in redis_client.scan_iter(f"{SEND_QUEUE}*"):
        redis_client.delete(key)
    return cycle_id


def test_housekeeping_starts_dispatchers_for_a_cycle_nobody_dispatches(dispatching_cycle, redis_client) -> None:
    tasks.cycle_housekeeping()
    assert queued_dispatchers(redis_client) == {
        "reach.cycle.dispatch_sms": tasks.SMS_DISPATCHERS,
        "reach.cycle.dispatch_calls": 1,
    }


def test_housekeeping_leaves_a_cycle_alone_while_its_chains_run(dispatching_cycle, redis_client) -> None:
    store = get_store()
    store.mark(tasks._dispatching("sms", dispatching_cycle), 60)
    tasks.cycle_housekeeping()
    assert queued_dispatchers(redis_client) == {"reach.cycle.dispatch_calls": 1}  # only the idle channel
    store.mark(tasks._dispatching("voice", dispatching_cycle), 60)
    tasks.cycle_housekeeping()
    assert queued_dispatchers(redis_client) == {"reach.cycle.dispatch_calls": 1}  # nothing more


def test_a_chain_that_ends_clears_its_mark(session) -> None:
    """A cycle with nothing left to send: each chain runs once, ends, and leaves no mark behind, so
    housekeeping may start one again when items fall due (retries)."""
    cycle_id = shared_cycles.start_cycle(session, "Hello")
    cycles.plan_cycle(session, cycle_id)
    session.commit()
    store = get_store()
    for kind in ("sms", "voice"):
        store.mark(tasks._dispatching(kind, cycle_id), 60)
    assert tasks.dispatch_sms(cycle_id) == "idle"
    assert tasks.dispatch_calls(cycle_id) == "idle"
    assert not store.is_marked(tasks._dispatching("sms", cycle_id))
    assert not store.is_marked(tasks._dispatching("voice", cycle_id))


def check_marks(store: Store) -> None:
    store.mark("reach:dispatching:sms:1", 60)
    store.mark("reach:dispatching:sms:2", 0.2)
    assert store.is_marked("reach:dispatching:sms:1") and store.is_marked("reach:dispatching:sms:2")
    store.unmark("reach:dispatching:sms:1")
    assert not store.is_marked("reach:dispatching:sms:1")
    wait_for(lambda: not store.is_marked("reach:dispatching:sms:2"), timeout=5, what="the short mark to lapse")


def test_marks_in_redis_are_set_cleared_and_lapse_by_themselves(clean) -> None:
    check_marks(get_store())


def test_marks_in_the_database_are_set_cleared_and_lapse_by_themselves(dialect_engine) -> None:
    """Embedded mode keeps them in its key-value table, on SQLite (and on Postgres)."""
    check_marks(SqlStore(dialect_engine))
