"""The operator's JSON API (design §4): bearer-token auth on every route."""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Iterable
from typing import Any

from flask import Blueprint, Response, request, url_for
from flask.typing import ResponseReturnValue
from kombu.exceptions import KombuError
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared import (
    cycle_control,
    cycle_export,
    cycle_report,
    cycles,
    heartbeat,
    holds,
    idempotency,
    placeholders,
    schedules,
    sender_rules,
    voice_languages,
)
from shared.contacts import contact_history, contact_json, get_or_create
from shared.cycles import CycleConflict, CycleError, CycleNotFound
from shared.imports import BadImport, import_contacts, rows_from_csv, rows_from_json
from shared.models import Call, Channel, Contact, ContactStatus, Cycle, Message, Schedule
from shared.phone import InvalidPhone, normalise_phone
from shared.refusals import StoredRefusals, import_exists, refused_csv
from shared.store import STORE_ERRORS
from shared.tags import BadTags, has_any_tag, normalise_tag
from web import fields as field
from web.auth import require_operator
from web.bodies import read_json, read_json_object
from web.errors import ApiError
from web.services import services
from web.uploads import csv_text, spooled_body

log = logging.getLogger(__name__)
bp = Blueprint("operator_api", __name__, url_prefix="/api")

#: Operator uploads (CSV imports) may be far larger than an AT callback.
MAX_UPLOAD_BYTES = 32 * 1024 * 1024
PAGE_DEFAULT, PAGE_MAX = 100, 1000
#: A cycle id in a path: ids are Postgres bigints, so a larger number is a 404, never a database error.
CYCLE_ID = "<int(min=1, max=9223372036854775807):cycle_id>"
IMPORT_ID = "<int(min=1, max=9223372036854775807):import_id>"
CSV_TYPES = {"text/csv", "application/csv"}
#: What `POST /api/cycles` and `POST /api/schedules` take: anything else is a 400, so a misspelt field
#: (`dryrun`, `tag`) never starts a real cycle to everyone.
CYCLE_FIELDS = frozenset(
    {
        "message",
        "voice_message",
        "voice_audio_url",
        "dry_run",
        "ignore_dlr_silence",
        "tags",
        "sms_window",
        "call_window",
        "fallback",
    }
)
SCHEDULE_FIELDS = frozenset(
    {"name", "cron", "message", "timezone", "voice_message", "voice_audio_url", "tags", "fallback"}
)


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
    """Add or update contacts from a JSON list or a CSV body; refused rows come back with why (the first ones,
    and all of them at `refused_url`)."""
    try:
        if request.mimetype in CSV_TYPES:
            with spooled_body(request) as body:
                return _import(rows_from_csv(csv_text(body)))
        return _import(rows_from_json(read_json(request, hint=" (or send text/csv with a phone,name header)")))
    except BadImport as exc:
        raise ApiError(400, str(exc)) from None


def _import(rows: Iterable[Any]) -> ResponseReturnValue:
    """One transaction: an upload that turns out unreadable halfway (`BadImport`) leaves nothing behind."""
    with services().sessions() as session, session.begin():
        refused = StoredRefusals(session)
        report = import_contacts(session, rows, services().settings.default_country, refused=refused)
        refused.finish(report)
    if refused.import_id is not None:
        report.refused_url = url_for(".refused_rows", import_id=refused.import_id)
    return report.as_dict(), 200


