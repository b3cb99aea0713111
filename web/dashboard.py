"""`GET /dashboard`: the operator's page, server-rendered from the same report queries as the API and CLI.

Who may see it (sign-in, sessions, cross-site posts, sign-in attempts) is web/dashboard_auth.py's concern;
the views here only ask `signed_in()`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from flask import Blueprint, Flask, Response, redirect, render_template
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared import alerts, cycles
from shared.contacts import counts_by_status
from shared.models import Cycle
from web.dashboard_auth import no_store, signed_in
from web.services import services

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard", template_folder="templates")

TOP_REASONS = 8
RECENT_ALERTS = 10


def init_app(app: Flask) -> None:
    from web import dashboard_cycles, dashboard_pages

    app.register_blueprint(bp)
    app.register_blueprint(dashboard_cycles.bp)
    app.register_blueprint(dashboard_pages.bp)


@bp.get("")
def dashboard() -> ResponseReturnValue:
    if not signed_in():
        return redirect("/dashboard/login", code=303)
    with services().sessions() as session:
        page = overview(session, services().settings.dashboard_cycles)
    return no_store(Response(render_template("dashboard.html", **page)))


def overview(session: Session, how_many: int) -> dict[str, Any]:
    """The latest cycles' reports (shared.cycles.report: one place for each rule) and what they add up to."""
    ids = session.scalars(select(Cycle.id).order_by(Cycle.id.desc()).limit(how_many)).all()
    reports = [r for r in (cycles.report(session, cycle_id, services().settings) for cycle_id in ids) if r]
    failures: Counter[str] = Counter()
    hangups: Counter[str] = Counter()
    for report in reports:
        failures.update(report["sms_detail"]["failed"])
        hangups.update(report["voice_detail"]["not_answered"])
    return {
        "reports": reports,
        "contacts": counts_by_status(session),
        "failures": failures.most_common(TOP_REASONS),
        "hangups": hangups.most_common(TOP_REASONS),
        "chart": funnel_chart(list(reversed(reports))),
        "alerts": alerts.recent(session, RECENT_ALERTS),
    }


#: The funnel's steps, in order: (label, breakdown in the report, key in it).
FUNNEL = (
    ("SMS sent", "sms_detail", "sent"),
    ("delivered", "sms_detail", "delivered"),
    ("called", "voice_detail", "called"),
    ("answered", "voice_detail", "answered"),
    ("acknowledged", "voice_detail", "acknowledged"),
)
CHART_HEIGHT, BAR_WIDTH, BAR_GAP, GROUP_GAP = 120, 10, 2, 16


def funnel_chart(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Bars for an inline SVG: one group per cycle (oldest left), one bar per funnel step."""
    tallest = max((r[detail][key] for r in reports for _, detail, key in FUNNEL), default=0) or 1
    group_width = len(FUNNEL) * (BAR_WIDTH + BAR_GAP) + GROUP_GAP
    bars, labels = [], []
    for g, report in enumerate(reports):
        x0 = g * group_width
        labels.append({"x": x0 + (group_width - GROUP_GAP) / 2, "text": f"#{report['id']}"})
        for step, (label, detail, key) in enumerate(FUNNEL):
            value = report[detail][key]
            height = round(CHART_HEIGHT * value / tallest, 1)
            bars.append({
                "x": x0 + step * (BAR_WIDTH + BAR_GAP), "y": CHART_HEIGHT - height, "height": height,
                "step": step, "title": f"cycle {report['id']}: {label} {value}",
            })  # fmt: skip
    return {
        "bars": bars,
        "labels": labels,
        "width": max(group_width * len(reports), 1),
        "height": CHART_HEIGHT,
        "bar_width": BAR_WIDTH,
        "steps": [label for label, _, _ in FUNNEL],
    }
