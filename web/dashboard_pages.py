"""The dashboard's pages about one thing: a cycle (`/dashboard/cycles/<id>`: its report and who it did not reach,
and why) and a contact (`/dashboard/contacts/<phone>`: the contact and its timeline).

Read-only, server-rendered, signed in as `/dashboard` is (web/dashboard_auth.py). The numbers are the shared
queries' (shared.cycle_report.report, shared/cycle_failures.py, shared/contact_timeline.py); the views read the
request, ask, and render.
"""

from __future__ import annotations

from datetime import datetime
from urllib.parse import quote

from flask import Blueprint, Response, redirect, render_template, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from shared import cycle_failures, cycle_report
from shared.contact_timeline import BadCursor, Cursor, timeline
from shared.db import MAX_BIGINT
from shared.models import Contact
from shared.phone import InvalidPhone, normalise_phone
from web.dashboard_auth import no_store, notice_page, signed_in
from web.formats import local_time
from web.operator_api import CYCLE_ID
from web.services import services

bp = Blueprint("dashboard_pages", __name__, url_prefix="/dashboard", template_folder="templates")


@bp.get(f"/cycles/{CYCLE_ID}")
def cycle_page(cycle_id: int) -> ResponseReturnValue:
    """A cycle's report, and a page of the contacts it did not reach with AT's reasons."""
    if not signed_in():
        return redirect("/dashboard/login", code=303)
    raw = request.args.get("after", "0")
    if not raw.isdigit() or len(raw) > 19 or int(raw) > MAX_BIGINT:
        return notice_page(400, f"not a page of cycle {cycle_id}: after must be an item id")
    with services().sessions() as session:
        report = cycle_report.report(session, cycle_id, services().settings)
        if report is None:
            return notice_page(404, f"no cycle {cycle_id}")
        page = cycle_failures.failures_page(session, cycle_id, int(raw))
    return render("cycle.html", report=report, page=page, after=int(raw))


@bp.get("/contacts/<path:phone>")
def contact_page(phone: str) -> ResponseReturnValue:
    """A contact and its timeline, newest first, a page at a time."""
    if not signed_in():
        return redirect("/dashboard/login", code=303)
    try:
        e164 = normalise_phone(phone, services().settings.default_country)
    except InvalidPhone as exc:
        return notice_page(404, f"no contact {phone[:40]}: {exc}")
    try:
        before = Cursor.decode(request.args["before"]) if "before" in request.args else None
    except BadCursor as exc:
        return notice_page(400, str(exc))
    with services().sessions() as session:
        contact = session.scalars(select(Contact).where(Contact.phone == e164)).one_or_none()
        if contact is None:  # never added, or erased (DELETE /api/contacts/<phone>)
            return notice_page(404, f"no contact {e164}")
        page = timeline(session, contact, before)
        return render("contact.html", contact=contact, page=page, first=before is None)


def render(template: str, **context: object) -> Response:
    return no_store(Response(render_template(template, when=when, phone_path=phone_path, **context)))


def when(value: datetime | str | None) -> str:
    """A time as the pages show it: to the second, in DASHBOARD_TIMEZONE, saying which (web/formats.py)."""
    return "" if value is None else local_time(value, seconds=True)


def phone_path(phone: str) -> str:
    """The contact page's URL for a number (`+` encoded, so the path is the number exactly)."""
    return "/dashboard/contacts/" + quote(phone, safe="")