@bp.get(f"/imports/{IMPORT_ID}/refused.csv")
def refused_rows(import_id: int) -> ResponseReturnValue:
    """Every refused row of an import, as CSV (`row,phone,reason`), streamed a page at a time."""
    with services().sessions() as session:
        if not import_exists(session, import_id):
            raise ApiError(404, f"no import {import_id} with refused rows (kept IMPORT_RETENTION_DAYS)")
    filename = f"import-{import_id}-refused.csv"
    return Response(
        refused_csv(services().sessions, import_id),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


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
    """A page of contacts, optionally by status and tags (`?tag=a&tag=b`: any of them); pass `next_cursor`
    back as `cursor` for the next page."""
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
    try:
        tags = [normalise_tag(raw) for raw in request.args.getlist("tag")]
    except BadTags as exc:
        raise ApiError(400, str(exc)) from None
    with services().sessions() as session:
        if tags:  # any of them
            query = query.where(has_any_tag(session, tags))
        contacts = list(session.scalars(query.limit(limit + 1)))
    page, more = contacts[:limit], len(contacts) > limit
    return {
        "contacts": [contact_json(c) for c in page],
        "next_cursor": _encode_cursor(page[-1].id) if more else None,
    }


def _limit(raw: str | None) -> int:
    return field.whole_number(raw, "limit", 1, PAGE_MAX, default=PAGE_DEFAULT)


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


def _refuse_a_held_call(session: Session, contact: Contact) -> None:
    """A guard holds the contact (a carrier incident, a delivery-report silence: shared/holds.py) and a cycle
    would leave it out; a one-off send does not call it either."""
    if reason := holds.why_held(session, contact.id):
        raise ApiError(409, f"contact {contact.phone} is {reason}; nothing sent")


def with_warning(body: dict[str, Any], warning: str | None) -> dict[str, Any]:
    return {**body, "warning": warning} if warning else body


def send_one(fields: dict[str, Any]) -> ResponseReturnValue:
    """`POST /communicate` with `to` and `message`: one message, on the channel a cycle would use."""
    require_operator()
    # Read as the operator's JSON, not as AT's lenient callback fields: `"message": true` is no SMS "1".
    to, text = field.text(fields, "to") or "", field.message(fields, "message") or ""
    phone = _phone(to)
    with services().sessions() as session, session.begin():
        contact = get_or_create(session, phone)
        if contact.status in {ContactStatus.OPTED_OUT, ContactStatus.INVALID}:
            raise ApiError(409, f"contact {phone} is {contact.status.value}; nothing sent")
        channel = cycles.channel_for(session, contact.id)
        if channel is Channel.VOICE:
            _refuse_a_held_call(session, contact)
        text = placeholders.render(text, name=contact.name, phone=phone)
        if channel is Channel.SMS:
            settings = services().settings  # a promotional sender id's opt-out (shared/sender_rules.py)
            text += sender_rules.opt_out_suffix(phone, settings.at_sender_kind, settings.promotional_opt_out_text)
            row: Message | Call = Message(contact_id=contact.id, phone=phone, text=text)
        else:
            language = voice_languages.call_language(contact.language, services().settings.default_language)
            row = Call(contact_id=contact.id, phone=phone, message=text, language=language, send_state="queued")
        session.add(row)
        session.flush()
        row_id = row.id
    task = "reach.send.sms" if channel is Channel.SMS else "reach.send.call"
    return with_warning({"id": row_id, "channel": channel.value}, enqueue(task, row_id)), 202


# -- cycles and schedules ---------------------------------------------------------------------------------------


@bp.errorhandler(CycleError)
def _cycle_error(exc: CycleError) -> ResponseReturnValue:
    return {"error": str(exc)}, cycle_error_status(exc)


def cycle_error_status(exc: CycleError) -> int:
    """404 for an unknown cycle, 409 when its state does not allow the request, else 400 (the dashboard too)."""
    return 404 if isinstance(exc, CycleNotFound) else 409 if isinstance(exc, CycleConflict) else 400


@bp.post("/cycles")
def start_cycle() -> ResponseReturnValue:
    """Start a cycle now (202 with its id), or with `"dry_run": true` show what it would do."""
    doc = read_json_object(request)
    field.only_fields(doc, CYCLE_FIELDS)
    message, voice = field.message(doc, "message"), field.voice(doc)
    dry_run, ignore_silence = field.flag(doc, "dry_run"), field.flag(doc, "ignore_dlr_silence")
    tags, fallback = field.tags(doc), field.fallback(doc)
    sms_window, call_window = field.window(doc, "sms_window"), field.window(doc, "call_window")
    key = _idempotency_key()
    with services().sessions() as session, session.begin():
        if dry_run:
            settings = services().settings
            return cycles.preview(session, settings, message, ignore_dlr_silence=ignore_silence, tags=tags), 200
        try:
            started = idempotency.start_once(
                session,
                key,
                idempotency.request_hash(doc),
                lambda: cycles.start_cycle(
                    session,
                    message,
                    **voice,
                    ignore_dlr_silence=ignore_silence,
                    tags=tags,
                    sms_window=sms_window,
                    call_window=call_window,
                    fallback=fallback,
                ),
            )
        except idempotency.KeyReused as exc:
            raise ApiError(409, str(exc)) from None
    answer = {"id": started.cycle_id, "state": "planning"}
    if started.replayed:  # the first answer again; nothing new was started or queued
        return answer, 202, {"Idempotent-Replayed": "true"}
    warning = enqueue("reach.cycle.plan", started.cycle_id)
    if warning is None and not heartbeat.worker_alive(services().store):
        warning = heartbeat.NO_WORKER
    return with_warning(answer, warning), 202


def _idempotency_key() -> str | None:
    """The request's `Idempotency-Key` (shared/idempotency.py), if it sent one; a 400 if it cannot be one."""
    key = request.headers.get(idempotency.HEADER)
    if key is None:
        return None
    try:
        return idempotency.check_key(key)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


@bp.get("/cycles")
def list_cycles() -> ResponseReturnValue:
    """The latest cycles, newest first."""
    limit = _limit(request.args.get("limit"))
    with services().sessions() as session:
        rows = session.scalars(select(Cycle).order_by(Cycle.id.desc()).limit(limit))
        return {
            "cycles": [
                {
                    "id": c.id,
                    "state": c.state.value,
                    "created_at": c.created_at.isoformat(),
                    "plan": c.plan,
                    "schedule_id": c.schedule_id,
                    "skip_reason": c.skip_reason,  # a schedule period not run: its cycle still running, or missed
                }
                for c in rows
            ]
        }


@bp.get(f"/cycles/{CYCLE_ID}")
def show_cycle(cycle_id: int) -> ResponseReturnValue:
    """State and counts per channel and outcome."""
    with services().sessions() as session:
        found = cycle_report.report(session, cycle_id, services().settings)
    if found is None:
        raise ApiError(404, f"no cycle {cycle_id}")
    return found


@bp.get(f"/cycles/{CYCLE_ID}/results.csv")
def cycle_results(cycle_id: int) -> ResponseReturnValue:
    """Every contact's outcome in the cycle, as CSV, streamed a page at a time."""
    return _cycle_csv(cycle_id, "results", unreached=False)


@bp.get(f"/cycles/{CYCLE_ID}/unreached.csv")
def cycle_unreached(cycle_id: int) -> ResponseReturnValue:
    """The follow-up list: the cycle's contacts reached neither by a delivered SMS nor by an answered call."""
    return _cycle_csv(cycle_id, "unreached", unreached=True)


def _cycle_csv(cycle_id: int, what: str, *, unreached: bool) -> ResponseReturnValue:
    with services().sessions() as session:
        if not cycle_export.cycle_exists(session, cycle_id):
            raise ApiError(404, f"no cycle {cycle_id}")
    return Response(
        cycle_export.results_csv(services().sessions, cycle_id, unreached=unreached),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="cycle-{cycle_id}-{what}.csv"'},
    )


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
        return cycle_report.report(session, cycle_id) or {}, warning


@bp.get("/schedules")
def list_schedules() -> ResponseReturnValue:
    with services().sessions() as session:
        found = session.scalars(select(Schedule).order_by(Schedule.id)).all()
        return {"schedules": [schedules.schedule_json(session, s) for s in found]}


@bp.post("/schedules")
def add_schedule() -> ResponseReturnValue:
    """Add a schedule: `{"name", "cron", "message", "timezone"?, "voice_message"?, "tags"?, "fallback"?}`; one
    that never fires or fires more often than SCHEDULE_MIN_INTERVAL_SECONDS is a 400."""
    doc = read_json_object(request)
    field.only_fields(doc, SCHEDULE_FIELDS)
    with services().sessions() as session, session.begin():
        schedule = schedules.add_schedule(
            session,
            field.text(doc, "name") or "",
            field.text(doc, "cron") or "",
            field.message(doc, "message") or "",
            timezone=field.text(doc, "timezone", required=False) or "UTC",
            **field.voice(doc),
            tags=field.tags(doc),
            fallback=field.fallback(doc),
            min_interval_seconds=services().settings.schedule_min_interval_seconds,
        )
        return schedules.schedule_json(session, schedule), 201


@bp.delete("/schedules/<key>")
def remove_schedule(key: str) -> ResponseReturnValue:
    """Remove a schedule by id or name; its past cycles stay."""
    with services().sessions() as session, session.begin():
        if not schedules.remove_schedule(session, key):
            raise ApiError(404, f"no schedule {key}")
    return {"removed": key}, 200
