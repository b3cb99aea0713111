"""Celery tasks: thin wrappers over plain functions. Names are `reach.<area>.<verb>` and never change."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select

from shared import alert_webhook, alerts, broker, dlr_silence, idempotency, incidents, report_delays, schedules
from shared import cycles as shared_cycles
from shared.at_client import AtTransient
from shared.db import session_scope
from shared.models import Schedule
from shared.settings import get_settings
from shared.store import STORE_ERRORS, CallbackInbox, get_store
from worker import cycles, fallback, ingest, retention, sending, unknown_sends
from worker.base import reach_task
from worker.celery import app
from worker.drain import drain_inbox, sweep_inbox

log = logging.getLogger(__name__)

#: A drain task gives the queue back after this long, so other tasks get a turn on a busy worker.
DRAIN_BUDGET_SECONDS = 20.0


def inbox() -> CallbackInbox:
    return get_store().inbox(wake=lambda: drain.apply_async())


@reach_task("reach.ingest.drain", time_limit=45, soft_time_limit=40)
def drain(linger: bool = True) -> int:
    """Move queued callbacks from the inbox into the database until the inbox is empty or the budget is spent.

    A drain woken by a callback lingers after a batch that was not full (DRAIN_LINGER_MS); beat's safety-net
    drain (`linger=False`) never does, and leaves the inbox to a drain that lingers (worker/drain.py
    `sweep_inbox`): had it waited too, both of a worker's processes would sit in drains' waits."""
    settings = get_settings()
    if not linger:
        return sweep_inbox(inbox(), settings.drain_batch_size, DRAIN_BUDGET_SECONDS)
    seconds = settings.drain_linger_ms / 1000
    return drain_inbox(inbox(), settings.drain_batch_size, DRAIN_BUDGET_SECONDS, linger_seconds=seconds)


@reach_task("reach.ingest.housekeeping", time_limit=60, soft_time_limit=55)
def housekeeping() -> None:
    """Put back batches of dead drainers, apply reports that raced their message's commit, prune old callbacks
    and old imports' refused rows."""
    store = get_store()
    store.housekeeping()
    settings = get_settings()
    if not settings.uses_redis:
        broker.prune_delivered_messages(settings.effective_broker_url)
    box = store.inbox(wake=lambda: drain.apply_async())
    restored = box.recover_stale(settings.drain_stale_seconds)
    if restored:
        log.warning("restored %d callbacks from interrupted drains", restored)
        box.nudge()
    with session_scope() as session:
        moved = ingest.apply_pending_dlrs(session)
    if moved:
        log.info("applied late delivery reports to %d messages", moved)
    pruned = retention.prune_callbacks(settings)
    if any(pruned.values()):
        log.info("pruned callbacks older than %d days: %s", settings.callback_retention_days, pruned)
    refused = retention.prune_imports(settings)
    if refused:
        log.info("pruned %d refused import rows older than %d days", refused, settings.import_retention_days)
    with session_scope() as session:
        idempotency.forget_expired(session)


@reach_task("reach.send.housekeeping", time_limit=60, soft_time_limit=55, expires=60)
def send_housekeeping() -> int:
    """Publish again one-off sends whose task never reached the broker; settle those AT never answered."""
    settings = get_settings()
    oldest_pending = inbox().oldest_received_at()  # before the evidence is read (unknown_sends.may_send_again)
    with session_scope() as session:
        found = sending.orphaned(session)
        grace = unknown_sends.effective_grace(session, settings)
        lease = timedelta(seconds=settings.dispatch_lease)
        adopted, resend = sending.settle_unanswered(session, grace, oldest_pending, settle_after=lease)
    if adopted:
        log.info("adopted %d unanswered one-off sends from AT's callbacks", adopted)
    for task, row_id in resend:
        log.warning("sending again %s(%s): AT never answered and shows nothing of it", task, row_id)
        app.send_task(task, args=[row_id])
    for task, row_id in found:
        log.warning("re-queueing orphaned send %s(%s)", task, row_id)
        app.send_task(task, args=[row_id])
    return len(found) + len(resend)


