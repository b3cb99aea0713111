"""Reach's tables, as typed SQLAlchemy 2.x models.

Raw AT callbacks are kept verbatim in `raw_callbacks` (one row per callback Reach accepted, keyed by the
inbox id the receiver gave it); the typed tables hold what Reach understood from them. Status columns
are plain strings (`native_enum=False`), so a new value never needs an `ALTER TYPE`.

The embedded store's tables are in shared/store_models.py, the operator's records (erasures, imports,
idempotency keys, alerts) in shared/operator_models.py, what AT and customers send us (delivery reports and
voice callbacks as events, incoming SMS, USSD, the raw callbacks) in shared/inbound_models.py; all share this
module's Base.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy import (
    text as sql_text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from shared.tags import TagList

NAMING_CONVENTION = {
    "pk": "pk_%(table_name)s",
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
}

#: JSONB on Postgres, JSON text elsewhere (the embedded SQLite default).
JsonDocument = JSON().with_variant(JSONB(), "postgresql")
#: BIGINT keys on Postgres; SQLite only auto-increments a column declared INTEGER.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A point in time, always read back in UTC. Postgres keeps the offset (timestamptz); SQLite (the
    embedded default) stores text without one, so times are written in UTC and read back as UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            return value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UtcDateTime(),
        dict[str, Any]: JsonDocument,
        Decimal: Numeric(14, 4),
    }


class ContactStatus(enum.StrEnum):
    NEW = "new"  # never messaged
    PENDING = "pending"  # SMS sent, no final report yet
    ACTIVE = "active"  # last SMS delivered
    INACTIVE = "inactive"  # last SMS not delivered
    OPTED_OUT = "opted_out"
    INVALID = "invalid"  # the number does not exist


class Channel(enum.StrEnum):
    SMS = "sms"
    VOICE = "voice"


def _status_column(enum_type: type[enum.Enum], **kwargs: Any) -> Any:
    return mapped_column(
        Enum(enum_type, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e]),
        **kwargs,
    )


class Contact(Base):
    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    phone: Mapped[str] = mapped_column(String(20), unique=True)  # E.164
    name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[ContactStatus] = _status_column(ContactStatus, default=ContactStatus.NEW)
    #: The customer's own choice (USSD); overrides the status-based routing of a cycle.
    channel_preference: Mapped[Channel | None] = _status_column(Channel, nullable=True)
    #: The contact's latest SMS: delivery reports move the contact only through this one.
    last_message_id: Mapped[int | None] = mapped_column(BigId, index=True)
    last_sms_status: Mapped[str | None] = mapped_column(String(40))
    last_failure_reason: Mapped[str | None] = mapped_column(String(60))
    last_network_code: Mapped[str | None] = mapped_column(String(10))
    last_sms_at: Mapped[datetime | None]
    last_call_status: Mapped[str | None] = mapped_column(String(40))
    last_hangup_cause: Mapped[str | None] = mapped_column(String(60))
    last_call_at: Mapped[datetime | None]
    opted_out_at: Mapped[datetime | None]
    #: The time of the consent change last applied (the customer's STOP, START or USSD choice, or an
    #: operator's opt-out or opt-in): an older one that arrives later is ignored (shared/consent.py).
    consent_at: Mapped[datetime | None]
    #: Who made that change: `customer: SMS STOP`, `customer: USSD`, `operator: API token sha256:… from …`.
    consent_by: Mapped[str | None] = mapped_column(String(120))
    #: The latest proof the customer is reachable (their SMS or USSD session, a call they acknowledged), and
    #: which: a transient SMS failure older than it no longer routes them to a call (shared/reachability.py).
    reached_at: Mapped[datetime | None]
    reached_by: Mapped[str | None] = mapped_column(String(10))
    #: Labels for choosing an audience (shared/tags.py): `text[]` on Postgres, a JSON list on SQLite.
    tags: Mapped[list[str]] = mapped_column(TagList(), nullable=True)
    #: The language to write or speak to the contact in: an ISO 639 code (`sw`, `en`, `en-KE`).
    language: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sql_text("CURRENT_TIMESTAMP"))
    updated_at: Mapped[datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=sql_text("CURRENT_TIMESTAMP")
    )

    __table_args__ = (
        # Listing by status with a cursor on id, and the cycle's routing by status.
        Index(None, "status", "id"),
        # "Carries any of these tags" (`tags && ARRAY[...]`, shared.tags.has_any_tag), a GIN index on Postgres.
        # SQLite gets a plain one over its JSON text that serves nothing (Alembic's drift check would miss a
        # Postgres-only index there); embedded databases are small.
        Index("ix_contacts_tags", "tags", postgresql_using="gin"),
    )


class CycleState(enum.StrEnum):
    PLANNING = "planning"
    DISPATCHING = "dispatching"
    PAUSED = "paused"  # held by the operator or for an account problem (`paused_by`); resumes on command
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"  # a schedule period not run (its previous cycle had not finished); sends nothing
    CANCELLED = "cancelled"  # stopped by the operator: nothing more is sent or called for it


class PausedBy(enum.StrEnum):
    OPERATOR = "operator"  # `POST /api/cycles/<id>/pause`, `reach cycle pause`, the dashboard
    ACCOUNT = "account"  # AT refused for an account problem (e.g. InsufficientBalance)


class Fallback(enum.StrEnum):
    """When a cycle's SMS contacts who were not reached get their call (design §4.1)."""

    NEXT_CYCLE = "next_cycle"  # the seed's workflow: inactive or pending contacts are called next cycle
    SAME_CYCLE = "same_cycle"  # called in this cycle: after a final failure, or FALLBACK_AFTER_SECONDS unreported


