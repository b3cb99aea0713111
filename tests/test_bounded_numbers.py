"""Numbers in callbacks are parsed with bounds: an absurd one is "no value", never a stall or a dead letter.

`int(Decimal("9e999999999"))` builds an integer of a billion digits (minutes of CPU and gigabytes); the
drain would hit its hard time limit, the batch (STOPs included) would go back and the next drainer would
repeat it without end. The drain runs here in a subprocess with a bounded wait and a memory cap, so a hang
fails the test instead of hanging the suite.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from decimal import Decimal

import pytest
from sqlalchemy import select

from shared import inbox
from shared.callbacks import to_decimal, to_int
from shared.models import Call, Contact, ContactStatus, DlrEvent
from simulator import wire
from tests.test_ingest import AT_NUMBER, CUSTOMER, contact_with_message, post, reload

#: Enough for a drain of a few callbacks, with the interpreter's start-up, on a loaded machine.
DRAIN_WAIT_SECONDS = 60

DRAIN_ONCE = """
import redis, sys
from shared.inbox import Inbox
from worker.drain import drain_inbox
print(drain_inbox(Inbox(redis.Redis.from_url(sys.argv[1])), batch_size=500, budget_seconds=30))
"""


def drain_in_subprocess(redis_url: str) -> None:
    def cap_memory() -> None:  # a billion-digit integer must not take the machine with it
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    try:
        subprocess.run(
            [sys.executable, "-c", DRAIN_ONCE, redis_url],
            check=True,
            timeout=DRAIN_WAIT_SECONDS,
            env=os.environ.copy(),
            preexec_fn=cap_memory,
            capture_output=True,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the drain did not finish within {DRAIN_WAIT_SECONDS} s: a poison number stalls it")


@pytest.mark.parametrize(
    "raw",
    ["9e999999999", "9e9999999", "1e999999999", "-9e999999999", "1" * 5000, "NaN", "Infinity", "sNaN", "1e-999999999"],
)
def test_absurd_numbers_are_no_value(raw: str) -> None:
    from shared.numbers import bounded_decimal

    assert to_int(raw) is None
    assert to_decimal(raw) is None
    assert to_decimal(f"KES {raw}") is None
    assert bounded_decimal(raw) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("12", 12), ("20.7", 20), ("0", 0), ("1e3", 1000), (" 7 ", 7), ("-3", -3), ("999999999", 999999999)],
)
def test_ordinary_numbers_keep_their_value(raw: str, expected: int) -> None:
    assert to_int(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("KES 0.8000", Decimal("0.8000")), ("147.440", Decimal("147.440")), ("0", Decimal(0)), ("KES 1.6e1", Decimal(16))],
)
def test_ordinary_amounts_keep_their_value(raw: str, expected: Decimal) -> None:
    assert to_decimal(raw) == expected


def test_poison_numbers_in_a_batch_with_stops_are_applied_as_no_value(client, session, redis_client, redis_url) -> None:
    _, message = contact_with_message(session)
    stopper = "+254711000002"
    session.add(Contact(phone=stopper, status=ContactStatus.ACTIVE))
    session.commit()
    long_call, costly_call = wire.new_session_id(), wire.new_session_id()
    post(client, "/receiveSMS", wire.incoming_sms(stopper, "21512", "STOP", "in-stop-1"))
    post(client, "/dlr", {**wire.dlr(message.at_message_id, "Failed", CUSTOMER), "retryCount": "9e9999999"})
    answered = wire.voice_final_answered(long_call, CUSTOMER, AT_NUMBER)
    post(client, "/voice", {**answered, "durationInSeconds": "9e999999999"})
    post(client, "/voice", {**wire.voice_final_answered(costly_call, CUSTOMER, AT_NUMBER), "amount": "KES 1e999999999"})
    drain_in_subprocess(redis_url)
    assert redis_client.llen(inbox.DEAD_LETTERS) == 0
    assert redis_client.llen(inbox.INBOX) == 0 and redis_client.zcard(inbox.CLAIMS) == 0
    session.expire_all()
    assert session.scalars(select(Contact.status).where(Contact.phone == stopper)).one() is ContactStatus.OPTED_OUT
    report = session.scalars(select(DlrEvent)).one()
    assert report.retry_count is None and report.applied_at is not None
    assert reload(session, message).status == "Failed"
    calls = {c.session_id: c for c in session.scalars(select(Call))}
    assert calls[long_call].duration_seconds is None and calls[long_call].outcome == "answered"
    assert calls[long_call].amount == Decimal("1.6000")
    assert calls[costly_call].amount is None and calls[costly_call].duration_seconds == 12
