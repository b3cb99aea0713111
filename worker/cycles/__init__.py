"""Running a communication cycle: plan it in one statement, then dispatch SMS in batches and calls under
a cap, each item claimed once.

An item's life: `pending` → (claimed and its Message/Call row written, in one committed transaction)
`submitting` → AT is asked → `sent` | `failed` | back to `pending` for a retry. A dispatcher that dies
while AT is answering leaves items `submitting`; housekeeping adopts them when a delivery report shows
they went out, and sends them again only when none came (see `reconcile_interrupted`). Celery messages
are only nudges: every dispatcher re-reads Postgres, so a duplicate or lost nudge changes nothing.

One module per stage: `planning`, `sms` (dispatch), `calls`, `recovery`; `items` holds the item state
changes they share.
"""

from worker.cycles.calls import (
    CALL_PAUSE_STATUSES,
    UNKNOWN_OUTCOME,
    call_limit,
    claim_calls,
    dispatch_calls,
    place_call,
    record_call,
    record_overdue_calls,
)
from worker.cycles.items import Claimed, backoff, claim, finish_items, give_back, now, read_cycle, retry_later
from worker.cycles.planning import plan_cycle
from worker.cycles.recovery import (
    adopt,
    cycles_to_nudge,
    finish_if_done,
    open_cycles,
    reconcile_interrupted,
    stuck_planning,
)
from worker.cycles.sms import claim_sms, dispatch_sms, record_sms_batch, send_sms_batch

__all__ = [
    "CALL_PAUSE_STATUSES",
    "UNKNOWN_OUTCOME",
    "Claimed",
    "adopt",
    "backoff",
    "call_limit",
    "claim",
    "claim_calls",
    "claim_sms",
    "cycles_to_nudge",
    "dispatch_calls",
    "dispatch_sms",
    "finish_if_done",
    "finish_items",
    "give_back",
    "now",
    "open_cycles",
    "place_call",
    "plan_cycle",
    "read_cycle",
    "reconcile_interrupted",
    "record_call",
    "record_overdue_calls",
    "record_sms_batch",
    "retry_later",
    "send_sms_batch",
    "stuck_planning",
]
