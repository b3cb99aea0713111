"""A call whose final callback never comes (issue 11 item 9): it holds its call slot only as long as the longest
call Reach can produce (ring, the spoken text, the key press, a margin), not a fixed 15 minutes; then it is
recorded `unknown` (neither answered nor a failure of the customer's), its item finishes and the cycle can
end. A final callback that comes later still applies.

The stack test runs on a stack of its own (tests/stack.py): the simulator never posts the first number's
callbacks (they are an hour late), and the limit is made small through its inputs, the settings
CALL_RING_TIMEOUT_SECONDS and CALL_LIMIT_MARGIN_SECONDS and a short message.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import requests
from sqlalchemy import select

from shared import cycles as shared_cycles
from shared import prompts, voice_script
from shared.models import Call, Contact, ContactStatus, Cycle, CycleItem, CycleState, ItemState
from shared.settings import load_settings
from simulator import wire
from simulator.scenario import Rule, Scenario
from tests.conftest import WEBHOOK_TOKEN, wait_for
from tests.stack import isolated_stack
from worker.cycles import calls as worker_calls

pytestmark = pytest.mark.worker

LOST = "+254711000001"  # AT places the call but its callbacks never reach us
FINE = "+254711000002"
AT_NUMBER = "+254711082369"


def test_the_limit_is_the_longest_call_the_text_can_make() -> None:
    settings = load_settings(call_ring_timeout_seconds=45, call_limit_margin_seconds=60)
    message = "Your bill of KES 1,200 is due on Friday."
    # the prompts of the longest language: a Swahili call's prompts are longer than English ones (issue 14)
    spoken = len(message) + prompts.longest("confirm") + prompts.longest("thanks")
    assert prompts.longest("confirm") >= len(voice_script.CONFIRM_PROMPT)
    expected = 45 + spoken / worker_calls.TTS_CHARACTERS_PER_SECOND + voice_script.DIGITS_TIMEOUT_SECONDS + 60
    limit = worker_calls.call_limit
    assert limit(message, settings) == timedelta(seconds=expected)
    assert limit(message * 10, settings) > limit(message, settings)  # a longer text holds the slot longer
    assert limit(None, settings) == limit(settings.voice_greeting, settings)  # what is said then
    assert limit("x" * 1600, load_settings()) < timedelta(minutes=15)  # the longest text, the defaults


def test_a_call_without_its_final_callback_frees_its_slot_and_is_unknown(tmp_path, database_url) -> None:
    scenario = Scenario(numbers={LOST: Rule(delay=3600)})  # every callback of this number an hour late
    with isolated_stack(
        tmp_path,
        database_url,
        scenario,
        max_calls_in_flight=1,
        call_retries=0,
        call_ring_timeout_seconds=1,
        call_limit_margin_seconds=1,
    ) as stack:
        with stack.session() as session, session.begin():
            session.add_all([Contact(phone=p, status=ContactStatus.INACTIVE) for p in (LOST, FINE)])
            session.flush()
            cycle_id = shared_cycles.start_cycle(session, "Hi")
        started = time.monotonic()
        stack.start_worker("calls")
        stack.app.extensions["reach"].celery.send_task("reach.cycle.plan", args=[cycle_id])

        def calls() -> dict[str, Call]:
            with stack.session() as session:
                return {c.phone: c for c in session.scalars(select(Call).where(Call.cycle_id == cycle_id))}

        def done() -> bool:
            with stack.session() as session:
                return session.get(Cycle, cycle_id).state is CycleState.DONE

        wait_for(done, timeout=120, interval=0.5, what="the cycle done although one final callback never came")
        finished_after = time.monotonic() - started
        placed = calls()
        assert placed[LOST].outcome == "unknown" and placed[LOST].ended_at is None
        assert placed[FINE].outcome == "answered", "the slot was freed for the next call"
        with stack.session() as session:
            items = {i.contact_id: i for i in session.scalars(select(CycleItem).where(CycleItem.cycle_id == cycle_id))}
            lost_item = items[placed[LOST].contact_id]
            assert lost_item.state is ItemState.DONE and "unknown" in (lost_item.error or "")
            lost_contact = session.get(Contact, placed[LOST].contact_id)
            assert lost_contact.status is ContactStatus.INACTIVE  # not failed (nor answered) for the customer

        # AT's final callback, late: it is applied as any other.
        late = wire.voice_final_answered(placed[LOST].session_id, LOST, AT_NUMBER)
        response = requests.post(f"{stack.receiver_url}/voice?token={WEBHOOK_TOKEN}", data=late, timeout=10)
        assert response.status_code == 200
        wait_for(lambda: calls()[LOST].outcome == "answered", timeout=30, what="the late final callback applied")
        assert calls()[LOST].ended_at is not None
        print(f"\n[call limit] cycle done {finished_after:.1f} s after it started (the old fixed limit: 900 s)")
