"""Communication cycles as the operator sees them: start one, preview it, read its report.

The routing rule (design §4) lives here once, as a SQL expression: SMS to `new` and `active`, a voice
call to `inactive` and `pending`, nothing to `opted_out` and `invalid`; the customer's own channel
choice (USSD) comes first. Planning (worker.planning) and one-off sends both use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import String, and_, case, func, literal, literal_column, select, true, type_coerce, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from shared import (
    alerts,
    cost_estimate,
    cycle_money,
    holds,
    placeholders,
    segments,
    sender_rules,
    voice_languages,
    voice_script,
    windows,
)
from shared.db import insert_for
from shared.models import (
    Channel,
    Contact,
    ContactStatus,
    Cycle,
    CycleItem,
    CycleState,
    Fallback,
    ItemState,
    Message,
    PausedBy,
)
from shared.settings import Settings, get_settings
from shared.status_policy import Action, Kind, rules_of
from shared.tags import has_any_tag
from shared.text_rules import too_long

#: Contacts a cycle never messages, and why.
SKIPPED_STATUSES = (ContactStatus.OPTED_OUT, ContactStatus.INVALID)
VOICE_STATUSES = (ContactStatus.INACTIVE, ContactStatus.PENDING)
#: A hard cap in characters for any text (a voice message has no SMS parts); an SMS text is also held to
#: `segments.MAX_PARTS` parts, the way AT bills it.
MAX_MESSAGE = 1600
#: `send_error` of a first attempt AT reported after it was sent again (worker/unknown_sends.py).
SENT_TWICE = "AT had sent it after all: its report came after it was sent again (sent twice)"


class CycleError(ValueError):
    """An operator request about cycles that cannot be done; the message says why."""


class CycleNotFound(CycleError):
    """The cycle the request names does not exist."""


class CycleConflict(CycleError):
    """The cycle's state does not allow the request (pausing a finished cycle, say): HTTP 409, CLI exit 1."""


def channel_expr() -> ColumnElement[str]:
    """The channel for each contact row, as SQL (`'sms'` or `'voice'`)."""
    preference = type_coerce(Contact.channel_preference, String)
    status = type_coerce(Contact.status, String)
    return case(
        (preference.is_not(None), preference),
        (status.in_([s.value for s in VOICE_STATUSES]), literal(Channel.VOICE.value)),
        else_=literal(Channel.SMS.value),
    )


def reachable() -> ColumnElement[bool]:
    return type_coerce(Contact.status, String).not_in([s.value for s in SKIPPED_STATUSES])


def pending_on(channel: Channel) -> ColumnElement[bool]:
    """SQL: a pending item of `channel`, in literals, so that the statement reads that channel's claim index
    (models.due_predicate says why). A statement about a cycle's pending items of both channels asks once per
    channel: neither index alone holds them all."""
    return and_(
        CycleItem.state == literal_column(f"'{ItemState.PENDING.value}'"),
        CycleItem.channel == literal_column(f"'{channel.value}'"),
    )


def waiting_for_report() -> ColumnElement[bool]:
    """SQL: an SMS item whose same-cycle fallback call waits on its delivery report (worker/fallback.py;
    the partial index ix_cycle_items_fallback_due holds exactly these)."""
    return (CycleItem.channel == Channel.SMS) & CycleItem.fallback_at.is_not(None)


def in_tags(session: Session, tags: Sequence[str] | None) -> ColumnElement[bool]:
    """SQL: the contact is in the audience of a cycle with these tags (any of them); no tags is everyone, and
    then the predicate is a plain TRUE that SQLAlchemy drops from the statement."""
    return has_any_tag(session, tags) if tags else true()


def channel_for(session: Session, contact_id: int) -> Channel:
    return Channel(session.scalar(select(channel_expr()).where(Contact.id == contact_id)))


def check_message(message: str | None, what: str = "message") -> str:
    """The one rule for a message Reach will send or speak: `CycleError` if it cannot be, else the text trimmed.

    Every entry point (operator API, `/communicate`, schedules, the CLI) goes through here. A character
    XML 1.0 forbids (a vertical tab from a spreadsheet, say) would make the call's `<Say>` unparseable, so
    it is refused, named and placed (1-based, counted in the text as given) for the operator to fix. So is
    a placeholder other than `{name}` and `{phone}` (shared/placeholders.py).
    """
    text = message or ""
    forbidden = voice_script.XML_FORBIDDEN.search(text)
    if forbidden:
        char, position = ord(forbidden.group()), forbidden.start() + 1
        raise CycleError(f"{what} has a character AT cannot speak: U+{char:04X} at position {position}")
    text = text.strip()
    if not text:
        raise CycleError(f"{what} must not be empty")
    if problem := too_long(text, MAX_MESSAGE):
        raise CycleError(f"{what} {problem}")
    try:
        placeholders.check(text, what)
    except placeholders.BadPlaceholder as exc:
        raise CycleError(str(exc)) from None
    over = segments.too_many_parts(text, what) or sender_rules.too_long(text, get_settings())
    if over and what == "message":
        raise CycleError(over)
    return text


