"""The operator's JSON API (design §4): bearer-token auth on every route."""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any

from flask import Blueprint, request
from flask.typing import ResponseReturnValue
from kombu.exceptions import KombuError
from sqlalchemy import select

from shared import cycle_control, cycles, schedules
from shared.callbacks import SendRequest, parse
from shared.contacts import (
    BadImport,
    contact_history,
    contact_json,
    get_or_create,
    import_contacts,
    rows_from_csv,
    rows_from_json,
)
from shared.cycles import CycleConflict, CycleError, CycleNotFound
from shared.models import Call, Channel, Contact, ContactStatus, Cycle, Message, Schedule
from shared.phone import InvalidPhone, normalise_phone
from shared.store import STORE_ERRORS
from web.auth import require_operator
from web.errors import ApiError
from web.services import services

log = logging.getLogger(__name__)
bp = Blueprint("operator_api", __name__, url_prefix="/api")

#: Operator uploads (CSV imports) may be far larger than an AT callback.
MAX_UPLOAD_BYTES = 32 * 1024 * 1024
PAGE_DEFAULT, PAGE_MAX = 100, 1000
#: A cycle id in a path: ids are Postgres bigints, so a larger number is a 404, never a database error.
CYCLE_ID = "<int(min=1, max=9223372036854775807):cycle_id>"


@bp.before_request
def _authenticate() -> None:
    require_operator()
    request.max_content_length = MAX_UPLOAD_BYTES


def _phone(raw: str) -> str:
    try:
        return normalise_phone(raw, services().settings.default_country)
    except InvalidPhone as exc:
        raise ApiError(400, f"bad phone number {raw!r}: {exc}") from None


@bp.post("/contacts")
def add_contacts() -> ResponseReturnValue:
    """Add or update contacts from a JSON list or a CSV body; refused rows come back with why."""
    try:
        if request.mimetype in {"text/csv", "application/csv"}:
            text = request.get_data().decode("utf-8-sig", errors="replace")
            rows = rows_from_csv(text)
        else:
            doc = request.get_json(force=True, silent=True)
            if doc is None:
                raise ApiError(400, "body is not valid JSON (or send text/csv with a phone,name header)")
            rows = rows_from_json(doc)
    except BadImport as exc:
        raise ApiError(400, str(exc)) from None
    with services().sessions() as session, session.begin():
        report = import_contacts(session, rows, services().settings.default_country)
    return report.as_dict(), 200


@bp.get("/contacts/<path:phone>")
def show_contact(phone: str) -> ResponseReturnValue:
    """One contact by phone number, with or without `+`, URL-encoded or not."""
    e164 = _phone(phone)
    with services().sessions() as session:
        contact = session.scalars(select(Contact).where(Contact.phone == e164)).one_or_none()
        if contact is None:
            raise ApiError(404, f"no contact {e164}")
        return {**contact_json(contact), **contact_history(session, contact.id)}


@bp.get("/contacts")
def list_contacts() -> ResponseReturnValue:
    """A page of contacts, optionally by status; pass `next_cursor` back as `cursor` for the next page."""
    query = select(Contact).order_by(Contact.id)
    status = request.args.get("status")
    if status:
        try:
            query = query.where(Contact.status == ContactStatus(status))
        except ValueError:
            allowed = ", ".join(s.value for s in ContactStatus)
            raise ApiError(400, f"unknown status {status!r}; use one of {allowed}") from None
    after = _decode_cursor(request.args.get("cursor"))
    if after is not None:
        query = query.where(Contact.id > after)
    limit = _limit(request.args.get("limit"))
    with services().sessions() as session:
        contacts = list(session.scalars(query.limit(limit + 1)))
    page, more = contacts[:limit], len(contacts) > limit
    return {
        "contacts": [contact_json(c) for c in page],
        "next_cursor": _encode_cursor(page[-1].id) if more else None,
    }


def _limit(raw: str | None) -> int:
    if raw is None:
        return PAGE_DEFAULT
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9) or not 1 <= int(raw) <= PAGE_MAX:
        raise ApiError(400, f"limit must be a whole number from 1 to {PAGE_MAX}")
    return int(raw)


