"""A worker killed with SIGKILL in the middle of a cycle: every contact still gets exactly one message.

Runs on a stack of its own (tests/stack.py), so the kill touches nothing else.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from sqlalchemy import func, insert, select

from shared import cycles as shared_cycles
from shared.models import Contact, ContactStatus, Cycle, CycleItem, CycleState, ItemState, Message
from simulator.scenario import Scenario
from tests.conftest import wait_for
from tests.stack import isolated_stack

pytestmark = pytest.mark.worker

CONTACTS = 3000


def accepted_per_number(stack) -> Counter[str]:
    """What AT (the simulator) was asked to send, per number, over every request it answered 201."""
    counts: Counter[str] = Counter()
    for request in stack.simulator.requests("/version1/messaging"):
        if request.get("status") == 201:
            counts.update(request["form"]["to"].split(","))
    return counts


def test_worker_killed_mid_dispatch_sends_each_contact_exactly_once(tmp_path, database_url) -> None:
    # A slow send rate so the kill lands mid-way: 3,000 SMS at 150/s take about 20 s.
    with isolated_stack(
        tmp_path, database_url, Scenario.from_dict({}), send_rate_per_second=150, sms_batch_size=50
    ) as stack:
        phones = [f"+2547{i:08d}" for i in range(CONTACTS)]
        with stack.session() as session, session.begin():
            session.execute(insert(Contact), [{"phone": p, "status": ContactStatus.NEW} for p in phones])
            cycle_id = shared_cycles.start_cycle(session, "Exactly once, please")
        first = stack.start_worker("first")
        stack.app.extensions["reach"].celery.send_task("reach.cycle.plan", args=[cycle_id])

        wait_for(lambda: sum(accepted_per_number(stack).values()) >= CONTACTS // 3, timeout=60, what="a third sent")
        first.kill()
        killed_at = time.monotonic()
        sent_before_kill = sum(accepted_per_number(stack).values())
        assert sent_before_kill < CONTACTS, "the kill came too late to interrupt anything"

        second = stack.start_worker("second")

        def finished() -> bool:
            with stack.session() as session:
                return session.get(Cycle, cycle_id).state is CycleState.DONE

        wait_for(finished, timeout=180, interval=0.5, what="cycle done after the kill")
        recovery_seconds = time.monotonic() - killed_at

        per_number = accepted_per_number(stack)
        assert set(per_number) == set(phones)  # nobody skipped
        assert max(per_number.values()) == 1, [p for p, n in per_number.items() if n > 1][:5]  # nobody twice
        with stack.session() as session:
            states = dict(
                session.execute(
                    select(CycleItem.state, func.count())
                    .where(CycleItem.cycle_id == cycle_id)
                    .group_by(CycleItem.state)
                ).all()
            )
            assert states == {ItemState.SENT: CONTACTS}
            sent = session.execute(
                select(Message.contact_id, func.count())
                .where(Message.cycle_id == cycle_id, Message.send_state == "sent")
                .group_by(Message.contact_id)
            ).all()
            assert len(sent) == CONTACTS and {n for _, n in sent} == {1}
        reconciled = [line for line in second.log().splitlines() if "interrupted sends" in line]
        print(
            f"\n[crash] {CONTACTS} contacts, {sent_before_kill} sent before SIGKILL, finished "
            f"{recovery_seconds:.1f} s after the kill; {reconciled[-1].split(': ', 1)[-1] if reconciled else ''}"
        )
