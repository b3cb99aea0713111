"""A cycle's funnel and its SMS by mobile network (issue 13), the numbers the dashboard shows and draws and
`GET /api/cycles/<id>` and `reach cycle show` print: `funnel` and `sms_by_network` in the cycle's report
(shared.cycle_report.report), and what they add up to over several cycles.

Every percentage says what it is of: a step of the funnel is a share of the step before it on its channel
(delivered of SMS sent, answered of called, ...), and also of the cycle's whole audience, which is what the
dashboard's chart draws so that each cycle, of 3 contacts or of 50,000, fills its own 100 %.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.models import Message
from shared.networks import network_name


@dataclass(frozen=True)
class Step:
    step: str
    label: str
    #: Where its count is in the cycle's report, and what its percentage is of (a label and where that is).
    count: tuple[str, ...]
    of: str
    of_count: tuple[str, ...]


FUNNEL = (
    Step("sms_sent", "SMS sent", ("sms_detail", "sent"), "SMS planned", ("sms",)),
    Step("delivered", "delivered", ("sms_detail", "delivered"), "SMS sent", ("sms_detail", "sent")),
    Step("called", "called", ("voice_detail", "called"), "calls planned", ("voice_detail", "planned")),
    Step("answered", "answered", ("voice_detail", "answered"), "called", ("voice_detail", "called")),
    Step("acknowledged", "acknowledged", ("voice_detail", "acknowledged"), "answered", ("voice_detail", "answered")),
)


def percent(part: int, whole: int) -> float | None:
    """`part` as a percentage of `whole`, to one decimal; None when there is nothing to be a share of."""
    return round(100 * part / whole, 1) if whole else None


def breakdown_keys(session: Session, report: dict[str, Any]) -> dict[str, Any]:
    """The report's `funnel` and `sms_by_network`, from its counts and one query."""
    return {"funnel": funnel(report), "sms_by_network": sms_by_network(session, report["id"])}


def funnel(report: dict[str, Any]) -> dict[str, Any]:
    """Each step's count, its share of the step before (`percent` of `of`), and of the cycle's audience."""
    audience = int(report["sms"]) + int(report["voice"])
    steps = []
    for step in FUNNEL:
        count, whole = _at(report, step.count), _at(report, step.of_count)
        steps.append({
            "step": step.step, "label": step.label, "count": count, "of": step.of, "of_count": whole,
            "percent": percent(count, whole), "percent_of_audience": percent(count, audience),
        })  # fmt: skip
    return {"audience": audience, "steps": steps}


def _at(report: dict[str, Any], path: tuple[str, ...]) -> int:
    value: Any = report
    for key in path:
        value = value[key]
    return int(value)


def sms_by_network(session: Session, cycle_id: int) -> list[dict[str, Any]]:
    """The cycle's SMS that AT accepted, by the network their delivery report named (none yet: `null`),
    most first: how many, delivered, failed, and the delivery rate (delivered of those sent)."""
    from shared.cycles import sms_failed

    rows = session.execute(
        select(
            Message.network_code,
            func.count(),
            func.count().filter(Message.status == "Success"),
            func.count().filter(sms_failed()),
        )
        .where(Message.cycle_id == cycle_id, Message.send_state == "sent")
        .group_by(Message.network_code)
    ).all()
    return _ranked(network_row(code, sent, delivered, failed) for code, sent, delivered, failed in rows)


def network_row(code: str | None, sent: int, delivered: int, failed: int) -> dict[str, Any]:
    return {
        "network_code": code, "network": network_name(code), "sent": int(sent), "delivered": int(delivered),
        "failed": int(failed), "delivery_rate": percent(delivered, sent),
    }  # fmt: skip


def _ranked(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Most sent first; messages without a report last."""
    return sorted(rows, key=lambda row: (row["network_code"] is None, -row["sent"], row["network_code"] or ""))


# -- over several cycles ----------------------------------------------------------------------------------------


def networks_over(reports: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """`sms_by_network` added up over these cycles' reports."""
    totals: dict[str | None, list[int]] = {}
    for report in reports:
        for row in report["sms_by_network"]:
            total = totals.setdefault(row["network_code"], [0, 0, 0])
            for i, key in enumerate(("sent", "delivered", "failed")):
                total[i] += row[key]
    return _ranked(network_row(code, *counts) for code, counts in totals.items())


def failures_over(reports: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Failed SMS by reason over these cycles' reports, most first: the total and each cycle's count."""
    reasons: dict[str, dict[int, int]] = {}
    for report in reports:
        for reason, count in report["sms_detail"]["failed"].items():
            reasons.setdefault(reason, {})[report["id"]] = int(count)
    rows = [{"reason": r, "total": sum(by.values()), "by_cycle": by} for r, by in reasons.items()]
    return sorted(rows, key=lambda row: (-row["total"], row["reason"]))


def latest_failures(session: Session, cycle_ids: Sequence[int], limit: int) -> list[dict[str, Any]]:
    """The latest SMS of these cycles that did not arrive: number, why, network, when (newest first)."""
    from shared.cycles import failure_reason, sms_failed

    when = func.coalesce(Message.status_at, Message.created_at)
    rows = session.execute(
        select(Message.cycle_id, Message.phone, Message.contact_id, failure_reason(), Message.network_code, when)
        .where(Message.cycle_id.in_(cycle_ids), sms_failed())
        .order_by(when.desc(), Message.id.desc())
        .limit(limit)
    ).all()
    return [_failure(*row) for row in rows]


def _failure(
    cycle_id: int, phone: str, contact_id: int | None, reason: str, code: str | None, at: datetime
) -> dict[str, Any]:
    # An erased contact's messages stay, anonymised, without a contact: nothing to link to.
    return {
        "cycle_id": cycle_id, "phone": phone, "has_contact": contact_id is not None, "reason": reason,
        "network": network_name(code) if code else None, "at": at,
    }  # fmt: skip