def _encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def _decode_cursor(raw: str | None) -> int | None:
    if not raw:
        return None
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        kind, _, value = text.partition(":")
        if kind == "id" and value.isascii() and value.isdigit() and len(value) <= 18:
            return int(value)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise ApiError(400, "bad cursor: pass back next_cursor from the previous page")


def enqueue(task: str, row_id: int) -> str | None:
    """Hand a task to the workers; a warning instead of an error when the broker is down.

    The row is committed already, so the work is not lost: the workers' housekeeping picks up queued
    sends and unplanned or idle cycles by itself. Answering 500 here would invite a retry, and a retried
    request would create a second cycle or send.
    """
    try:
        services().celery.send_task(task, args=[row_id], retry=False)
    except (KombuError, OSError, *STORE_ERRORS) as exc:
        log.warning("could not queue %s(%s): %s", task, row_id, exc)
        return "the broker is unreachable; the workers will pick this up by themselves once it is back"
    return None


def with_warning(body: dict[str, Any], warning: str | None) -> dict[str, Any]:
    return {**body, "warning": warning} if warning else body


def send_one(fields: dict[str, Any]) -> ResponseReturnValue:
    """`POST /communicate` with `to` and `message`: one message, on the channel a cycle would use."""
    require_operator()
    send = parse(SendRequest, fields)
    raw = fields.get("message")  # as sent: parsing made NUL and lone surrogates U+FFFD, the rule names them
    try:
        text = cycles.check_message(raw if isinstance(raw, str) else send.message)
    except CycleError as exc:
        raise ApiError(400, str(exc)) from None
    phone = _phone(send.to)
    with services().sessions() as session, session.begin():
        contact = get_or_create(session, phone)
        if contact.status in {ContactStatus.OPTED_OUT, ContactStatus.INVALID}:
            raise ApiError(409, f"contact {phone} is {contact.status.value}; nothing sent")
        channel = cycles.channel_for(session, contact.id)
        if channel is Channel.SMS:
            row: Message | Call = Message(contact_id=contact.id, phone=phone, text=text)
        else:
            row = Call(contact_id=contact.id, phone=phone, message=text, send_state="queued")
        session.add(row)
        session.flush()
        row_id = row.id
    task = "reach.send.sms" if channel is Channel.SMS else "reach.send.call"
    return with_warning({"id": row_id, "channel": channel.value}, enqueue(task, row_id)), 202


# -- cycles and schedules ---------------------------------------------------------------------------------------


def _json_body() -> dict[str, Any]:
    doc = request.get_json(force=True, silent=True)
    if not isinstance(doc, dict):
        raise ApiError(400, "body must be a JSON object")
    return doc


def _text(doc: dict[str, Any], key: str, required: bool = True) -> str | None:
    value = doc.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"field {key} must be text" if value is not None else f"missing field: {key}")
    if "\x00" in value:  # Postgres text cannot hold NUL
        raise ApiError(400, f"field {key} must not contain NUL characters")
    return value


def _message(doc: dict[str, Any], key: str, required: bool = True) -> str | None:
    """A message field, through the one message rule (`cycles.check_message`); absent or empty is None when
    optional."""
    value = doc.get(key)
    if not required and (value is None or value == ""):
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"field {key} must be text" if value is not None else f"missing field: {key}")
    return cycles.check_message(value, key)


def _flag(doc: dict[str, Any], key: str) -> bool:
    """A JSON boolean; absent or null is false. Anything else is a 400: `"true"` or `1` must not start a
    real cycle to every contact because a script quoted its boolean (design §4.1)."""
    value = doc.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ApiError(400, f"field {key} must be a JSON boolean (true or false), not {_json_type(value)}")
    return value


def _json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    names = {str: "a string", int: "a number", float: "a number", list: "an array", dict: "an object"}
    return names.get(type(value), type(value).__name__)


@bp.errorhandler(CycleError)
def _cycle_error(exc: CycleError) -> ResponseReturnValue:
    return {"error": str(exc)}, cycle_error_status(exc)


def cycle_error_status(exc: CycleError) -> int:
    """404 for an unknown cycle, 409 when its state does not allow the request, else 400 (the dashboard too)."""
    return 404 if isinstance(exc, CycleNotFound) else 409 if isinstance(exc, CycleConflict) else 400


