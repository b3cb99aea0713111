"""A cycle's report: its state and what it planned, sent, delivered, called and cost, counted from the tables
(what `GET /api/cycles/<id>`, `reach cycle show` and the dashboard print; one place for each rule)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import String, func, literal_column, select, type_coerce
from sqlalchemy.orm import Session

from shared import call_grades, cycle_breakdown, cycle_money, last_message, sender_rules, voice_languages
from shared.cycle_items import of_cycle
from shared.cycles import SENT_TWICE, failure_reason, pending_on, planned_counts, sms_failed, waiting_for_window
from shared.models import Call, Channel, Cycle, CycleItem, ItemState, Message
from shared.settings import Settings, get_settings


def report(session: Session, cycle_id: int, settings: Settings | None = None) -> dict[str, Any] | None:
    """State and counts per channel and outcome (what `GET /api/cycles/<id>` and `reach cycle show` print)."""
    settings = settings or get_settings()
    cycle = session.get(Cycle, cycle_id)
    if cycle is None:
        return None
    items = dict(
        session.execute(
            select(type_coerce(CycleItem.channel, String) + ":" + type_coerce(CycleItem.state, String), func.count())
            .where(of_cycle(session, cycle_id))
            .group_by(CycleItem.channel, CycleItem.state)
        ).all()
    )
    plan = cycle.plan or {}
    fallback = _fallback_counts(session, cycle)
    # An SMS item that became a fallback call is still a contact planned for SMS.
    sms, voice = _planned(items, "sms") + fallback["calls"], _planned(items, "voice") - fallback["calls"]
    planned = planned_counts(sms, voice, plan.get("skipped", {}))
    waiting = _waiting(session, cycle_id)
    answer = {
        "id": cycle.id,
        "state": cycle.state.value,
        "paused_reason": cycle.paused_reason,
        "skip_reason": cycle.skip_reason,
        "paused_by": cycle.paused_by.value if cycle.paused_by else None,
        "schedule_id": cycle.schedule_id,
        "message": cycle.message,
        **voice_languages.as_given(cycle.voice_message, cycle.voice_languages),  # `voice_message`, `voice_audio_url`
        # Its audience: contacts carrying any of these tags; null is every contact.
        "tags": cycle.tags or None,
        "created_at": cycle.created_at.isoformat(),
        "finished_at": cycle.finished_at.isoformat() if cycle.finished_at else None,
        # When its SMS were found to have no delivery report at all (shared/dlr_silence.py), else null.
        "dlr_silent_at": cycle.dlr_silent_at.isoformat() if cycle.dlr_silent_at else None,
        **planned,
        "cancelled": sum(count for key, count in items.items() if key.endswith(f":{ItemState.CANCELLED.value}")),
        # Items held for their send window (design §4.1, §4.2); they are `pending` in the breakdowns.
        "waiting": sum(waiting.values()),
        "sms_window": cycle.sms_window or settings.sms_window,
        "call_window": cycle.call_window or settings.call_window,
        # What AT_SENDER_ID is; a promotional one's SMS wait for these windows too (shared/sender_rules.py).
        "sender_kind": settings.at_sender_kind,
        "promotional_windows": sender_rules.windows_text(settings.at_sender_kind),
        # The breakdowns, under their own keys: the contract's `sms`, `voice`, `skipped` are integers.
        "sms_detail": {**_sms_counts(session, cycle_id), "items": _by_state(items, "sms"), "waiting": waiting["sms"]},
        # `planned`: the calls the cycle makes, same-cycle fallback calls included (the funnel's "calls planned").
        "voice_detail": {
            **_voice_counts(session, cycle_id),
            "items": _by_state(items, "voice"),
            "planned": planned["voice"] + fallback["calls"],
            "waiting": waiting["voice"],
        },
        "fallback": fallback,
        # Contacts the cycle reached (delivered SMS, answered call, read on USSD): issue 14.
        "reached": last_message.reached_counts(session, cycle_id),
        **cycle_money.money_keys(settings, cycle_money.recorded_bill(session, cycle), planned["voice"]),
        **cycle_money.cost_keys(cycle_money.charged(session, cycle_id), settings),
    }
    # The funnel's percentages and SMS by mobile network (the dashboard's charts draw these).
    return answer | cycle_breakdown.breakdown_keys(session, answer)


def _fallback_counts(session: Session, cycle: Cycle) -> dict[str, Any]:
    """The cycle's fallback: its mode, SMS items still `waiting` for a report before their call, and the items
    that became `calls` (all of them, and by state in `call_items`; their outcomes are in `voice_detail`)."""
    rows = session.execute(
        select(type_coerce(CycleItem.channel, String), type_coerce(CycleItem.state, String), func.count())
        .where(of_cycle(session, cycle.id), CycleItem.fallback_at.is_not(None))
        .group_by(CycleItem.channel, CycleItem.state)
    ).all()
    waiting = sum(n for channel, _state, n in rows if channel == Channel.SMS.value)
    calls = {state: n for channel, state, n in rows if channel == Channel.VOICE.value}
    return {
        "mode": cycle.fallback.value,
        "waiting": waiting,
        "calls": sum(calls.values()),
        "call_items": {state.value: calls.get(state.value, 0) for state in ItemState},
    }


def _planned(items: dict[str, int], channel: str) -> int:
    """Contacts planned for `channel`: its items in every state (one item per contact and cycle)."""
    return sum(count for key, count in items.items() if key.startswith(f"{channel}:"))


def _waiting(session: Session, cycle_id: int) -> dict[str, int]:
    """Items held for their window, per channel: each counted through its channel's claim index."""
    held = select(func.count()).where(CycleItem.cycle_id == cycle_id, waiting_for_window())
    return {channel.value: int(session.scalar(held.where(pending_on(channel))) or 0) for channel in Channel}


def _by_state(items: dict[str, int], channel: str) -> dict[str, int]:
    return {state.value: items.get(f"{channel}:{state.value}", 0) for state in ItemState}


def _sms_counts(session: Session, cycle_id: int) -> dict[str, Any]:
    sent = Message.send_state == "sent"
    row = session.execute(
        select(
            func.count().filter(sent),
            func.count().filter(sent, Message.status == "Success"),
            func.count().filter(sent, Message.send_error == SENT_TWICE),
        ).where(Message.cycle_id == cycle_id)
    ).one()
    reason = failure_reason()
    failed = session.execute(
        select(reason, func.count()).where(Message.cycle_id == cycle_id, sms_failed()).group_by(reason)
    ).all()
    return {"sent": row[0], "delivered": row[1], "failed": dict(failed), "sent_twice": row[2]}


def _voice_counts(session: Session, cycle_id: int) -> dict[str, Any]:
    placed = Call.send_state == "sent"
    row = session.execute(
        select(
            func.count().filter(placed),
            func.count().filter(Call.outcome == "answered"),
            func.count().filter(Call.acknowledged.is_(True)),
        ).where(Call.cycle_id == cycle_id)
    ).one()
    cause = func.coalesce(Call.hangup_cause, literal_column("'UNSPECIFIED'"))
    not_answered = session.execute(
        select(cause, func.count())
        .where(Call.cycle_id == cycle_id, Call.ended_at.is_not(None), Call.outcome != "answered")
        .group_by(cause)
    ).all()
    return {
        "called": row[0],
        "answered": row[1],
        "acknowledged": row[2],
        "not_answered": dict(not_answered),
        # Who answered, per call (shared/call_grades.py): `answered` above counts every call picked up.
        "grades": call_grades.cycle_grades(session, cycle_id),
    }
