"""Which live call hears which message: only a call Reach placed, by the sessionId AT returned from `/call`
and the customer's number (issue 12). The worker records both sides of that rule here; the receiver asks.

AT may ring the customer, and the customer pick up, before AT's answer to `/call` has reached the worker
(nothing in AT's API orders the two). So the worker marks the number as being called for the length of
its `/call` request (`placing`), and a live callback for a marked number with no message yet waits, at
most `WAIT_SECONDS`, for the worker to record it. Only a number Reach is calling right now makes a
callback wait: an unknown session for any other number is answered at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from shared import voice_script
from shared.store import STORE_ERRORS, Store

log = logging.getLogger(__name__)

#: How long the "being called" mark outlives a worker that died mid-request (it is cleared on every other
#: way out): above the longest `/call` request (AT_TIMEOUT_CONNECT + AT_TIMEOUT_READ, at most 180 s).
PLACING_SECONDS = 240
#: How long a live callback waits for the worker to record the sessionId AT has just returned; the customer
#: hears silence meanwhile, so a few seconds (AT answers `/call` "in <2s even on heavy traffic", at-api.md).
WAIT_SECONDS = 5.0
POLL_SECONDS = 0.05


@contextmanager
def placing(store: Store, phone: str) -> Iterator[None]:
    """Around one `/call` request to `phone`: mark the number as being called until the request is over
    (inside, the worker records the call's message under AT's sessionId: `Store.remember_script`)."""
    key = voice_script.placing_key(phone)
    # Held, not set: two requests to one number may overlap (a cycle's call and a one-off), and the first to
    # end must not clear the mark the other's early callback waits on.
    store.add_holder(key, PLACING_SECONDS)
    try:
        yield
    finally:
        try:
            store.remove_holder(key)
        except STORE_ERRORS as exc:  # it lapses by itself; a live callback for the number waits a little longer
            log.warning("could not clear the call-in-progress mark: %s", exc)


def placed_message(store: Store, *, session_id: str, phone: str, wait: float = WAIT_SECONDS) -> str | None:
    """The message of the call Reach placed to `phone` with this sessionId, or None: not one Reach placed.

    The worker records the message before it clears the mark, so a lookup made after the mark was seen
    cleared finds any message recorded before: no answer is lost between the two reads.
    """
    message = store.lookup_script(session_id=session_id, phone=phone)
    deadline = time.monotonic() + wait
    while message is None:
        being_called = store.is_marked(voice_script.placing_key(phone))
        message = store.lookup_script(session_id=session_id, phone=phone)
        if message is not None or not being_called or time.monotonic() >= deadline:
            break
        time.sleep(POLL_SECONDS)
    return message


def placed_script(
    store: Store, *, session_id: str, phone: str, wait: float = WAIT_SECONDS
) -> voice_script.VoiceScript | None:
    """`placed_message` as what the call says: its text or recording, and its prompts' language."""
    stored = placed_message(store, session_id=session_id, phone=phone, wait=wait)
    return None if stored is None else voice_script.VoiceScript.decode(stored)