@bp.post("/cycles")
def start_cycle() -> ResponseReturnValue:
    """Start a cycle now (202 with its id), or with `"dry_run": true` show what it would do."""
    doc = _json_body()
    message, voice_message = _message(doc, "message"), _message(doc, "voice_message", required=False)
    dry_run = _flag(doc, "dry_run")
    with services().sessions() as session, session.begin():
        if dry_run:
            return cycles.preview(session, services().settings), 200
        cycle_id = cycles.start_cycle(session, message, voice_message)
    return with_warning({"id": cycle_id, "state": "planning"}, enqueue("reach.cycle.plan", cycle_id)), 202


@bp.get("/cycles")
def list_cycles() -> ResponseReturnValue:
    """The latest cycles, newest first."""
    limit = _limit(request.args.get("limit"))
    with services().sessions() as session:
        rows = session.scalars(select(Cycle).order_by(Cycle.id.desc()).limit(limit))
        return {
            "cycles": [
                {"id": c.id, "state": c.state.value, "created_at": c.created_at.isoformat(), "plan": c.plan}
                for c in rows
            ]
        }


@bp.get(f"/cycles/{CYCLE_ID}")
def show_cycle(cycle_id: int) -> ResponseReturnValue:
    """State and counts per channel and outcome."""
    with services().sessions() as session:
        found = cycles.report(session, cycle_id)
    if found is None:
        raise ApiError(404, f"no cycle {cycle_id}")
    return found


@bp.post(f"/cycles/{CYCLE_ID}/cancel")
def cancel_cycle(cycle_id: int) -> ResponseReturnValue:
    """Stop a cycle: nothing more is sent or called for it; 200 with the cycle."""
    return with_warning(*apply_control(cycle_id, "cancel")), 200


@bp.post(f"/cycles/{CYCLE_ID}/pause")
def pause_cycle(cycle_id: int) -> ResponseReturnValue:
    """Hold a cycle's remaining sends and calls until it is resumed; 200 with the cycle."""
    return with_warning(*apply_control(cycle_id, "pause")), 200


@bp.post(f"/cycles/{CYCLE_ID}/resume")
def resume_cycle(cycle_id: int) -> ResponseReturnValue:
    """Let a paused cycle go again (paused by the operator or for an account problem); 200 with the cycle."""
    return with_warning(*apply_control(cycle_id, "resume")), 200


def apply_control(cycle_id: int, action: str) -> tuple[dict[str, Any], str | None]:
    """Apply one control, nudge the workers after a resume; the cycle's report, and a warning when the
    broker could not take the nudge (housekeeping restarts a resumed cycle by itself). The dashboard too."""
    with services().sessions() as session, session.begin():
        cycle = cycle_control.ACTIONS[action](session, cycle_id)
        tasks = cycle_control.RESUME_TASKS.get(cycle.state, ()) if action == "resume" else ()
    warning = next(filter(None, (enqueue(task, cycle_id) for task in tasks)), None)
    with services().sessions() as session:
        return cycles.report(session, cycle_id) or {}, warning


@bp.get("/schedules")
def list_schedules() -> ResponseReturnValue:
    with services().sessions() as session:
        found = session.scalars(select(Schedule).order_by(Schedule.id))
        return {"schedules": [schedules.schedule_json(s) for s in found]}


@bp.post("/schedules")
def add_schedule() -> ResponseReturnValue:
    """Add a schedule: `{"name", "cron", "message", "timezone"?, "voice_message"?}`."""
    doc = _json_body()
    with services().sessions() as session, session.begin():
        schedule = schedules.add_schedule(
            session,
            _text(doc, "name") or "",
            _text(doc, "cron") or "",
            _message(doc, "message") or "",
            timezone=_text(doc, "timezone", required=False) or "UTC",
            voice_message=_message(doc, "voice_message", required=False),
        )
        return schedules.schedule_json(schedule), 201


@bp.delete("/schedules/<key>")
def remove_schedule(key: str) -> ResponseReturnValue:
    """Remove a schedule by id or name; its past cycles stay."""
    with services().sessions() as session, session.begin():
        if not schedules.remove_schedule(session, key):
            raise ApiError(404, f"no schedule {key}")
    return {"removed": key}, 200
