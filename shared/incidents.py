"""Carrier incidents (issue 14): one mobile network failing far above its baseline is an outage, not a thousand
unreachable customers.

The rule (settings in shared/guard_settings.py, README "Carrier incidents"): a network (the reports'
`networkCode`, shared/networks.py) is in an incident when, over the last INCIDENT_WINDOW_SECONDS (default 600),
it reported at least INCIDENT_MIN_FAILURES (default 50) final failures, its failure rate (failures over final
reports; the status policy table says which statuses are final and which are failures) is at least `MIN_RATE`
(50 %) and at least INCIDENT_RATE_FACTOR (default 3) times its rate over the day before that window.
Housekeeping looks (`watch`): one range read of the window's reports (ix_dlr_events_received_at); only a
network over the thresholds has its day read too, and one whose baseline explains its rate is not read again
for a window.

While an incident holds (`applied_at` NULL), failure reports from its network received since its window began
are kept, and their messages record them, but their contacts stay `pending` (those downgraded before it was
found are put back), so nobody is marked inactive on the network's word; planning skips them
(`network_incident`), and their same-cycle fallback calls wait (worker/fallback.py). It ends when the rate
has stayed within `NEAR_BASELINE` of the baseline for INCIDENT_RECOVERY_SECONDS, or when the operator releases
it (`POST /api/incidents/<id>/release`, `reach incident release ID`). Then the held reports are applied as
they would have been (the status policy table decides, unchanged): a report is a fact AT gave, and dropping it
would leave the contact `pending`, which the routing rule calls anyway; what the guard buys is time, no calls
into a network that is down, and an operator who decides.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, case, exists, false, func, or_, select, true, update
from sqlalchemy.orm import Session

from shared import alerts
from shared.db import insert_for
from shared.guard_settings import GuardSettings
from shared.models import Channel, Contact, ContactStatus, CycleItem, DlrEvent, ItemState
from shared.networks import network_name
from shared.operator_models import NetworkIncident
from shared.status_policy import FINAL_DLR_ACTIONS, Action, dlr_statuses

log = logging.getLogger(__name__)

#: The `skipped_by_status` reason of a contact an incident holds back.
NETWORK_INCIDENT = "network_incident"
#: The least failure rate that is an incident, whatever the baseline.
MIN_RATE = 0.5
#: Recovered: the rate within this many points (10 %) of the baseline.
NEAR_BASELINE = 0.10
#: A look at fewer final reports than this neither starts nor stops a recovery.
RECOVERY_MIN_REPORTS = 10
#: The baseline: the network's rate over this long before the window.
BASELINE = timedelta(days=1)
HELD_CALL = "held: carrier incident"
#: Applies held reports to their contacts (worker.ingest.apply_held_reports): shared/ does not import worker/.
ApplyHeld = Callable[[Session, list[int]], None]


class IncidentError(ValueError):
    """An operator request about incidents that cannot be done; the message says why."""


class IncidentNotFound(IncidentError):
    pass


class IncidentConflict(IncidentError):
    pass


def failure_statuses() -> list[str]:
    return dlr_statuses(frozenset({Action.UNDELIVERED}))


def final_statuses() -> list[str]:
    return dlr_statuses(FINAL_DLR_ACTIONS)


@dataclass(frozen=True)
class Rate:
    failures: int
    reports: int

    @property
    def rate(self) -> float:
        return self.failures / self.reports if self.reports else 0.0


def rates(session: Session, start: datetime, end: datetime, network: str | None = None) -> dict[str, Rate]:
    """Final reports received in (start, end], by network: a range of ix_dlr_events_received_at."""
    failed = func.sum(case((DlrEvent.status.in_(failure_statuses()), 1), else_=0))
    query = (
        select(DlrEvent.network_code, failed, func.count())
        .where(DlrEvent.received_at > start, DlrEvent.received_at <= end, DlrEvent.network_code.is_not(None))
        .where(DlrEvent.status.in_(final_statuses()))
        .group_by(DlrEvent.network_code)
    )
    if network is not None:
        query = query.where(DlrEvent.network_code == network)
    return {code: Rate(int(failures or 0), int(count)) for code, failures, count in session.execute(query)}


# -- what an incident holds -------------------------------------------------------------------------------------


def holding(session: Session) -> list[NetworkIncident]:
    """Incidents whose reports are still held (a few rows, ix_network_incidents_holding)."""
    return list(session.scalars(select(NetworkIncident).where(NetworkIncident.applied_at.is_(None))))


def held_contacts(incidents: Sequence[NetworkIncident], status: ContactStatus = ContactStatus.PENDING) -> Any:
    """SQL: contacts whose last SMS failed on one of these networks since its incident began (columns of the
    contact row itself: no join in planning's scan)."""
    if not incidents:
        return false()
    networks = or_(
        *[(Contact.last_network_code == i.network_code) & (Contact.last_sms_at >= i.since) for i in incidents]
    )
    return (Contact.status == status) & Contact.last_sms_status.in_(failure_statuses()) & networks


def holding_contact(session: Session, contact_id: int) -> NetworkIncident | None:
    """The open incident (not yet ended nor released) that holds this contact, if any: what planning's filter
    says of this one row."""
    for incident in holding(session):
        held = select(Contact.id).where(Contact.id == contact_id, held_contacts([incident]))
        if incident.ended_at is None and session.scalar(held) is not None:
            return incident
    return None


def why_held(session: Session, contact_id: int) -> str | None:
    """Why an open incident holds this contact, for an operator who asked to reach it; None if none does."""
    incident = holding_contact(session, contact_id)
    if incident is None:
        return None
    return (
        f"held by carrier incident {incident.id} ({network_name(incident.network_code)} failing since"
        f" {incident.since:%Y-%m-%d %H:%M} UTC): its last SMS failed on that network's word, so it is not called."
        f" `reach incident release {incident.id}` (or POST /api/incidents/{incident.id}/release) if it should be"
    )


def defers(incidents: Sequence[NetworkIncident], target: ContactStatus | None, network: str | None, at: Any) -> bool:
    """Whether a report's downgrade to `inactive` waits: its network is held and it came since its window."""
    if target is not ContactStatus.INACTIVE or network is None or at is None:
        return False
    return any(i.network_code == network and at >= i.since for i in incidents)


def hold_back_now(session: Session) -> ColumnElement[bool] | None:
    """The planning filter for today's incidents, or None when none holds anything."""
    incidents = holding(session)
    return held_contacts(incidents) if incidents else None


def calls_allowed(session: Session) -> ColumnElement[bool]:
    """SQL over cycle items: the item's contact is not held by an incident (TRUE, dropped, when none is)."""
    incidents = holding(session)
    if not incidents:
        return true()
    return ~exists().where(Contact.id == CycleItem.contact_id, held_contacts(incidents))


# -- housekeeping's look --------------------------------------------------------------------------------------


def watch(session: Session, settings: GuardSettings, now: datetime, apply_held: ApplyHeld) -> list[NetworkIncident]:
    """Look at the last window of reports: recoveries first, then held reports of ended incidents applied, then
    new incidents opened (each raising an alert once this commits). Returns the new ones."""
    window_start = now - timedelta(seconds=settings.incident_window_seconds)
    window = rates(session, window_start, now)
    open_ones = session.scalars(
        select(NetworkIncident).where(NetworkIncident.ended_at.is_(None)).with_for_update(skip_locked=True)
    ).all()
    for incident in open_ones:
        _recover_or_not(session, incident, window.get(incident.network_code), settings, now)
    settle(session, now, apply_held)
    if not settings.incident_min_failures:
        return []
    busy = {incident.network_code for incident in open_ones if incident.ended_at is None}
    opened = []
    for code, rate in sorted(window.items()):
        if code in busy or not _alarming(rate, settings) or _judged_lately(code):
            continue
        since = _ended_within(session, code, window_start)
        if since is not None:  # reports an incident held (and the operator released) do not open another
            rate = rates(session, since, now, code).get(code, Rate(0, 0))
            if not _alarming(rate, settings):
                continue
        baseline = _baseline(session, code, window_start, now)
        if rate.rate < settings.incident_rate_factor * baseline:
            _judged(code, settings.incident_window_seconds)  # this network fails this much every day
            continue
        incident = _open(session, code, since or window_start, rate, baseline, now, settings)
        if incident is not None:
            opened.append(incident)
    return opened


def _alarming(rate: Rate, settings: GuardSettings) -> bool:
    return rate.failures >= settings.incident_min_failures and rate.rate >= MIN_RATE


def _baseline(session: Session, code: str, window_start: datetime, now: datetime) -> float:
    """The network's failure rate over the day before the window; an incident of that day does not raise it
    (the baseline that incident was measured against counts instead, when lower)."""
    rate = rates(session, now - BASELINE, window_start, code).get(code, Rate(0, 0)).rate
    earlier = session.scalar(
        select(func.min(NetworkIncident.baseline_rate)).where(
            NetworkIncident.network_code == code, NetworkIncident.opened_at > now - BASELINE
        )
    )
    return rate if earlier is None else min(rate, earlier)


def _ended_within(session: Session, code: str, start: datetime) -> datetime | None:
    """When the network's last incident ended, if within the window."""
    return session.scalar(
        select(func.max(NetworkIncident.ended_at)).where(
            NetworkIncident.network_code == code, NetworkIncident.ended_at > start
        )
    )


def _open(
    session: Session, code: str, since: datetime, rate: Rate, baseline: float, now: datetime, settings: GuardSettings
) -> NetworkIncident | None:
    values = {"network_code": code, "opened_at": now, "since": since, "failures": rate.failures}
    values.update(reports=rate.reports, baseline_rate=baseline)
    stmt = (
        insert_for(session, NetworkIncident)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["network_code"], index_where=NetworkIncident.ended_at.is_(None))
        .returning(NetworkIncident.id)
    )
    incident_id = session.scalar(stmt)
    if incident_id is None:
        return None  # another housekeeping run opened it
    incident = session.get_one(NetworkIncident, incident_id)
    rewound = rewind(session, incident, now)
    message = describe(incident, settings) + f" ({rewound} contacts already marked inactive were put back)"
    alerts.on_commit(
        session, alerts.NETWORK_INCIDENT, message, incident_id=incident_id, network_code=code,
        failure_rate=round(rate.rate, 4), baseline_rate=round(baseline, 4),
    )  # fmt: skip
    return incident


