"""The operator's hand on a running cycle: cancel it, pause it, resume it (design §4).

Each takes the cycle row FOR UPDATE, as planning does for its whole statement, so a request that lands while
the cycle is being planned waits for the plan and then applies to all of it: planning never puts a cancelled
or paused cycle back to `dispatching` (worker/cycles/planning.py).

Dispatchers claim items only while their cycle is `dispatching`, in the same statement that locks them
(worker/cycles/items.py `due_items`). So a cancel or a pause stops every claim that starts after it commits;
a batch claimed before it is already in AT's hands and goes, with its outcome and callbacks recorded as
usual. Items that come back to be sent again in a cancelled cycle (AT refused them, a transient error, a
dispatcher that died) are cancelled where they come back (`cancel_returned`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shared.cycles import CycleConflict, CycleNotFound, pending_on, waiting_for_report
from shared.models import Channel, Cycle, CycleItem, CycleState, ItemState, PausedBy

#: States a cycle never leaves: nothing of it can be paused, resumed or cancelled.
FINISHED = frozenset({CycleState.DONE, CycleState.FAILED, CycleState.CANCELLED})
OPERATOR_PAUSE = "paused by the operator"
CANCELLED_BY_OPERATOR = "cancelled by the operator: not sent"
#: Tasks that get a resumed cycle going again, by the state it resumes to (sent by name: web/ and reach_cli/
#: never import worker/).
RESUME_TASKS = {
    CycleState.PLANNING: ("reach.cycle.plan",),
    CycleState.DISPATCHING: ("reach.cycle.dispatch_sms", "reach.cycle.dispatch_calls"),
}


def _locked(session: Session, cycle_id: int) -> Cycle:
    cycle = session.get(Cycle, cycle_id, with_for_update=True, populate_existing=True)
    if cycle is None:
        raise CycleNotFound(f"no cycle {cycle_id}")
    return cycle


def cancel(session: Session, cycle_id: int) -> Cycle:
    """Stop the cycle for good: every item not yet handed to AT is `cancelled`; those in flight keep their
    outcome. A `done`, `failed` or `cancelled` cycle is a `CycleConflict`."""
    cycle = _locked(session, cycle_id)
    if cycle.state in FINISHED:
        raise CycleConflict(f"cycle {cycle_id} is {cycle.state.value}: there is nothing left to cancel")
    cycle.state, cycle.finished_at = CycleState.CANCELLED, datetime.now(UTC)
    cycle.paused_by = cycle.paused_reason = None
    # Before the pending items: a fallback call made due meanwhile is then pending, and cancelled below.
    session.execute(
        update(CycleItem)
        .where(CycleItem.cycle_id == cycle_id, waiting_for_report())
        .values(fallback_at=None, error=CANCELLED_BY_OPERATOR, updated_at=datetime.now(UTC))
        .execution_options(synchronize_session=False)
    )
    for channel in Channel:  # one statement per claim index (shared/cycles.py pending_on)
        session.execute(
            update(CycleItem)
            .where(CycleItem.cycle_id == cycle_id, pending_on(channel))
            .values(
                state=ItemState.CANCELLED, error=CANCELLED_BY_OPERATOR, lease_until=None, updated_at=datetime.now(UTC)
            )
            .execution_options(synchronize_session=False)
        )
    return cycle


def pause(session: Session, cycle_id: int) -> Cycle:
    """Hold the cycle's remaining sends and calls until `resume`. Pausing a paused cycle changes nothing (a
    retried request gets the same answer); a finished one is a `CycleConflict`."""
    cycle = _locked(session, cycle_id)
    if cycle.state in FINISHED:
        raise CycleConflict(f"cycle {cycle_id} is {cycle.state.value}: there is nothing left to pause")
    if cycle.state is not CycleState.PAUSED:
        cycle.state, cycle.paused_by, cycle.paused_reason = CycleState.PAUSED, PausedBy.OPERATOR, OPERATOR_PAUSE
    return cycle


def resume(session: Session, cycle_id: int) -> Cycle:
    """Let a paused cycle go again, whoever paused it: back to `dispatching`, or to `planning` when it was
    paused before its plan ran. Anything not paused is a `CycleConflict`."""
    cycle = _locked(session, cycle_id)
    if cycle.state is not CycleState.PAUSED:
        raise CycleConflict(f"cycle {cycle_id} is {cycle.state.value}, not paused")
    cycle.state = CycleState.DISPATCHING if cycle.planned_at else CycleState.PLANNING
    cycle.paused_by = cycle.paused_reason = None
    return cycle


#: What `POST /api/cycles/<id>/<action>`, `reach cycle <action>` and the dashboard's buttons do.
ACTIONS: dict[str, Callable[[Session, int], Cycle]] = {"cancel": cancel, "pause": pause, "resume": resume}


def cancel_returned(session: Session, item_ids: Sequence[int]) -> int:
    """Items just put back to `pending` (to be sent again, or given back unsent) whose cycle was cancelled
    meanwhile: cancelled instead, so nothing of a cancelled cycle waits to be sent. Returns how many."""
    if not item_ids:
        return 0
    cancelled = select(Cycle.id).where(Cycle.state == CycleState.CANCELLED)
    result = session.execute(
        update(CycleItem)
        .where(
            CycleItem.id.in_(sorted(item_ids)),
            CycleItem.state == ItemState.PENDING,
            CycleItem.cycle_id.in_(cancelled),
        )
        .values(state=ItemState.CANCELLED, error=CANCELLED_BY_OPERATOR, lease_until=None)
        .execution_options(synchronize_session=False)
    )
    return max(result.rowcount, 0)


def is_cancelled(session: Session, cycle_id: int) -> bool:
    return session.scalar(select(Cycle.state).where(Cycle.id == cycle_id)) is CycleState.CANCELLED