def check_fallback(value: object, what: str = "fallback") -> Fallback:
    """The one rule for a cycle's `fallback` (design §4.1): exactly `next_cycle` or `same_cycle`; absent or
    null is the default, `next_cycle`. Every entry point (operator API, CLI, schedules) goes through here."""
    if value is None:
        return Fallback.NEXT_CYCLE
    if isinstance(value, str) and value in Fallback._value2member_map_:
        return Fallback(value)
    allowed = " or ".join(f'"{f.value}"' for f in Fallback)
    raise CycleError(f"{what} must be {allowed}, not {str(value)[:40]!r}")


def start_cycle(
    session: Session,
    message: str,
    voice_message: str | dict[str, str] | None = None,
    *,
    voice_audio_url: str | dict[str, str] | None = None,
    schedule_id: int | None = None,
    period_key: str | None = None,
    ignore_dlr_silence: bool = False,
    tags: Sequence[str] | None = None,
    sms_window: str | None = None,
    call_window: str | None = None,
    fallback: Fallback = Fallback.NEXT_CYCLE,
) -> int | None:
    """Record a new cycle in `planning`; None when this schedule period already has one. Its send windows
    (design §4.2) are kept as given; None: the settings' when it is dispatched."""
    message = check_message(message)
    voice = voice_languages.checked(voice_message, voice_audio_url)
    return _insert_cycle(
        session,
        message=message,
        voice_message=voice[0],
        voice_languages=voice[1],
        schedule_id=schedule_id,
        period_key=period_key,
        state=CycleState.PLANNING,
        ignore_dlr_silence=ignore_dlr_silence,
        tags=list(tags or []),
        sms_window=check_window(sms_window, "sms_window"),
        call_window=check_window(call_window, "call_window"),
        fallback=check_fallback(fallback),
    )


def check_window(window: str | None, what: str) -> str | None:
    """A cycle's send window as stored (`08:00-20:00`, `always`), or None; `CycleError` naming `what` if bad."""
    if window is None:
        return None
    try:
        checked = windows.check_window(window)
        if "sms" in what:  # `sms_window`, the CLI's `--sms-window`: it must meet a promotional sender's windows
            sender_rules.check_sms_window(checked, get_settings().at_sender_kind)
        return checked
    except windows.BadWindow as exc:
        raise CycleError(f"{what}: {exc}") from None


def record_skipped(session: Session, message: str, schedule_id: int, period_key: str, reason: str) -> int | None:
    """Record a schedule period that is not run, and why, as a finished cycle in `skipped` that sends nothing;
    None when the period has a cycle already (started, or skipped by another beat)."""
    return _insert_cycle(
        session,
        message=message,
        schedule_id=schedule_id,
        period_key=period_key,
        state=CycleState.SKIPPED,
        skip_reason=reason,
        finished_at=datetime.now(UTC),
    )


def _insert_cycle(session: Session, **values: Any) -> int | None:
    """Insert a cycle row unless its period key is taken (the key is what makes a period run once)."""
    stmt = (
        insert_for(session, Cycle)
        .values(created_at=datetime.now(UTC), **values)
        .on_conflict_do_nothing(index_elements=["period_key"])
        .returning(Cycle.id)
    )
    return session.scalar(stmt)


def preview(
    session: Session,
    settings: Settings,
    message: str = "",
    *,
    ignore_dlr_silence: bool = False,
    tags: Sequence[str] | None = None,
) -> dict[str, Any]:
    """What a cycle started now would do: counts per channel, skipped and why, SMS parts, estimated cost."""
    held = holds.hold_back_now(session, ignore_dlr_silence=ignore_dlr_silence)
    tagged = in_tags(session, tags)
    audience = holds.audience(reachable() & tagged, held)
    calls = calls_needed(session, settings, audience)  # the contacts a call would go to, by why
    skipped = dict(
        session.execute(
            select(type_coerce(Contact.status, String), func.count())
            .where(~reachable(), tagged)
            .group_by(type_coerce(Contact.status, String))
        ).all()
    )
    skipped.update(holds.count_held(session, reachable() & tagged, held))
    bill = cycle_money.sms_bill(session, message, audience & (channel_expr() == Channel.SMS.value))
    return {
        **planned_counts(sum(bill.contacts.values()), calls["contacts"], skipped),
        **cycle_money.money_keys(settings, bill, calls["contacts"]),
        "calls": calls,
    }


