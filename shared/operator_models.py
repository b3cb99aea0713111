"""Records Reach keeps for the operator beside the messaging tables of shared/models.py: erased numbers (and
the key that hashes them), contact imports and their refused rows, idempotency keys of cycle starts, alerts,
how fast each mobile network reports, and carrier incidents."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy import text as sql_text
from sqlalchemy.orm import Mapped, mapped_column

from shared.models import Base, BigId, utcnow


class ErasedNumber(Base):
    """A number whose contact was erased (shared/erasure.py), kept only as a keyed hash: callbacks about it
    are dropped, and its opt-out, if any, outlives the erasure and comes back if the number is added again."""

    __tablename__ = "erased_numbers"

    phone_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    erased_at: Mapped[datetime]
    opted_out_at: Mapped[datetime | None]
    consent_at: Mapped[datetime | None]
    consent_by: Mapped[str | None] = mapped_column(String(120))


class ErasureKey(Base):
    """The key that hashes erased numbers when ERASURE_KEY is not set: made once, never changed."""

    __tablename__ = "erasure_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sql_text("CURRENT_TIMESTAMP"))


# -- contact imports through the operator API --------------------------------------------------------------------


class ContactImport(Base):
    """An operator API import that refused rows; the whole list of them is `GET /api/imports/<id>/refused.csv`
    (the answer shows only the first ones). Housekeeping deletes it after IMPORT_RETENTION_DAYS."""

    __tablename__ = "contact_imports"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(
        default=utcnow, server_default=sql_text("CURRENT_TIMESTAMP"), index=True
    )
    received: Mapped[int] = mapped_column(BigInteger, default=0)
    created: Mapped[int] = mapped_column(BigInteger, default=0)
    updated: Mapped[int] = mapped_column(BigInteger, default=0)
    refused: Mapped[int] = mapped_column(BigInteger, default=0)


class ImportRefusal(Base):
    """One refused row of an import: its number in the upload, the phone as given (as text) and why."""

    __tablename__ = "import_refusals"

    import_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("contact_imports.id", ondelete="CASCADE"), primary_key=True
    )
    row_number: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    phone: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)


# -- idempotency keys of POST /api/cycles and `reach cycle run` ----------------------------------------------------


class IdempotencyKey(Base):
    """An `Idempotency-Key` a cycle was started with: the same key within shared.idempotency.WINDOW answers
    that cycle again instead of starting another; `request_hash` tells a retry from a different request."""

    __tablename__ = "idempotency_keys"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    cycle_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("cycles.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(
        default=utcnow, server_default=sql_text("CURRENT_TIMESTAMP"), index=True
    )


class Alert(Base):
    """Something the operator must hear about (shared/alerts.py): a paused cycle, a delivery-report silence, a
    parked callback, AT refusing the credentials."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    message: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(
        default=utcnow, server_default=sql_text("CURRENT_TIMESTAMP"), index=True
    )


class NetworkReportDelay(Base):
    """How long one mobile network's final delivery reports took lately (shared/report_delays.py refreshes it
    from its newest reports; `*` pools every network): what FALLBACK_AFTER_SECONDS=auto waits."""

    __tablename__ = "network_report_delays"

    network_code: Mapped[str] = mapped_column(String(10), primary_key=True)
    samples: Mapped[int]
    p50_seconds: Mapped[float | None] = mapped_column(Float)
    p95_seconds: Mapped[float | None] = mapped_column(Float)
    refreshed_at: Mapped[datetime]


class NetworkIncident(Base):
    """A mobile network whose delivery reports failed far above its baseline (shared/incidents.py): while it is
    held (`applied_at` NULL), failure reports from it since `since` leave their contacts as they were and
    their calls wait; once it ended (recovered, or released by the operator) housekeeping applies them."""

    __tablename__ = "network_incidents"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    network_code: Mapped[str] = mapped_column(String(10))
    opened_at: Mapped[datetime]
    #: The start of the window that showed it: reports received from then on are held.
    since: Mapped[datetime]
    failures: Mapped[int] = mapped_column(BigInteger)
    reports: Mapped[int] = mapped_column(BigInteger)
    baseline_rate: Mapped[float] = mapped_column(Float)
    #: Since when its failure rate has been back near its baseline; NULL while it is not.
    recovering_since: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    ended_by: Mapped[str | None] = mapped_column(String(20))  # `recovered` or `operator`
    #: When the reports it held were applied (after it ended); NULL while it holds them.
    applied_at: Mapped[datetime | None]

    __table_args__ = (
        # One incident at a time per network (two housekeeping runs racing open one).
        Index(
            "ix_network_incidents_open",
            "network_code",
            unique=True,
            postgresql_where=sql_text("ended_at IS NULL"),
            sqlite_where=sql_text("ended_at IS NULL"),
        ),
        # What every drained batch and every plan reads: the incidents still holding reports (a few rows).
        Index(
            "ix_network_incidents_holding",
            "id",
            postgresql_where=sql_text("applied_at IS NULL"),
            sqlite_where=sql_text("applied_at IS NULL"),
        ),
    )
