"""Draining the callback inbox into the database: what may park a callback, and what sends a batch back.

Every callback here got a 200, so only a fault of the callback itself may take it out of the flow:

- A *data* error of one item (`ITEM_ERRORS`: its fields do not parse, the database refuses its values, or
  the Python code applying them trips over them: a bug that one odd callback triggers must not hold up
  the thousands behind it) parks that item, with the reason, in the inbox's dead-letter list;
  `reach inbox replay` puts it back.
  A batch that fails twice with such an error is split in two, and so on, until the poison item is alone
  and fails twice by itself; the others are applied.
- Anything else (the database read-only during a fail-over, a column missing mid-deploy, a pool timeout,
  a soft time limit, Redis, the network) is about the environment, not any one callback: the whole batch
  goes back to the inbox and the drain stops until the next tick (a few seconds). Items applied before
  that are skipped when the batch comes again (`raw_callbacks` is keyed by the inbox id).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError

from shared import alerts, metrics
from shared.callbacks import KINDS
from shared.db import session_scope
from shared.inbox import Batch, InboxItem
from shared.store import STORE_ERRORS, CallbackInbox
from worker import ingest

log = logging.getLogger(__name__)

#: One parked-callback alert per this many seconds: a burst of poison callbacks is one message, not thousands.
PARKED_ALERT_QUIET_SECONDS = 300

#: Errors that are about one callback's own data, and so may park it once it is alone and fails twice: the
#: database refusing its values, and Python's own data errors (BadCallback is a ValueError). Not here, so
#: they send the batch back: every other SQLAlchemy error, Redis errors, OSError, time limits.
ITEM_ERRORS: tuple[type[Exception], ...] = (
    DataError,
    IntegrityError,
    ValueError,
    ArithmeticError,
    LookupError,
    TypeError,
    AttributeError,
)
#: How many times a batch (or a lone item) meets an item error before it is split (or parked).
ATTEMPTS = 2
#: Reasons are kept for an operator to read, not whole tracebacks.
REASON_MAX_CHARS = 500
#: The linger lease outlasts a wait by this much, for a late wake from `sleep`; a drainer killed while it waited
#: keeps others from lingering (not from draining) for no longer than its wait and this.
LINGER_LEASE_MARGIN_SECONDS = 1.0


def drain_inbox(
    box: CallbackInbox,
    batch_size: int,
    budget_seconds: float,
    linger_seconds: float = 0.0,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Apply claimed batches until the inbox is empty, the budget is spent or a batch had to go back.

    After a batch that was not full the drain waits until `linger_seconds` have passed since its claim (never
    past the budget) before it claims again: reports that trickle in are then applied together, where each
    batch pays a transaction, its statements and the inbox's round trips whatever its size (DRAIN_LINGER_MS in
    shared/intake_settings.py). The wait follows the apply, so a report already claimed never waits for it.
    Only the holder of the inbox's linger lease waits: a drain woken while another lingers applies what waits
    and goes, so a worker's processes never all sit in waits while its other tasks queue."""
    lease = _LingerLease(box)
    try:
        return _drain(box, batch_size, time.monotonic() + budget_seconds, linger_seconds, sleep, lease)
    finally:
        lease.let_go()


def sweep_inbox(box: CallbackInbox, batch_size: int, budget_seconds: float) -> int:
    """beat's safety net, for a wake-up that was lost: drain without lingering, unless a drain lingers. That one
    claims again within its wait and takes the last look, so no wake-up is lost; claiming meanwhile only split
    its batch in two (two transactions where one would do) and held a worker process. Its lease lapses by itself
    if it died, so the next sweep goes ahead."""
    if box.lingering_elsewhere(uuid.uuid4().hex):  # a token no drain holds: any holder lingers
        return 0
    return drain_inbox(box, batch_size, budget_seconds)


def _drain(
    box: CallbackInbox,
    batch_size: int,
    deadline: float,
    linger_seconds: float,
    sleep: Callable[[float], None],
    lease: _LingerLease,
) -> int:
    applied = 0
    while (claimed_at := time.monotonic()) < deadline:
        batch = box.claim(batch_size)
        if batch is None:
            if box.lingering_elsewhere(lease.token):
                return applied  # it claims again and takes the last look: what is pushed meanwhile is its own
            lease.release()  # first: a drain woken after the last look may then linger
            box.mark_idle()
            if box.depth() == 0:  # looked again after clearing the mark: no wake-up can be lost
                return applied
            continue
        done = apply_claimed(box, batch)
        if done is None:
            return applied  # the batch went back; the beat tick tries again in a few seconds
        applied += done
        if len(batch.items) < batch_size:
            _linger(box, lease, min(claimed_at + linger_seconds, deadline), sleep)
    # Budget spent with work left: wake the next drain, whoever set the mark (a push, or this drain's wait).
    lease.release()  # first: the drain woken next may linger
    box.mark_idle()
    box.nudge()
    return applied


