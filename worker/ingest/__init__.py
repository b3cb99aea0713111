"""Applying queued AT callbacks to Postgres: plain functions, called by the drain task.

Each callback is applied exactly once: its raw row goes into `raw_callbacks` under the inbox id the
receiver gave it, and only callbacks whose raw row is new in this transaction are applied. Duplicates
that AT itself sends (a second post of the same report) are absorbed by each table's unique key.

One module per callback kind: `dlr`, `incoming_sms`, `voice`, `ussd`; `contacts` holds what they
change on a contact.
"""

from __future__ import annotations

import logging
from collections import Counter

from sqlalchemy.orm import Session

from shared.callbacks import KINDS, Dlr, parse
from shared.db import insert_for
from shared.inbox import InboxItem
from shared.models import RawCallback
from worker.ingest import staging
from worker.ingest.batch_sql import is_postgres
from worker.ingest.contacts import CONTACT_STATUS_AFTER, UNREACHABLE, find_contact_id, opt_in, opt_out
from worker.ingest.dlr import (
    apply_dlrs,
    apply_held_reports,
    apply_pending_dlrs,
    apply_pending_events,
    count_new_reports,
)
from worker.ingest.erased import drop_erased
from worker.ingest.incoming_sms import OPT_IN_WORDS, OPT_OUT_WORDS, apply_incoming_sms
from worker.ingest.ussd import apply_ussd_step
from worker.ingest.voice import apply_voice_event, call_outcome

log = logging.getLogger(__name__)

__all__ = [
    "CONTACT_STATUS_AFTER",
    "OPT_IN_WORDS",
    "OPT_OUT_WORDS",
    "UNREACHABLE",
    "apply_batch",
    "apply_dlrs",
    "apply_held_reports",
    "apply_incoming_sms",
    "apply_pending_dlrs",
    "apply_ussd_step",
    "apply_voice_event",
    "call_outcome",
    "find_contact_id",
    "opt_in",
    "opt_out",
    "record_raw",
]


def apply_batch(session: Session, items: list[InboxItem]) -> Counter[str]:
    """Apply one drained batch in the caller's transaction; returns counts by kind (new ones only).
    Callbacks about an erased number are dropped first, unstored (worker/ingest/erased.py)."""
    items = drop_erased(session, items)
    applied: Counter[str] = Counter()
    if is_postgres(session):
        fresh = _record_and_apply_dlrs(session, items, applied)
    else:
        fresh = record_raw(session, items)
        dlrs = [(item.received_at, parse(Dlr, item.data)) for item in fresh if item.kind == "dlr"]
        if dlrs:
            applied["dlr"] = apply_dlrs(session, dlrs)
    for item in fresh:
        if item.kind == "dlr":
            continue
        if item.kind not in _APPLY:
            log.warning("inbox item %s has unknown kind %r; kept in raw_callbacks only", item.id, item.kind)
            continue
        _APPLY[item.kind](session, item.received_at, parse(KINDS[item.kind], item.data))
        applied[item.kind] += 1
    return applied


def _record_and_apply_dlrs(session: Session, items: list[InboxItem], applied: Counter[str]) -> list[InboxItem]:
    """Postgres: what `record_raw` and `apply_dlrs` do, by one COPY and one statement (worker/ingest/staging.py),
    then the reports applied. Returns the items recorded for the first time."""
    if not items:
        return []
    stored = staging.record_and_store(session, items)
    _log_skipped(len(items), len(stored.fresh))
    if any(item.kind == "dlr" for item in stored.fresh):
        applied["dlr"] = len(count_new_reports(session, stored.new_reports))
        apply_pending_events(session, stored.pending, stored.unmarked)
    return stored.fresh


def record_raw(session: Session, items: list[InboxItem]) -> list[InboxItem]:
    """Keep every callback verbatim; returns the items not recorded before (in their original order). The rows
    go as executemany parameters to one cached `insert(table)`, which SQLAlchemy pages as multi-row VALUES with
    RETURNING; the drain on Postgres records them with its COPY instead (`_record_and_apply_dlrs`)."""
    if not items:
        return []
    rows = [
        {"inbox_id": item.id, "kind": item.kind, "received_at": item.received_at, "payload": item.data}
        for item in items
    ]
    table = RawCallback.__table__
    stmt = insert_for(session, table).on_conflict_do_nothing(index_elements=["inbox_id"]).returning(table.c.inbox_id)
    new_ids = set(session.scalars(stmt, rows))
    _log_skipped(len(items), len(new_ids))
    return [item for item in items if item.id in new_ids]


def _log_skipped(claimed: int, fresh: int) -> None:
    if fresh < claimed:
        log.info("skipped %d callbacks already applied", claimed - fresh)


_APPLY = {"sms": apply_incoming_sms, "voice": apply_voice_event, "ussd": apply_ussd_step}
