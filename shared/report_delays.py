"""How long AT's delivery reports take, read from our own recent messages: the one place that samples them and
takes their percentiles (nearest rank, as Postgres' `percentile_disc`).

- The first report of any kind, all networks (`first_report_delays`): its P99 is how long a send whose AT answer
  was lost is given before it is sent again (worker/unknown_sends.py).
- The final report, per mobile network (`networkCode`, at-api.md §3): its P50 and P95 over the network's newest
  `SAMPLE_PER_NETWORK` final reports of the last `WINDOW`. With FALLBACK_AFTER_SECONDS=auto, a `same_cycle`
  contact is called once its network's P95 has passed without a `Success` (worker/fallback.py), within
  FALLBACK_AFTER_MIN_SECONDS..FALLBACK_AFTER_MAX_SECONDS.

The per-network figures are kept in `network_report_delays`, refreshed by cycle housekeeping (`refresh`): one
index-only probe per network ever seen (`ix_messages_final_reports`) to list the networks, then per network one
LIMITed range of the same index. Never a scan of all messages, and the same SQL on SQLite (embedded mode): the
percentiles of at most SAMPLE_PER_NETWORK rows per network are taken here, in Python.

A contact's network is the `networkCode` of its last report (`contacts.last_network_code`), never a guess from
the number's prefix: a number keeps its prefix when it moves network (shared/networks.py), and at-api.md lists
no prefixes per network. A contact without one, or a network with fewer than MIN_SAMPLE reports in the window,
waits the P95 of every network's sample pooled (`ALL`); with fewer than MIN_SAMPLE of those too, the maximum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, delete, func, select, text
from sqlalchemy.orm import Session

from shared.db import insert_for
from shared.models import FINAL, FINAL_PREDICATE, Contact, DlrEvent, Message
from shared.networks import network_name
from shared.operator_models import NetworkReportDelay
from shared.settings import Settings

Delay = TypeVar("Delay", timedelta, float)
#: The figures are read from the newest reports of the last day: recent enough to follow a network's pace,
#: bounded work every refresh.
WINDOW = timedelta(days=1)
SAMPLE_PER_NETWORK = 500
#: Below this many reports a network's P95 is one of its slowest few: the pooled figure is used instead.
MIN_SAMPLE = 30
#: `network_report_delays.network_code` of every network's sample pooled.
ALL = "*"
#: Every network our final reports ever named, in code order: one index probe each (a loose index scan).
NETWORKS = text(
    f"""
    WITH RECURSIVE codes(code) AS (
        SELECT min(network_code) FROM messages WHERE {FINAL_PREDICATE} AND network_code IS NOT NULL
        UNION ALL
        SELECT (SELECT min(network_code) FROM messages WHERE {FINAL_PREDICATE} AND network_code > codes.code)
        FROM codes WHERE codes.code IS NOT NULL
    )
    SELECT code FROM codes WHERE code IS NOT NULL
    """
)


def now() -> datetime:
    return datetime.now(UTC)


def percentile(values: Sequence[Delay], fraction: float) -> Delay:
    """The nearest-rank percentile (`percentile_disc`): the smallest value with `fraction` of them at or below."""
    ordered = sorted(values)
    return ordered[max(math.ceil(fraction * len(ordered)), 1) - 1]


def sent_at() -> ColumnElement[datetime]:
    """When AT took the message: a one-off send's last hand-over, else when the row was written."""
    return func.coalesce(Message.claimed_at, Message.created_at)


def first_report_delays(session: Session, sample: int) -> list[timedelta]:
    """From a send to its first report of any kind, over the newest `sample` messages of the last WINDOW that got
    one. Messages still waiting do not count: this is how long reports that come take."""
    newest = select(Message.at_message_id, sent_at().label("sent_at")).order_by(Message.id.desc()).limit(sample)
    rows = newest.subquery()
    pairs = session.execute(
        select(rows.c.sent_at, func.min(DlrEvent.received_at))
        .join(DlrEvent, DlrEvent.at_message_id == rows.c.at_message_id)
        .where(rows.c.sent_at > now() - WINDOW)
        .group_by(rows.c.at_message_id, rows.c.sent_at)
    ).all()
    return [max(timedelta(0), first - sent) for sent, first in pairs]


def final_report_delays(session: Session, network_code: str) -> list[float]:
    """Seconds from a send to its final report, for the network's newest SAMPLE_PER_NETWORK in the WINDOW."""
    pairs = session.execute(final_reports_query(network_code)).all()
    return [max(0.0, (final - sent).total_seconds()) for sent, final in pairs]


def final_reports_query(network_code: str) -> Select[tuple[datetime, datetime]]:
    """A backward range of `ix_messages_final_reports` (tests/test_fallback_auto.py reads the plan)."""
    return (
        select(sent_at(), Message.status_at)
        .where(Message.network_code == network_code, FINAL, Message.status_at > now() - WINDOW)
        .order_by(Message.status_at.desc())
        .limit(SAMPLE_PER_NETWORK)
    )