#: Why the dry run expects to call a contact: its status, or its own choice of voice on USSD.
CALL_REASONS = (ContactStatus.INACTIVE.value, ContactStatus.PENDING.value, "chose_voice")


def calls_needed(session: Session, settings: Settings, audience: ColumnElement[bool]) -> dict[str, Any]:
    """The dry run's `calls`: contacts routed to a call, by why, and what they cost at CALL_COST_ESTIMATE a
    call (the same price `estimated_cost` counts them at). A contact whose transient SMS failure was cleared by
    a proof of reach is `active` by now (shared/reachability.py), so it is not among them."""
    # literal_column, not a bound parameter: GROUP BY must repeat the select's expression exactly.
    reason = case(
        (Contact.channel_preference.is_not(None), literal_column("'chose_voice'")),
        else_=type_coerce(Contact.status, String),
    )
    rows = dict(
        session.execute(
            select(reason, func.count()).where(audience, channel_expr() == Channel.VOICE.value).group_by(reason)
        ).all()
    )
    by_reason = {why: int(rows.get(why, 0)) for why in CALL_REASONS}
    total = sum(by_reason.values())
    return {
        "contacts": total,
        "by_reason": by_reason,
        "estimated_cost": cost_estimate.money(settings.call_cost_estimate * total, settings.cost_currency),
    }


def skip_reasons(skipped: dict[str, int]) -> list[str]:
    """Why contacts are skipped: their status, and each hold (shared/holds.py) only when it held some back."""
    reasons = [status.value for status in SKIPPED_STATUSES]
    return [*reasons, *(reason for reason in holds.REASONS if skipped.get(reason))]


def planned_counts(sms: int, voice: int, skipped: dict[str, int]) -> dict[str, Any]:
    """The contract's integer `sms`, `voice`, `skipped` (design §4, §4.1), and who was skipped by why."""
    by_status = {reason: int(skipped.get(reason, 0)) for reason in skip_reasons(skipped)}
    return {"sms": int(sms), "voice": int(voice), "skipped": sum(by_status.values()), "skipped_by_status": by_status}


def pause(session: Session, cycle_id: int, reason: str) -> None:
    """Stop dispatching a cycle for an account problem; nothing is lost, a resume carries on. Only a
    `dispatching` cycle pauses: one the operator paused or cancelled keeps what the operator chose
    (the operator's own controls: shared/cycle_control.py)."""
    paused = session.execute(
        update(Cycle)
        .where(Cycle.id == cycle_id, Cycle.state == CycleState.DISPATCHING)
        .values(state=CycleState.PAUSED, paused_by=PausedBy.ACCOUNT, paused_reason=reason)
    )
    if paused.rowcount:
        alerts.on_commit(session, alerts.CYCLE_PAUSED, f"cycle {cycle_id} paused: {reason}", cycle_id=cycle_id)


def undelivered_statuses() -> list[str]:
    return [status for status, rule in rules_of(Kind.DLR).items() if rule.action is Action.UNDELIVERED]


def sms_failed() -> ColumnElement[bool]:
    """SQL: the message did not arrive: AT refused it, or its report says it was not delivered."""
    return (Message.send_state == "failed") | Message.status.in_(undelivered_statuses())


def failure_reason() -> ColumnElement[str]:
    """SQL: why a failed message failed, as the operator reads it: AT's `failureReason`, else the report's status,
    else the send answer's."""
    # literal_column, not a bound parameter: GROUP BY must repeat the select's expression exactly.
    return func.coalesce(Message.failure_reason, Message.status, Message.send_status, literal_column("'unknown'"))


def waiting_for_window() -> ColumnElement[bool]:
    """SQL: the item is held for a send window that has not opened yet (worker/cycles/window_holds.py holds it):
    what a cycle's `waiting` counts, and what no dispatcher needs to look at again before it opens."""
    return (
        (CycleItem.state == ItemState.PENDING)
        & CycleItem.waiting_for_window.is_(True)
        & (CycleItem.next_attempt_at > func.now())
    )
