"""The dashboard's hand on a running cycle: pause, resume and cancel buttons, as POST forms.

The rules are shared/cycle_control.py's, applied as the operator API applies them (`apply_control`). Every
POST under /dashboard is checked for its origin before any view runs (web/dashboard_auth.py). Cancelling asks
first on a page of its own: the CSP allows no script, so no `confirm()` dialog, and a cancel cannot be undone.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, redirect, render_template, request
from flask.typing import ResponseReturnValue

from shared import cycle_report
from shared.cycles import CycleError
from web.dashboard_auth import no_store, notice_page, signed_in
from web.operator_api import CYCLE_ID, apply_control, cycle_error_status
from web.services import services

log = logging.getLogger(__name__)

bp = Blueprint("dashboard_cycles", __name__, url_prefix="/dashboard/cycles", template_folder="templates")


@bp.post(f"/{CYCLE_ID}/<any(pause, resume):action>")
def pause_or_resume(cycle_id: int, action: str) -> ResponseReturnValue:
    """Pause or resume a cycle, then back to the dashboard."""
    return control(cycle_id, action)


@bp.get(f"/{CYCLE_ID}/cancel")
def confirm_cancel(cycle_id: int) -> ResponseReturnValue:
    """Ask before cancelling: what the cycle is and how much of it would not be sent."""
    if not signed_in():
        return redirect("/dashboard/login", code=303)
    with services().sessions() as session:
        report = cycle_report.report(session, cycle_id)
    if report is None:
        return notice_page(404, f"no cycle {cycle_id}")
    if report["state"] in ("done", "failed", "cancelled"):
        return notice_page(409, f"cycle {cycle_id} is {report['state']}: there is nothing left to cancel")
    to_go = sum(report[detail]["items"]["pending"] for detail in ("sms_detail", "voice_detail"))  # what it stops
    return no_store(Response(render_template("cancel_cycle.html", report=report, to_go=to_go)))


@bp.post(f"/{CYCLE_ID}/cancel")
def cancel(cycle_id: int) -> ResponseReturnValue:
    """Cancel a cycle, once the confirmation page's button said so."""
    if signed_in() and request.form.get("confirm") != "yes":
        return redirect(f"/dashboard/cycles/{cycle_id}/cancel", code=303)
    return control(cycle_id, "cancel")


def control(cycle_id: int, action: str) -> ResponseReturnValue:
    if not signed_in():
        return redirect("/dashboard/login", code=303)
    try:
        _report, warning = apply_control(cycle_id, action)
    except CycleError as exc:
        return notice_page(cycle_error_status(exc), str(exc))
    log.info("dashboard: cycle %s %s", cycle_id, action)
    if warning:
        return notice_page(200, f"Cycle {cycle_id}: {action} done. {warning}")
    return redirect("/dashboard", code=303)