def _linger(box: CallbackInbox, lease: _LingerLease, until: float, sleep: Callable[[float], None]) -> None:
    wait = until - time.monotonic()
    if wait > 0 and lease.hold(wait + LINGER_LEASE_MARGIN_SECONDS):
        box.keep_awake(wait)  # the reports pushed meanwhile are this drain's: they need not wake another
        sleep(wait)


class _LingerLease:
    """This drain's hold on the inbox's linger lease (one drainer waits at a time), by a token of its own."""

    def __init__(self, box: CallbackInbox) -> None:
        self.box = box
        self.token = uuid.uuid4().hex
        self.taken = False  # ever taken since last released: only then is there anything to release

    def hold(self, seconds: float) -> bool:
        held = self.box.hold_linger(self.token, seconds)
        self.taken = self.taken or held
        return held

    def release(self) -> None:
        if self.taken:
            self.box.release_linger(self.token)
            self.taken = False

    def let_go(self) -> None:
        """Release however the drain ended; if the store cannot be reached the lease lapses by itself."""
        try:
            self.release()
        except STORE_ERRORS as exc:
            log.warning("could not release the drain's linger lease (it lapses by itself): %s", exc)


def apply_claimed(box: CallbackInbox, batch: Batch) -> int | None:
    """Apply one claimed batch, parking only poison items; None when the batch went back to the inbox."""
    try:
        applied = _apply_isolating(box, batch, batch.items)
    except BaseException as exc:  # a soft time limit too: nothing about the callbacks, so nothing is lost
        box.release(batch.key)
        metrics.add(metrics.worker_client(), [("reach_inbox_batches_released", {"cause": _cause(exc)}, 1)])
        log.warning("%d callbacks sent back to the inbox (%s)", len(batch.items), reason_of(exc))
        if not isinstance(exc, Exception):
            raise  # KeyboardInterrupt, SystemExit: the process is going
        return None
    box.ack(batch)
    return applied


def _apply_isolating(box: CallbackInbox, batch: Batch, items: list[InboxItem]) -> int:
    """Apply `items` in one transaction; after `ATTEMPTS` item errors, each half on its own (a lone item is
    parked). Any other error propagates: the caller sends the whole batch back."""
    for _ in range(ATTEMPTS):
        try:
            return _apply(items)
        except ITEM_ERRORS as exc:
            error = exc
    if len(items) == 1:
        park(box, batch, items[0], reason_of(error))
        return 0
    half = len(items) // 2
    return _apply_isolating(box, batch, items[:half]) + _apply_isolating(box, batch, items[half:])


def _apply(items: list[InboxItem]) -> int:
    with session_scope() as session:
        return sum(ingest.apply_batch(session, items).values())


def park(box: CallbackInbox, batch: Batch, item: InboxItem, reason: str) -> None:
    """Take one poison callback out of its batch into the dead-letter list, counted and logged."""
    box.dead_letter(batch, item, reason=reason)
    kind = item.kind if item.kind in KINDS else metrics.OTHER
    metrics.add(metrics.worker_client(), [("reach_callbacks_parked", {"kind": kind}, 1)])
    log.warning("parked callback %s (%s, received %s): %s", item.id, item.kind, item.received_at.isoformat(), reason)
    alerts.raise_alert(
        alerts.CALLBACK_PARKED,
        f"a {kind} callback was parked: {reason} (reach inbox dead lists them all)",
        quiet_seconds=PARKED_ALERT_QUIET_SECONDS,
        inbox_id=item.id,
    )


def reason_of(exc: BaseException) -> str:
    """The error as an operator reads it: the driver's own error class and first line, when there is one."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0] if lines else ''}"[:REASON_MAX_CHARS]


def _cause(exc: BaseException) -> str:
    """A bounded label for why a batch went back."""
    if isinstance(exc, SQLAlchemyError):
        return "database"
    if isinstance(exc, STORE_ERRORS):
        return "store"
    if type(exc).__name__ in {"SoftTimeLimitExceeded", "TimeLimitExceeded"}:
        return "time_limit"
    return "other"