@reach_task(
    "reach.send.sms",
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


# -- cycles ---------------------------------------------------------------------------------------------------

#: SMS dispatchers started per cycle: they share the work through row locks (SKIP LOCKED).
SMS_DISPATCHERS = 2
#: How often a voice dispatcher looks again for room under the in-flight cap.
CALL_POLL_SECONDS = 2
#: An SMS dispatcher gives its pool process back after this long and queues its successor behind whatever
#: else waits (the voice dispatcher, a drain on a worker that consumes every queue). With 30 s the two SMS
#: dispatchers of `reach up`'s `-c 2` worker kept the voice dispatcher out for the whole budget; a send
#: batch takes tens of milliseconds, so handing over every 5 s costs nothing measurable.
SMS_DISPATCH_BUDGET_SECONDS = 5.0


def _dispatching(kind: str, cycle_id: int) -> str:
    """The mark a dispatcher chain keeps on its cycle while it runs; housekeeping starts no chain beside it."""
    return f"reach:dispatching:{kind}:{cycle_id}"


def _mark_dispatching(kind: str, cycle_id: int, *, running: bool) -> None:
    """Set (for one dispatch lease: a chain whose worker died is resumed by housekeeping once it lapses, as its
    claimed sends are) or clear the mark. Best effort: dispatching never waits on it."""
    store, key = get_store(), _dispatching(kind, cycle_id)
    try:
        if running:
            store.mark(key, get_settings().dispatch_lease)
        else:
            store.unmark(key)
    except STORE_ERRORS as exc:
        log.warning(
            "could not %s the %s dispatcher mark of cycle %s: %s", "set" if running else "clear", kind, cycle_id, exc
        )


def _chain_running(kind: str, cycle_id: int) -> bool:
    try:
        return get_store().is_marked(_dispatching(kind, cycle_id))
    except STORE_ERRORS:
        return False  # start one: an extra chain only shares the work


def kick(cycle_id: int, *, sms: bool = True, voice: bool = True) -> None:
    """Nudge dispatchers for a cycle; extra nudges are harmless (each re-reads Postgres)."""
    if sms:
        for _ in range(SMS_DISPATCHERS):
            dispatch_sms.apply_async((cycle_id,))
    if voice:
        dispatch_calls.apply_async((cycle_id,))


@reach_task("reach.cycle.plan", time_limit=900, soft_time_limit=880)
def plan_cycle(cycle_id: int) -> dict | None:
    """Expand a cycle into one item per reachable contact, then start dispatching."""
    with session_scope() as session:
        plan = cycles.plan_cycle(session, cycle_id)
    if plan is None:
        log.warning("cycle %s is not planning; nothing to plan", cycle_id)
        return None
    log.info("cycle %s planned: %s", cycle_id, plan)
    kick(cycle_id, sms=plan["sms"] > 0, voice=plan["voice"] > 0)
    if not plan["sms"] and not plan["voice"]:
        with session_scope() as session:
            cycles.finish_if_done(session, cycle_id)
    return plan


@reach_task("reach.cycle.dispatch_sms", time_limit=120, soft_time_limit=100)
def dispatch_sms(cycle_id: int) -> str:
    _mark_dispatching("sms", cycle_id, running=True)
    outcome = cycles.dispatch_sms(cycle_id, budget_seconds=SMS_DISPATCH_BUDGET_SECONDS)
    if outcome == "more":
        dispatch_sms.apply_async((cycle_id,))
    elif outcome == "retry":
        dispatch_sms.apply_async((cycle_id,), countdown=cycles.backoff(1).total_seconds())
    else:  # the chain ends here
        _mark_dispatching("sms", cycle_id, running=False)
    if outcome == "idle":
        with session_scope() as session:
            cycles.finish_if_done(session, cycle_id)
    return outcome


@reach_task("reach.cycle.dispatch_calls", time_limit=120, soft_time_limit=100)
def dispatch_calls(cycle_id: int) -> str:
    _mark_dispatching("voice", cycle_id, running=True)
    outcome = cycles.dispatch_calls(cycle_id)
    if outcome == "waiting":
        dispatch_calls.apply_async((cycle_id,), countdown=CALL_POLL_SECONDS)
    else:  # the chain ends here
        _mark_dispatching("voice", cycle_id, running=False)
    if outcome == "idle":
        with session_scope() as session:
            cycles.finish_if_done(session, cycle_id)
    return outcome


@reach_task("reach.cycle.tick", time_limit=60, soft_time_limit=55, expires=60)
def tick() -> list[int]:
    """Start every schedule's due period; a period that has a cycle already is skipped by its unique key."""
    return start_due_cycles(cycles.now())


def start_due_cycles(now: datetime) -> list[int]:
    """What a tick does at `now`: start (and plan) each schedule's latest due period not decided yet; a
    period due while the schedule's previous cycle runs, or more than SCHEDULE_MISFIRE_SECONDS before `now`,
    is recorded skipped (`schedules.start_due_period`)."""
    started = []
    with session_scope() as session:
        for schedule in session.scalars(select(Schedule).where(Schedule.enabled.is_(True))):
            try:
                cycle_id = schedules.start_due_period(session, schedule, now)
            except shared_cycles.CycleError as exc:  # its text or cron predates a rule: the others still run
                log.error("schedule %s (%s) cannot start a cycle: %s", schedule.id, schedule.name, exc)
                continue
            if cycle_id is not None:
                started.append(cycle_id)
    for cycle_id in started:
        log.info("schedule started cycle %s", cycle_id)
        plan_cycle.apply_async((cycle_id,))
    return started


@reach_task("reach.cycle.housekeeping", time_limit=60, soft_time_limit=55, expires=60)
def cycle_housekeeping() -> None:
    """Resume whatever a dead worker left: stuck plans, interrupted sends, cycles with due items; refresh each
    network's report delays."""
    settings = get_settings()
    box = inbox()
    with session_scope() as session:
        grace = unknown_sends.effective_grace(session, settings)
        counts = cycles.reconcile_interrupted(session, box, grace)
        cycles.record_overdue_calls(session, settings)  # before finish_if_done: frees what they held
        # A carrier incident found (or ended) before fallback calls become due: they are held (or released).
        incidents.watch(session, settings, cycles.now(), ingest.apply_held_reports)
        fallback.start_due_calls(session)  # before cycles_to_nudge, which then nudges their dispatchers
        stuck = cycles.stuck_planning(session)
        dlr_silence.watch(session, settings.dlr_silence_seconds, cycles.now())
        due = cycles.cycles_to_nudge(session)
        finished = [cid for cid in cycles.open_cycles(session) if cycles.finish_if_done(session, cid)]
    with session_scope() as session:  # its own transaction: the work above never waits on it
        report_delays.refresh(session)  # what FALLBACK_AFTER_SECONDS=auto waits, per network
    if any(counts.values()):
        log.warning("interrupted sends: %s", counts)
    for cycle_id in stuck:
        plan_cycle.apply_async((cycle_id,))
    for cycle_id, sms, voice in due:
        # Only where no chain is at work: every tick another would pile up behind the running ones on a long
        # cycle, holding pool processes the voice dispatcher and drains need.
        kick(
            cycle_id,
            sms=sms and not _chain_running("sms", cycle_id),
            voice=voice and not _chain_running("voice", cycle_id),
        )
    for cycle_id in finished:
        log.info("cycle %s is done", cycle_id)


@reach_task(
    alerts.NOTIFY_TASK,
    time_limit=30,
    soft_time_limit=25,
    autoretry_for=(alert_webhook.WebhookFailed,),
    retry_backoff=2,
    retry_backoff_max=300,
    max_retries=8,
)
def notify_alert(payload: dict) -> None:
    """POST one alert to ALERT_WEBHOOK_URL, retried with backoff (capped) while it is not taken."""
    url = get_settings().alert_webhook_url.get_secret_value()
    if url:
        alert_webhook.post(url, payload)
