"""`GET /dashboard`: the operator's page, server-rendered from the same report queries as the API and CLI.

Browsers cannot send a bearer header, so the operator signs in once with an API_TOKEN through a form;
the answer is a signed, HttpOnly, SameSite=Strict cookie scoped to /dashboard. The cookie is signed with
a key derived from the token used, so removing that token from API_TOKEN ends its sessions at once; the
token itself is never in a URL, a cookie or a log line.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import Counter
from typing import Any

from flask import Blueprint, Flask, Response, redirect, render_template, request
from flask.typing import ResponseReturnValue
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared import cycles
from shared.contacts import counts_by_status
from shared.models import Cycle
from web.auth import is_operator_token
from web.services import services

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard", template_folder="templates")

COOKIE = "reach_dashboard"
TOP_REASONS = 8
#: The sign-in form's body: it carries the credential, so it is read before anything can be checked; the
#: form needs well under this (its time to arrive is bounded too: BODY_TIMEOUT_SECONDS).
LOGIN_MAX_BYTES = 4 * 1024


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)


def _serializer(token: str) -> URLSafeTimedSerializer:
    key = hmac.new(token.encode(), b"reach dashboard session", hashlib.sha256).digest()
    return URLSafeTimedSerializer(key, salt="reach.dashboard")


def signed_in() -> bool:
    """True when the request carries a session cookie signed for a token that is still valid."""
    cookie = request.cookies.get(COOKIE, "")
    max_age = int(services().settings.dashboard_session_hours * 3600)
    if not cookie:
        return False
    for token in services().settings.api_tokens:
        try:
            _serializer(token).loads(cookie, max_age=max_age)
            return True
        except BadSignature:
            continue
    return False


@bp.get("/login")
def login_form() -> ResponseReturnValue:
    return _login_page(200)


@bp.post("/login")
def login() -> ResponseReturnValue:
    request.max_content_length = LOGIN_MAX_BYTES  # before the form is read: larger is a 413
    settings = services().settings
    given = request.form.get("token", "").strip()
    if not settings.api_tokens:
        return _login_page(401, "The dashboard is disabled: set API_TOKEN.")
    if not given or not is_operator_token(given):
        return _login_page(401, "Wrong token.")
    response = redirect("/dashboard", code=303)
    response.set_cookie(
        COOKIE,
        _serializer(given).dumps({"v": 1}),
        max_age=int(settings.dashboard_session_hours * 3600),
        path="/dashboard",
        secure=settings.dashboard_cookie_secure,
        httponly=True,
        samesite="Strict",
    )
    return response


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    response = redirect("/dashboard/login", code=303)
    response.delete_cookie(COOKIE, path="/dashboard")
    return response


@bp.get("")
def dashboard() -> ResponseReturnValue:
    if not signed_in():
        return redirect("/dashboard/login", code=303)
    with services().sessions() as session:
        page = overview(session, services().settings.dashboard_cycles)
    return _no_store(Response(render_template("dashboard.html", **page)))


def overview(session: Session, how_many: int) -> dict[str, Any]:
    """The latest cycles' reports (shared.cycles.report: one place for each rule) and what they add up to."""
    ids = session.scalars(select(Cycle.id).order_by(Cycle.id.desc()).limit(how_many)).all()
    reports = [r for r in (cycles.report(session, cycle_id) for cycle_id in ids) if r is not None]
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


def _login_page(status: int, error: str | None = None) -> ResponseReturnValue:
    return _no_store(Response(render_template("login.html", error=error), status=status))


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"
    response.headers["X-Frame-Options"] = "DENY"
    return response
