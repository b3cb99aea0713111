"""`GET /dashboard`: the operator's page, server-rendered from the same report queries as the API and CLI.

Who may see it (sign-in, sessions, cross-site posts, sign-in attempts) is web/dashboard_auth.py's concern;
the view here only asks `sign_in_gate()`. Every number comes from a cycle's report (shared.cycle_report.report, with
its `funnel` and `sms_by_network` from shared.cycle_breakdown), so the page, `GET /api/cycles/<id>` and
`reach cycle show` agree; web/charts.py turns them into inline SVG.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from flask import Blueprint, Flask, Response, render_template
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared import alerts, cycle_breakdown, cycle_report, report_delays
from shared.contacts import counts_by_status
from shared.models import Cycle, CycleState
from web import charts, formats
from web.dashboard_auth import no_store, sign_in_gate
from web.services import services

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard", template_folder="templates")

TOP_CAUSES = 8
RECENT_ALERTS = 10
LATEST_FAILURES = 10
#: While a cycle of the page may still change, the page reloads itself this often (a meta refresh: the
#: CSP allows no script).
REFRESH_SECONDS = 10
STILL_RUNNING = frozenset({CycleState.PLANNING.value, CycleState.DISPATCHING.value, CycleState.PAUSED.value})


def init_app(app: Flask) -> None:
    from web import dashboard_cycles, dashboard_pages

    formats.init_app(app)
    app.register_blueprint(bp)
    app.register_blueprint(dashboard_cycles.bp)
    app.register_blueprint(dashboard_pages.bp)


@bp.get("")
def dashboard() -> ResponseReturnValue:
    if (elsewhere := sign_in_gate()) is not None:
        return elsewhere
    with services().sessions() as session:
        page = overview(session, services().settings.dashboard_cycles)
    return no_store(Response(render_template("dashboard.html", **page)))


def overview(session: Session, how_many: int) -> dict[str, Any]:
    """The latest cycles' reports (shared.cycle_report.report: one place for each rule) and what they add up to."""
    ids = session.scalars(select(Cycle.id).order_by(Cycle.id.desc()).limit(how_many)).all()
    reports = [r for r in (cycle_report.report(session, cycle_id, services().settings) for cycle_id in ids) if r]
    hangups: Counter[str] = Counter()
    for report in reports:
        hangups.update(report["voice_detail"]["not_answered"])
    return {
        "reports": reports,
        "contacts": counts_by_status(session),
        "failures": cycle_breakdown.failures_over(reports),
        "latest_failures": cycle_breakdown.latest_failures(session, ids, LATEST_FAILURES),
        "networks": cycle_breakdown.networks_over(reports),
        "hangups": hangups.most_common(TOP_CAUSES),
        "charts": [charts.funnel_chart(report) for report in reversed(reports)],
        "steps": [step.label for step in cycle_breakdown.FUNNEL],
        "alerts": alerts.recent(session, RECENT_ALERTS),
        "report_delays": report_delays.Waits.load(session, services().settings).table(),
        "refresh_seconds": REFRESH_SECONDS if any(r["state"] in STILL_RUNNING for r in reports) else None,
    }
