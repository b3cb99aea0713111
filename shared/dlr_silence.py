"""Delivery reports that never come (issue 13): find them, say so, and keep "no report" from becoming calls.

With AT's delivery report URL unset or its token wrong, every SMS of a cycle stays without a report, its
contacts stay `pending`, and the routing rule (design §4) would call them all next cycle: the dry run said
KES 30 of calls instead of KES 8 of SMS. So housekeeping looks once at each cycle whose first SMS AT took
more than `DLR_SILENCE_SECONDS` ago: if none of its SMS got a report, the cycle is marked silent and an
alert is raised. Until a report arrives again (any report, of any message, received after the silence was
found), planning skips the contacts whose last SMS is from a silent cycle and has no report, counted under
`skipped_by_status` as `dlr_silence`: neither called (no proof the SMS failed) nor texted twice. A cycle
with `ignore_dlr_silence` plans them as usual.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from shared.models import Contact, ContactStatus, Cycle, CycleState, DlrEvent, Message

log = logging.getLogger(__name__)

#: The `skipped_by_status` reason of a contact held back by a silence.
DLR_SILENCE = "dlr_silence"
#: Cycles older than this are not looked at any more (nobody waits on their silence now).
LOOKBACK = timedelta(days=2)


@dataclass(frozen=True)
class Silence:
    cycle_id: int
    since: datetime


def check_cycles(session: Session, silence_seconds: int, now: datetime) -> list[Silence]:
    """Decide each cycle whose first SMS AT took over `silence_seconds` ago: silent if none got a report.

    Each cycle is decided once (`dlr_checked_at`), so a long cycle's messages are scanned at most once.
    """
    cutoff = now - timedelta(seconds=silence_seconds)
    open_ids = session.scalars(
        select(Cycle.id).where(
            Cycle.dlr_checked_at.is_(None),
            Cycle.created_at > now - LOOKBACK,
            # No SMS goes out before planning ends: a cycle planned within the silence is not even looked at,
            # so a long cycle's messages are not scanned every housekeeping while its first ones are young.
            Cycle.planned_at <= cutoff,
            Cycle.state.not_in([CycleState.PLANNING, CycleState.SKIPPED]),
        )
    ).all()
    found = []
    for cycle_id in open_ids:
        if not session.scalar(select(_accepted_before(cycle_id, cutoff))):
            continue  # nothing AT took long enough ago: look again next time
        cycle = session.get(Cycle, cycle_id, with_for_update=True)
        if cycle is None or cycle.dlr_checked_at is not None:
            continue
        cycle.dlr_checked_at = now
        if not session.scalar(select(exists().where(Message.cycle_id == cycle_id, Message.status.is_not(None)))):
            cycle.dlr_silent_at = now
            cycle.dlr_event_mark = session.scalar(select(func.coalesce(func.max(DlrEvent.id), 0)))
            found.append(Silence(cycle_id, now))
    return found


def _accepted_before(cycle_id: int, cutoff: datetime) -> ColumnElement[bool]:
    return exists().where(
        Message.cycle_id == cycle_id,
        Message.send_state == "sent",
        Message.at_message_id.is_not(None),
        Message.created_at <= cutoff,
    )


def silent_cycles(session: Session) -> list[int]:
    """Cycles found silent with no report received since (a primary-key range look per silent cycle)."""
    later_report = exists().where(DlrEvent.id > Cycle.dlr_event_mark)
    return list(
        session.scalars(select(Cycle.id).where(Cycle.dlr_silent_at.is_not(None), ~later_report).order_by(Cycle.id))
    )


def held_back(silent_ids: list[int]) -> ColumnElement[bool]:
    """Contacts whose last SMS is from one of `silent_ids` and has no report: their fate is not known."""
    return (Contact.status == ContactStatus.PENDING) & exists().where(
        Message.id == Contact.last_message_id, Message.cycle_id.in_(silent_ids), Message.status.is_(None)
    )


def why_held(session: Session, contact_id: int) -> str | None:
    """Why a silence holds this contact, for an operator who asked to reach it; None if none does."""
    silent = silent_cycles(session)
    if not silent or session.scalar(select(Contact.id).where(Contact.id == contact_id, held_back(silent))) is None:
        return None
    cycle_id = session.scalar(
        select(Message.cycle_id).join(Contact, Contact.last_message_id == Message.id).where(Contact.id == contact_id)
    )
    return (
        f"held by a delivery-report silence: its last SMS (cycle {cycle_id}) has no delivery report and none of"
        " that cycle's came, so whether it arrived is not known and it is not called. The hold lifts when reports"
        " arrive again (check AT's delivery report URL and its token); a cycle run with --ignore-dlr-silence"
        " calls the held contacts"
    )


def describe(silent_ids: list[int]) -> str:
    """One sentence for readiness, `reach doctor` and the alert."""
    shown = ", ".join(str(i) for i in silent_ids[:5]) + (", ..." if len(silent_ids) > 5 else "")
    return (
        f"no delivery report for the SMS of cycle(s) {shown}: check AT's delivery report URL and its token; "
        "their contacts are skipped (dlr_silence) until reports arrive again"
    )


def hold_back_now(session: Session, ignore: bool = False) -> ColumnElement[bool] | None:
    """The planning filter for today's silences, or None when there is none (or the operator overrides them):
    then planning's statement is exactly what it was."""
    if ignore:
        return None
    silent = silent_cycles(session)
    return held_back(silent) if silent else None


def count_held(session: Session, audience: ColumnElement[bool], held: ColumnElement[bool] | None) -> dict[str, int]:
    """`{DLR_SILENCE: n}` for the `skipped` counts, or {} when nothing is held."""
    if held is None:
        return {}
    return {DLR_SILENCE: session.scalar(select(func.count()).select_from(Contact).where(audience, held)) or 0}


def watch(session: Session, silence_seconds: int, now: datetime) -> list[Silence]:
    """Housekeeping's look: mark newly silent cycles, each raising an alert once the marks commit."""
    from shared import alerts

    found = check_cycles(session, silence_seconds, now)
    for silence in found:
        alerts.on_commit(session, alerts.DLR_SILENCE, describe([silence.cycle_id]), cycle_id=silence.cycle_id)
    return found