@dataclass(frozen=True)
class NetworkDelay:
    network_code: str
    samples: int
    p50: float | None
    p95: float | None

    @classmethod
    def of(cls, network_code: str, delays: Sequence[float]) -> NetworkDelay:
        if not delays:
            return cls(network_code, 0, None, None)
        return cls(network_code, len(delays), percentile(delays, 0.50), percentile(delays, 0.95))

    @property
    def name(self) -> str:
        return "all networks pooled" if self.network_code == ALL else network_name(self.network_code)


def refresh(session: Session) -> list[NetworkDelay]:
    """Housekeeping: each network's figures (and the pooled ones) from its newest final reports."""
    delays = {code: final_report_delays(session, code) for code in session.scalars(NETWORKS)}
    # A network with no final report in the WINDOW is forgotten: nothing recent says how fast it is.
    found = [NetworkDelay.of(code, d) for code, d in delays.items() if d]
    found.append(NetworkDelay.of(ALL, [s for d in delays.values() for s in d]))
    at = now()
    for figure in found:
        values = {"samples": figure.samples, "p50_seconds": figure.p50, "p95_seconds": figure.p95, "refreshed_at": at}
        stmt = insert_for(session, NetworkReportDelay).values(network_code=figure.network_code, **values)
        session.execute(stmt.on_conflict_do_update(index_elements=["network_code"], set_=values))
    gone = NetworkReportDelay.network_code.not_in([f.network_code for f in found])
    session.execute(delete(NetworkReportDelay).where(gone))
    return found


def figures(session: Session) -> list[NetworkDelay]:
    """The stored figures, the busiest network first and the pooled ones last."""
    rows = session.scalars(select(NetworkReportDelay)).all()
    stored = [NetworkDelay(r.network_code, r.samples, r.p50_seconds, r.p95_seconds) for r in rows]
    return sorted(stored, key=lambda f: (f.network_code == ALL, -f.samples, f.network_code))


@dataclass(frozen=True)
class Waits:
    """What a `same_cycle` fallback waits, by the contact's network (FALLBACK_AFTER_SECONDS, or with `auto` the
    stored figures within their bounds)."""

    settings: Settings
    by_network: dict[str, NetworkDelay]

    @classmethod
    def load(cls, session: Session, settings: Settings) -> Waits:
        return cls(settings, {f.network_code: f for f in figures(session)})

    def basis(self, network_code: str | None) -> NetworkDelay | None:
        """The figure the wait comes from: the network's own, else the pooled one, else none (the maximum)."""
        for code in (network_code, ALL):
            figure = self.by_network.get(code or ALL)
            if figure is not None and figure.samples >= MIN_SAMPLE and figure.p95 is not None:
                return figure
        return None

    def seconds_for(self, network_code: str | None) -> int:
        fixed = self.settings.fallback_after_seconds
        if fixed != "auto":
            return fixed
        figure = self.basis(network_code)
        low, high = self.settings.fallback_after_min_seconds, self.settings.fallback_after_max_seconds
        return high if figure is None else max(low, min(math.ceil(figure.p95 or high), high))

    def table(self) -> list[dict[str, Any]]:
        """Each network's figures and the wait its contacts get (doctor, dashboard), the pooled row last: it is
        also what contacts with no report yet, and networks with too few, wait."""
        return [self._row(f) for f in self.by_network.values()]

    def _row(self, figure: NetworkDelay) -> dict[str, Any]:
        code = None if figure.network_code == ALL else figure.network_code
        basis = self.basis(code)
        if self.settings.fallback_after_seconds != "auto":
            why = "fixed"
        elif basis is None:
            why = "maximum: too few reports"
        else:
            why = "own P95" if basis is figure else "all networks' P95"
        return {
            "network_code": figure.network_code,
            "network": figure.name,
            "samples": figure.samples,
            "p50": figure.p50,
            "p95": figure.p95,
            "wait": self.seconds_for(code),
            "basis": why,
        }


def describe_seconds(seconds: float | None) -> str:
    """`95 s`, `2.1 s`, or `-` (no figure)."""
    if seconds is None:
        return "-"
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"


def waits_by_contact(session: Session, contact_ids: Sequence[int | None], settings: Settings) -> dict[int | None, int]:
    """Each contact's fallback wait in seconds, by the network of its last report (none: the pooled figure)."""
    if settings.fallback_after_seconds != "auto":
        return dict.fromkeys(contact_ids, settings.fallback_after_seconds)
    waits = Waits.load(session, settings)
    which = Contact.id.in_(sorted({c for c in contact_ids if c is not None}))
    rows = session.execute(select(Contact.id, Contact.last_network_code).where(which))
    networks: dict[int | None, str | None] = {contact_id: code for contact_id, code in rows}
    return {contact_id: waits.seconds_for(networks.get(contact_id)) for contact_id in contact_ids}