def rewind(session: Session, incident: NetworkIncident, now: datetime) -> int:
    """Undo what the reports of the window did before the incident was found: their contacts `pending` again,
    and their same-cycle fallback calls not yet claimed back to waiting SMS items (the inverse of
    worker.fallback.start_calls; due again as soon as the incident ends). Returns contacts put back."""
    contacts = session.execute(
        update(Contact)
        .where(held_contacts([incident], ContactStatus.INACTIVE))
        .values(status=ContactStatus.PENDING, updated_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    session.execute(
        update(CycleItem)
        .where(
            CycleItem.channel == Channel.VOICE,
            CycleItem.state == ItemState.PENDING,
            CycleItem.fallback_at.is_not(None),
            exists().where(Contact.id == CycleItem.contact_id, held_contacts([incident])),
        )
        .values(channel=Channel.SMS, state=ItemState.SENT, error=HELD_CALL, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return max(contacts, 0)


def _recover_or_not(
    session: Session, incident: NetworkIncident, rate: Rate | None, settings: GuardSettings, now: datetime
) -> None:
    if rate is None or rate.reports < min(RECOVERY_MIN_REPORTS, max(1, settings.incident_min_failures)):
        return  # too little traffic to tell either way
    if rate.rate > incident.baseline_rate + NEAR_BASELINE:
        incident.recovering_since = None
        return
    incident.recovering_since = incident.recovering_since or now
    if now - incident.recovering_since >= timedelta(seconds=settings.incident_recovery_seconds):
        incident.ended_at, incident.ended_by = now, "recovered"
        message = f"{network_name(incident.network_code)} delivers again: incident {incident.id} ended"
        alerts.on_commit(
            session, alerts.NETWORK_RECOVERED, message, incident_id=incident.id, network_code=incident.network_code
        )


def settle(session: Session, now: datetime, apply_held: ApplyHeld) -> int:
    """Apply the reports each ended incident held, once (the incident row is locked, then marked applied)."""
    applied = 0
    ended = select(NetworkIncident).where(NetworkIncident.ended_at.is_not(None), NetworkIncident.applied_at.is_(None))
    for incident in session.scalars(ended.with_for_update(skip_locked=True)).all():
        message_ids = list(session.scalars(select(Contact.last_message_id).where(held_contacts([incident]))))
        incident.applied_at = now
        session.flush()  # no longer holding: the reports below apply as any others
        apply_held(session, [m for m in message_ids if m is not None])
        applied += len(message_ids)
        log.info("incident %s ended (%s): applied %d held reports", incident.id, incident.ended_by, len(message_ids))
    return applied


def _judged_lately(code: str) -> bool:
    from shared.store import STORE_ERRORS, get_store

    try:
        return get_store().is_marked(f"reach:incident:judged:{code}")
    except STORE_ERRORS:
        return False


def _judged(code: str, seconds: float) -> None:
    """A network whose baseline explains its rate is not read again for a window (its day of reports)."""
    from shared.store import STORE_ERRORS, get_store

    try:
        get_store().mark(f"reach:incident:judged:{code}", seconds)
    except STORE_ERRORS as exc:
        log.warning("incident baseline of %s not remembered: %s", code, exc.__class__.__name__)


# -- the operator's view ------------------------------------------------------------------------------------------


def describe(incident: NetworkIncident, settings: GuardSettings) -> str:
    rate = Rate(incident.failures, incident.reports).rate
    return (
        f"{network_name(incident.network_code)}: {incident.failures} of {incident.reports} delivery reports failed "
        f"in {settings.incident_window_seconds // 60} minutes ({rate:.0%}; {incident.baseline_rate:.0%} the day "
        f"before): its contacts are not marked inactive nor called until it recovers or "
        f"`reach incident release {incident.id}`"
    )


def state_of(incident: NetworkIncident) -> str:
    if incident.ended_at is None:
        return "recovering" if incident.recovering_since else "open"
    return "released" if incident.ended_by == "operator" else "recovered"


def incident_json(session: Session, incident: NetworkIncident) -> dict[str, Any]:
    held = 0
    if incident.applied_at is None:
        held = session.scalar(select(func.count()).select_from(Contact).where(held_contacts([incident]))) or 0
    stamp = {
        name: value.isoformat() if value else None
        for name in ("opened_at", "since", "recovering_since", "ended_at", "applied_at")
        for value in [getattr(incident, name)]
    }
    return {
        "id": incident.id,
        "network_code": incident.network_code,
        "network": network_name(incident.network_code),
        "state": state_of(incident),
        "failures": incident.failures,
        "reports": incident.reports,
        "failure_rate": round(Rate(incident.failures, incident.reports).rate, 4),
        "baseline_rate": round(incident.baseline_rate, 4),
        "ended_by": incident.ended_by,
        "held_contacts": int(held),
        **stamp,
    }


def recent(session: Session, limit: int = 50) -> list[NetworkIncident]:
    return list(session.scalars(select(NetworkIncident).order_by(NetworkIncident.id.desc()).limit(limit)))


def release(session: Session, incident_id: int, now: datetime) -> NetworkIncident:
    """The operator ends an incident: its held reports are applied by the next housekeeping."""
    incident = session.get(NetworkIncident, incident_id, with_for_update=True)
    if incident is None:
        raise IncidentNotFound(f"no incident {incident_id}")
    if incident.ended_at is not None:
        raise IncidentConflict(f"incident {incident_id} has ended already ({state_of(incident)})")
    incident.ended_at, incident.ended_by = now, "operator"
    log.warning("incident %s (%s) released by the operator", incident_id, incident.network_code)
    return incident
