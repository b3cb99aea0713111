"""How a cycle's voice fallback reacts to callbacks: retry a busy or unanswered call later in the cycle,
and cancel a call not yet placed when the SMS turns out to have been delivered after all."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from shared.consent import cancel_pending
from shared.models import Call, Channel, CycleItem, ItemState
from shared.settings import get_settings
from shared.status_policy import Action


def now() -> datetime:
    return datetime.now(UTC)


def after_call_ended(session: Session, call: Call, outcome: Action) -> None:
    """A cycle's call ended: done, or (busy / no answer) called again later while retries remain."""
    if call.cycle_item_id is None:
        return
    item = session.get(CycleItem, call.cycle_item_id, with_for_update=True)
    if item is None or item.call_id != call.id or item.state in {ItemState.DONE, ItemState.CANCELLED}:
        return
    settings = get_settings()
    if outcome is Action.RETRY_LATER and item.attempts <= settings.call_retries:
        item.state, item.call_id, item.lease_until = ItemState.PENDING, None, None
        item.next_attempt_at = now() + timedelta(seconds=settings.call_retry_delay_seconds)
        item.error = f"call {item.attempts}: {call.hangup_cause}; calling again"
    else:
        item.state, item.lease_until, item.error = ItemState.DONE, None, None
    item.updated_at = now()


def cancel_fallback_calls(session: Session, contact_ids: Sequence[int]) -> int:
    """A late `Success` report: the customer has the SMS, so calls not yet placed are cancelled."""
    return cancel_pending(session, contact_ids, "the SMS was delivered before the call", Channel.VOICE)