class Schedule(Base):
    """A recurring cycle: beat starts one per due period of the cron expression, in its time zone."""

    __tablename__ = "schedules"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    cron: Mapped[str] = mapped_column(String(100))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    message: Mapped[str] = mapped_column(Text)
    voice_message: Mapped[str | None] = mapped_column(Text)
    #: `voice_message` per language and `voice_audio_url` (shared/voice_languages.py); NULL: neither given.
    voice_languages: Mapped[dict[str, Any] | None]
    #: The audience of the cycles it starts: contacts carrying any of these tags; [] (NULL) is everyone.
    tags: Mapped[list[str]] = mapped_column(TagList(), nullable=True)
    #: The fallback of the cycles it starts.
    fallback: Mapped[Fallback] = _status_column(Fallback, default=Fallback.NEXT_CYCLE, server_default="next_cycle")
    enabled: Mapped[bool] = mapped_column(default=True, server_default=sql_text("true"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sql_text("CURRENT_TIMESTAMP"))


class Cycle(Base):
    __tablename__ = "cycles"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    state: Mapped[CycleState] = _status_column(CycleState, default=CycleState.PLANNING)
    message: Mapped[str] = mapped_column(Text)
    voice_message: Mapped[str | None] = mapped_column(Text)
    #: `voice_message` per language and `voice_audio_url` (shared/voice_languages.py); NULL: neither given.
    voice_languages: Mapped[dict[str, Any] | None]
    schedule_id: Mapped[int | None] = mapped_column(ForeignKey("schedules.id", ondelete="SET NULL"))
    #: A scheduled cycle's (schedule, period) key: a second beat cannot start the same period twice.
    period_key: Mapped[str | None] = mapped_column(String(120), unique=True)
    #: Its audience: contacts carrying any of these tags (design §4.1); [] (NULL) is every contact.
    tags: Mapped[list[str]] = mapped_column(TagList(), nullable=True)
    fallback: Mapped[Fallback] = _status_column(Fallback, default=Fallback.NEXT_CYCLE, server_default="next_cycle")
    #: Counts fixed at planning time: items per channel and contacts skipped, by why.
    plan: Mapped[dict[str, Any] | None]
    paused_reason: Mapped[str | None] = mapped_column(Text)
    #: Why a schedule period was not run (state `skipped`).
    skip_reason: Mapped[str | None] = mapped_column(Text)
    paused_by: Mapped[PausedBy | None] = _status_column(PausedBy, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sql_text("CURRENT_TIMESTAMP"))
    planned_at: Mapped[datetime | None]
    #: Every item of the cycle has an id in [first_item_id, last_item_id] (others' items may too): planning
    #: inserts them in one statement and records it (worker/cycles/planning.py). A cycle's items are read over
    #: this range of the primary key (shared/cycle_items.py), with no index of their own to fill at planning.
    #: NULL when the cycle has no item (never planned; an older release's plan got its range from its items when
    #: ranges came, revision c7e3a9d1f5b2): its readers and the delete trigger read none (e5a1c9f3d7b8).
    first_item_id: Mapped[int | None] = mapped_column(BigId)
    last_item_id: Mapped[int | None] = mapped_column(BigId)
    finished_at: Mapped[datetime | None]
    #: When the delivery-report watch decided about this cycle's SMS (shared/dlr_silence.py); NULL until then.
    dlr_checked_at: Mapped[datetime | None]
    #: When its SMS were found to have no delivery report at all `DLR_SILENCE_SECONDS` after AT took them.
    dlr_silent_at: Mapped[datetime | None]
    #: The highest `dlr_events.id` when the silence was found: a report above it means reports flow again.
    dlr_event_mark: Mapped[int | None] = mapped_column(BigId)
    #: The operator's override: plan this cycle as if delivery reports were flowing.
    ignore_dlr_silence: Mapped[bool] = mapped_column(default=False, server_default=sql_text("false"))
    sms_window: Mapped[str | None] = mapped_column(String(16))  # its send windows; NULL: the settings'
    call_window: Mapped[str | None] = mapped_column(String(16))


class ItemState(enum.StrEnum):
    PENDING = "pending"  # to be sent at next_attempt_at
    CLAIMED = "claimed"  # a dispatcher holds it (until lease_until)
    SUBMITTING = "submitting"  # AT is being asked; if the dispatcher dies here we do not know the outcome
    SENT = "sent"  # AT accepted it (an SMS with its message id, or a call with its session id)
    DONE = "done"  # a call that ended (answered, or not answered and out of retries)
    FAILED = "failed"  # not sent: a permanent refusal, or out of retries
    #: Not sent and never will be: the cycle was cancelled, the contact opted out or proved invalid, or a late
    #: delivery report made the fallback call unnecessary.
    CANCELLED = "cancelled"


def due_predicate(channel: Channel) -> str:
    """A pending item of `channel`, as SQL text: the predicate of its claim index, ix_cycle_items_due_<channel>.
    A statement reading that index must spell it with literals (shared/cycles.py `pending_on`): a partial index
    serves a statement only when its WHERE implies the predicate as it is planned, before a prepared
    statement's parameters are known (Postgres's generic plans, SQLite always)."""
    return f"state = '{ItemState.PENDING.value}' AND channel = '{channel.value}'"


class CycleItem(Base):
    """One contact in one cycle: planned once, claimed once, sent at most once."""

    __tablename__ = "cycle_items"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    #: No foreign key (its per-row check was a quarter of planning): planning, the only writer, holds the
    #: cycle row FOR UPDATE; deleting a cycle still deletes its items, by trigger (migration b5d2f0c7e913).
    cycle_id: Mapped[int] = mapped_column(BigId)
    #: NULL once the contact was erased (shared/erasure.py): the item still counts in its cycle's report.
    #: No foreign key either (its per-row check was a third of planning at 1M contacts): planning holds erasures
    #: off until it commits (shared/erasure_guard.py); deleting a contact still deletes its items, by
    #: trigger (migration f2c6a9e3d7b1). Found through the unique (cycle_id, contact_id) below, cycle by cycle
    #: (shared/cycle_items.py `of_contacts`).
    contact_id: Mapped[int | None] = mapped_column(BigId)
    channel: Mapped[Channel] = _status_column(Channel)
    state: Mapped[ItemState] = _status_column(ItemState, default=ItemState.PENDING)
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sql_text("CURRENT_TIMESTAMP"))
    lease_until: Mapped[datetime | None]
    message_id: Mapped[int | None] = mapped_column(BigId)
    call_id: Mapped[int | None] = mapped_column(BigId)
    error: Mapped[str | None] = mapped_column(Text)
    #: When the customer confirmed on the USSD menu that they read this cycle's message (shared/last_message.py).
    confirmed_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sql_text("CURRENT_TIMESTAMP"))
    #: Held for its send window: `next_attempt_at` is the window's opening (a cycle's `waiting`; design §4.2).
    waiting_for_window: Mapped[bool] = mapped_column(default=False, server_default=sql_text("false"))
    #: A `same_cycle` fallback (worker/fallback.py). On an SMS item: when it becomes a call unless a `Success`
    #: comes first (set when AT accepts the SMS, brought forward by a final failure, NULL again after a
    #: `Success`). Kept on the item once it has become a call (channel `voice`): when it did.
    fallback_at: Mapped[datetime | None]

    # Planning enters every item in each index without a predicate, and in its channel's claim index, and each
    # entry costs about as much as the row (issue 15): three (migrations a8e4c2f7b9d1, b2d6f9a3c8e1, c7e3a9d1f5b2).
    __table_args__ = (
        # One item per contact in a cycle. The cycle first: a plan appends its entries at the end, whatever the
        # cycles before it (led by the contact, each went among that contact's earlier ones: issue 15).
        UniqueConstraint("cycle_id", "contact_id"),
        # A cycle's items are a range of the primary key, recorded on the cycle (shared/cycle_items.py): no
        # (cycle_id, id) index, which cost planning 0.55-0.9 s at a million contacts (issue 15).
        # What dispatchers claim: pending items of a cycle and one channel, oldest due first, in the claim's own
        # order (next_attempt_at, id), so a claim reads a batch of entries, not all due items to sort them. One
        # index per channel: a plan's entries of each are appended at its right edge. With the channel inside
        # one key, the SMS entries went mid-range, before the voice ones (1.2 s of planning's CPU at a million
        # contacts, issue 15); with it last, an SMS claim walked past every pending voice item due before it.
        *(
            Index(
                f"ix_cycle_items_due_{channel.value}",
                "cycle_id",
                "next_attempt_at",
                "id",
                postgresql_where=sql_text(due_predicate(channel)),
                sqlite_where=sql_text(due_predicate(channel)),
            )
            for channel in Channel
        ),
        # What finish_if_done counts: items past `pending` (a freshly planned cycle writes nothing here).
        Index(
            None,
            "cycle_id",
            "state",
            postgresql_where=sql_text("state <> 'pending'"),
            sqlite_where=sql_text("state <> 'pending'"),
        ),
        # SMS items waiting for a report before their fallback call: what housekeeping makes due calls of, by
        # cycle and time, and what keeps a cycle from finishing (only same-cycle fallbacks have them).
        Index(
            "ix_cycle_items_fallback_due",
            "cycle_id",
            "fallback_at",
            postgresql_where=sql_text("fallback_at IS NOT NULL AND channel = 'sms'"),
            sqlite_where=sql_text("fallback_at IS NOT NULL AND channel = 'sms'"),
        ),
        # What housekeeping looks for every 15 s: sends whose lease ran out (a handful, in any cycle).
        Index(
            "ix_cycle_items_submitting_lease",
            "lease_until",
            postgresql_where=sql_text("state = 'submitting'"),
            sqlite_where=sql_text("state = 'submitting'"),
        ),
    )


