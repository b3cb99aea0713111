"""The embedded store's tables (`shared/sql_store.py`): what Redis keeps in production (the callback inbox, small
keys with an expiry), kept in the database when REDIS_URL is not set."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Float, String, Text
from sqlalchemy import text as sql_text
from sqlalchemy.orm import Mapped, mapped_column

from shared.models import Base, BigId


class InboxEntry(Base):
    """A callback the receiver accepted and no drainer has applied yet (the inbox without Redis).

    `payload` is the same JSON document the Redis inbox keeps (`shared.inbox.encode`). A claimed entry
    carries its batch's `claim_key` and claim time (epoch seconds); `dead` parks a callback that could not
    be applied, with the reason and time.
    """

    __tablename__ = "inbox_entries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    payload: Mapped[str] = mapped_column(Text)
    claim_key: Mapped[str | None] = mapped_column(String(40), index=True)
    claimed_at: Mapped[float | None] = mapped_column(Float)
    dead: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sql_text("false"))
    #: Why and when (epoch seconds) a dead entry was parked.
    dead_reason: Mapped[str | None] = mapped_column(Text)
    dead_at: Mapped[float | None] = mapped_column(Float)


class KvEntry(Base):
    """A small key with an expiry: voice scripts, the inbox wake-up mark, send-rate counters."""

    __tablename__ = "kv_entries"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[str | None] = mapped_column(Text)
    counter: Mapped[int] = mapped_column(BigInteger, default=0, server_default=sql_text("0"))
    #: Epoch seconds after which the entry no longer counts (and housekeeping deletes it).
    expires_at: Mapped[float] = mapped_column(Float, index=True)
