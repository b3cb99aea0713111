"""Alerts: what the operator must hear about, said in four places (issue 13).

A paused cycle (an account problem), a delivery-report silence, a parked (dead-lettered) callback, AT
refusing the credentials and a carrier incident (and its recovery) are each logged at WARNING, counted
(`reach_alerts_total{kind}`), kept in the `alerts` table (the dashboard lists the latest) and, when
`ALERT_WEBHOOK_URL` is set, POSTed there as JSON by a Celery task that retries with backoff
(shared/alert_webhook.py). Raising one never fails or blocks the work that raised it: every step is best
effort, and the webhook runs in its own task.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from shared import metrics
from shared.operator_models import Alert

log = logging.getLogger(__name__)

CYCLE_PAUSED = "cycle_paused"
DLR_SILENCE = "dlr_silence"
CALLBACK_PARKED = "callback_parked"
AT_CREDENTIALS = "at_credentials"
NETWORK_INCIDENT = "network_incident"  # shared/incidents.py: a network fails far above its baseline
NETWORK_RECOVERED = "network_recovered"
KINDS = (CYCLE_PAUSED, DLR_SILENCE, CALLBACK_PARKED, AT_CREDENTIALS, NETWORK_INCIDENT, NETWORK_RECOVERED)
#: The Celery task that posts one alert to ALERT_WEBHOOK_URL (worker/tasks.py).
NOTIFY_TASK = "reach.cycle.notify_alert"
_PENDING = "reach.alerts"


def on_commit(session: Session, kind: str, message: str, **details: Any) -> None:
    """Raise the alert once `session`'s transaction commits (a rolled-back pause was never a pause)."""
    if not session.in_transaction():
        session.begin()
    session.info.setdefault(_PENDING, []).append((kind, message, details))


@event.listens_for(Session, "after_commit")
def _raise_on_commit(session: Session) -> None:
    for kind, message, details in session.info.pop(_PENDING, []):
        raise_alert(kind, message, **details)


@event.listens_for(Session, "after_soft_rollback")
def _forget_on_rollback(session: Session, previous_transaction: Any) -> None:
    if previous_transaction.parent is None:
        session.info.pop(_PENDING, None)


def raise_alert(kind: str, message: str, *, quiet_seconds: float = 0, **details: Any) -> dict[str, Any] | None:
    """Log, count, keep and (if configured) post one alert; never raises. With `quiet_seconds`, an alert of
    this kind raised again within that time is only counted (a burst of 10,000 parked callbacks is one
    message, not 10,000 posts)."""
    if kind not in KINDS:
        raise ValueError(f"unknown alert kind {kind!r}")
    at = datetime.now(UTC)
    metrics.add(metrics.worker_client(), [("reach_alerts", {"kind": kind}, 1)])
    if quiet_seconds and _quieted(kind, quiet_seconds):
        log.info("alert %s (not repeated within %ss): %s", kind, quiet_seconds, message)
        return None
    log.warning("alert %s: %s", kind, message)
    payload = {"kind": kind, "message": message, "at": at.isoformat(), **details}
    _keep(kind, message, details, at)
    _post_later(payload)
    return payload


def _quieted(kind: str, quiet_seconds: float) -> bool:
    """True when an alert of `kind` was raised within `quiet_seconds`; otherwise marks this one. A store
    error lets the alert through: better twice than never."""
    from shared.store import STORE_ERRORS, get_store

    key = f"reach:alert:quiet:{kind}"
    try:
        store = get_store()
        if store.is_marked(key):
            return True
        store.mark(key, quiet_seconds)
    except STORE_ERRORS as exc:
        log.warning("alert %s: quiet period not checked: %s", kind, exc.__class__.__name__)
    return False


def _keep(kind: str, message: str, details: dict[str, Any], at: datetime) -> None:
    from shared.db import session_scope

    try:
        with session_scope() as session:
            session.add(Alert(kind=kind, message=message, details=details or None, created_at=at))
    except SQLAlchemyError as exc:
        log.warning("alert %s not kept in the database: %s", kind, exc.__class__.__name__)


def _post_later(payload: dict[str, Any]) -> None:
    from celery import current_app

    from shared.settings import get_settings

    if not get_settings().alert_webhook_url.get_secret_value():
        return
    if current_app.main != "reach":  # not a Reach process (a script): its default app has no broker of ours
        log.warning("alert %s not queued for the webhook: no Reach Celery app here", payload["kind"])
        return
    try:
        current_app.send_task(NOTIFY_TASK, args=[payload])
    except Exception as exc:  # the broker may be down: the alert is logged and kept already
        log.warning("alert %s not queued for the webhook: %s", payload["kind"], exc.__class__.__name__)


def recent(session: Session, limit: int = 10) -> list[Alert]:
    """The latest alerts, newest first (the dashboard's list, `reach doctor`)."""
    return list(session.scalars(select(Alert).order_by(Alert.id.desc()).limit(limit)))


def on_at_refusal(session: Session, exc: BaseException) -> None:
    """An AT refusal that is about the credentials (HTTP 401) is its own alert, beside the pause it causes."""
    if getattr(exc, "http_status", None) == 401:
        on_commit(session, AT_CREDENTIALS, f"AT refused the credentials (check AT_USERNAME and AT_API_KEY): {exc}")