#: A message whose delivery report is final (shared/status_policy.py: ranks 40 and up), as SQL text for the raw
#: queries and partial indexes that must name the same predicate (a partial index is used only when a query's
#: WHERE implies it).
FINAL_PREDICATE = "status_rank >= 40"
FINAL = sql_text(FINAL_PREDICATE)


class Message(Base):
    """One outbound SMS to one contact."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    #: AT's messageId (`ATXid_…`); NULL when AT refused the recipient (it answers "None").
    at_message_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    #: NULL once the contact was erased: the message stays, anonymised, for the cycle's counts and cost.
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), index=True)
    cycle_id: Mapped[int | None] = mapped_column(ForeignKey("cycles.id", ondelete="SET NULL"), index=True)
    cycle_item_id: Mapped[int | None] = mapped_column(BigId, index=True)
    phone: Mapped[str] = mapped_column(String(20))
    text: Mapped[str] = mapped_column(Text)
    #: `queued` → `submitting` (committed before AT is called) → `sent` | `failed`; claimed once.
    send_state: Mapped[str] = mapped_column(String(20), default="queued", server_default="queued")
    send_error: Mapped[str | None] = mapped_column(Text)
    claimed_at: Mapped[datetime | None]  # when a one-off send was last handed to AT
    send_status_code: Mapped[int | None]
    send_status: Mapped[str | None] = mapped_column(String(40))
    #: Latest delivery status (forward-only by `status_rank`); NULL until the first report.
    status: Mapped[str | None] = mapped_column(String(40))
    status_rank: Mapped[int] = mapped_column(default=0, server_default="0")
    failure_reason: Mapped[str | None] = mapped_column(String(60))
    network_code: Mapped[str | None] = mapped_column(String(10))
    cost: Mapped[Decimal | None]
    currency: Mapped[str | None] = mapped_column(String(3))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sql_text("CURRENT_TIMESTAMP"))
    status_at: Mapped[datetime | None]

    __table_args__ = (
        # The few first attempts sent again after their answer was lost, looked at for a late report
        # (worker/unknown_sends.py).
        Index(
            "ix_messages_unanswered",
            "created_at",
            postgresql_where=sql_text("send_state = 'unanswered'"),
            sqlite_where=sql_text("send_state = 'unanswered'"),
        ),
        # Each network's newest final reports, read by shared/report_delays.py (rank 40: the first final one).
        Index("ix_messages_final_reports", "network_code", "status_at", postgresql_where=FINAL, sqlite_where=FINAL),
    )


class Call(Base):
    """One voice call, keyed by AT's sessionId."""

    __tablename__ = "calls"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    session_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="SET NULL"), index=True)
    cycle_id: Mapped[int | None] = mapped_column(ForeignKey("cycles.id", ondelete="SET NULL"), index=True)
    cycle_item_id: Mapped[int | None] = mapped_column(BigId, index=True)
    phone: Mapped[str] = mapped_column(String(20), index=True)
    direction: Mapped[str] = mapped_column(String(10), default="Outbound")
    message: Mapped[str | None] = mapped_column(Text)
    #: The language of its prompts (NULL: English) and the recording it plays instead of `message`, if any.
    language: Mapped[str | None] = mapped_column(String(16))
    audio_url: Mapped[str | None] = mapped_column(Text)
    #: `queued` → `submitting` → `sent` | `failed`, as for messages; NULL for calls we did not place.
    send_state: Mapped[str | None] = mapped_column(String(20))
    send_error: Mapped[str | None] = mapped_column(Text)
    claimed_at: Mapped[datetime | None]  # when a one-off call was last handed to AT
    status: Mapped[str | None] = mapped_column(String(40))
    call_session_state: Mapped[str | None] = mapped_column(String(40))
    hangup_cause: Mapped[str | None] = mapped_column(String(60))
    #: What the final callback meant, through the policy table (`answered`, `retry_later`, ...).
    outcome: Mapped[str | None] = mapped_column(String(20))
    duration_seconds: Mapped[int | None]
    amount: Mapped[Decimal | None]
    currency: Mapped[str | None] = mapped_column(String(3))
    dtmf_digits: Mapped[str | None] = mapped_column(String(40))
    acknowledged: Mapped[bool] = mapped_column(default=False, server_default=sql_text("false"))
    #: Who answered, once it ended (shared/call_grades.py); NULL while open or when no final callback came.
    grade: Mapped[str | None] = mapped_column(String(20))
    recording_url: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sql_text("CURRENT_TIMESTAMP"))
    ended_at: Mapped[datetime | None]


# The other tables' modules import Base from here; importing them registers their tables on Base.metadata
# (migrations, `alembic check`) whatever a caller imported first.
from shared import operator_models, store_models  # noqa: E402, F401

# Callers import these from here as before.
from shared.inbound_models import CallEvent, DlrEvent, IncomingSms, RawCallback, UssdSession  # noqa: E402, F401
