"""Who planning holds back, and why: the guards that keep a fault outside Reach from becoming calls. A
delivery-report silence (shared/dlr_silence.py) and a carrier incident (shared/incidents.py) each give a SQL
filter over contacts; planning and the dry run leave out whoever any of them holds, and count them under
`skipped_by_status` by the first reason that holds them."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from shared import dlr_silence, incidents
from shared.models import Contact

#: Each guard's account of one contact it holds, by reason, in the order a contact held twice is counted.
_WHY_HELD = {dlr_silence.DLR_SILENCE: dlr_silence.why_held, incidents.NETWORK_INCIDENT: incidents.why_held}
#: The reasons, in that order.
REASONS = tuple(_WHY_HELD)


def hold_back_now(session: Session, *, ignore_dlr_silence: bool = False) -> dict[str, ColumnElement[bool]]:
    """Today's filters by reason, in REASONS' order; empty when nothing holds anyone (planning's statement is
    then unchanged)."""
    held = {
        dlr_silence.DLR_SILENCE: dlr_silence.hold_back_now(session, ignore=ignore_dlr_silence),
        incidents.NETWORK_INCIDENT: incidents.hold_back_now(session),
    }
    return {reason: where for reason in REASONS if (where := held[reason]) is not None}


def audience(base: ColumnElement[bool], held: dict[str, ColumnElement[bool]]) -> ColumnElement[bool]:
    for where in held.values():
        base = base & ~where
    return base


def count_held(session: Session, base: ColumnElement[bool], held: dict[str, ColumnElement[bool]]) -> dict[str, int]:
    """`{reason: n}` for the `skipped` counts, or {} when nothing is held."""
    counts, before = {}, base
    for reason, where in held.items():
        counts[reason] = session.scalar(select(func.count()).select_from(Contact).where(before, where)) or 0
        before = before & ~where
    return counts


def why_held(session: Session, contact_id: int) -> str | None:
    """Why a guard holds this one contact (the first reason, as planning counts it), or None: a one-off send
    asks before it calls, so it calls no one a cycle would leave out."""
    for explain in _WHY_HELD.values():
        if reason := explain(session, contact_id):
            return reason
    return None
