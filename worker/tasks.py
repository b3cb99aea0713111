"""Celery tasks: thin wrappers over plain functions. Names are `reach.<area>.<verb>` and never change."""

from __future__ import annotations

import json
import logging
import time

from sqlalchemy.exc import OperationalError

from shared.at_client import AtTransient
from shared.broker import get_redis
from shared.db import session_scope
from shared.inbox import Batch, Inbox
from shared.settings import get_settings
from worker import ingest, sending
from worker.base import reach_task

log = logging.getLogger(__name__)

#: A drain task gives the queue back after this long, so other tasks get a turn on a busy worker.
DRAIN_BUDGET_SECONDS = 20.0
#: A claimed batch older than this belongs to a drainer that died; housekeeping puts it back.
STALE_BATCH_SECONDS = 60.0
DEAD_LETTERS = "reach:inbox:dead"


def inbox() -> Inbox:
    return Inbox(get_redis(), wake=lambda: drain.apply_async(queue="ingest"))


@reach_task("reach.ingest.drain", queue="ingest", time_limit=45, soft_time_limit=40)
def drain() -> int:
    """Move queued callbacks from Redis into Postgres until the inbox is empty or the budget is spent."""
    return drain_inbox(inbox(), get_settings().drain_batch_size, DRAIN_BUDGET_SECONDS)


def drain_inbox(box: Inbox, batch_size: int, budget_seconds: float) -> int:
    deadline = time.monotonic() + budget_seconds
    applied = 0
    while time.monotonic() < deadline:
        batch = box.claim(batch_size)
        if batch is None:
            box.mark_idle()
            if box.depth() == 0:  # looked again after clearing the mark: no wake-up can be lost
                return applied
            continue
        done = apply_claimed(box, batch)
        if done is None:
            return applied  # the database is down; the beat tick tries again in a few seconds
        applied += done
    box.nudge()  # budget spent with work left: let the next drain continue
    return applied


def apply_claimed(box: Inbox, batch: Batch) -> int | None:
    """Apply one claimed batch; None when the database is unreachable (the batch went back)."""
    try:
        with session_scope() as session:
            counts = ingest.apply_batch(session, batch.items)
    except OperationalError:
        # Postgres unreachable: the batch goes back untouched; the beat tick retries every few seconds.
        box.release(batch.key)
        log.warning("database unavailable; %d callbacks stay queued", len(batch.items))
        return None
    except Exception:  # a poison callback must not block the ones behind it
        log.exception("batch of %d failed; applying one by one", len(batch.items))
        return apply_one_by_one(box, batch)
    box.ack(batch)
    return sum(counts.values())


def apply_one_by_one(box: Inbox, batch: Batch) -> int | None:
    """Isolate a poison callback: the rest are applied, the bad one is parked in a dead-letter list."""
    applied = 0
    for item in batch.items:
        try:
            with session_scope() as session:
                applied += sum(ingest.apply_batch(session, [item]).values())
        except OperationalError:
            box.release(batch.key)  # the ones already applied are skipped next time (raw_callbacks)
            return None
        except Exception as exc:
            log.error("callback %s (%s) could not be applied: %s", item.id, item.kind, exc)
            box.redis.rpush(DEAD_LETTERS, json.dumps({"id": item.id, "kind": item.kind, "data": item.data}))
    box.ack(batch)
    return applied


@reach_task("reach.ingest.housekeeping", queue="ingest", time_limit=60, soft_time_limit=55)
def housekeeping() -> None:
    """Put back batches of dead drainers and apply reports that raced their message's commit."""
    box = inbox()
    restored = box.recover_stale(STALE_BATCH_SECONDS)
    if restored:
        log.warning("restored %d callbacks from interrupted drains", restored)
        box.nudge()
    with session_scope() as session:
        moved = ingest.apply_pending_dlrs(session)
    if moved:
        log.info("applied late delivery reports to %d messages", moved)


@reach_task(
    "reach.send.sms",
    queue="send",
    time_limit=60,
    soft_time_limit=55,
    autoretry_for=(AtTransient,),
    retry_backoff=5,
    retry_backoff_max=300,
    max_retries=5,
)
def send_sms(message_id: int) -> str:
    try:
        return sending.send_message(message_id)
    except AtTransient as exc:
        _give_back_or_fail(send_sms, sending.Message, message_id, exc)
        raise


@reach_task(
    "reach.send.call",
    queue="send",
    time_limit=60,
    soft_time_limit=55,
    autoretry_for=(AtTransient,),
    retry_backoff=5,
    retry_backoff_max=300,
    max_retries=5,
)
def place_call(call_id: int) -> str:
    try:
        return sending.place_call(call_id)
    except AtTransient as exc:
        _give_back_or_fail(place_call, sending.Call, call_id, exc)
        raise


def _give_back_or_fail(task: object, model: type, row_id: int, exc: AtTransient) -> None:
    retries = task.request.retries  # type: ignore[attr-defined]
    if retries >= task.max_retries:  # type: ignore[attr-defined]
        sending.fail(model, row_id, f"gave up after {retries + 1} attempts: {exc}")
    else:
        sending.release(model, row_id, str(exc))
