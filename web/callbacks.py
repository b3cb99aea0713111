"""AT's callbacks (design §4): validate, queue on the inbox, answer fast. Views never write Postgres; a live
voice call reads it only when Redis cannot be reached (the customer is on the line)."""

from __future__ import annotations

import logging
from typing import Any, NoReturn

from flask import Blueprint, Response, request
from flask.typing import ResponseReturnValue
from sqlalchemy import Row, select
from sqlalchemy.exc import SQLAlchemyError

from shared import last_message, live_calls, prompts, ussd, voice_script
from shared.callbacks import (
    Dlr,
    IncomingSms,
    UssdStep,
    VoiceEvent,
    parse,
    phone_or_raw,
    storable_fields,
)
from shared.models import Call, Contact
from shared.store import STORE_ERRORS
from web import operator_api
from web.auth import has_operator_token, passes_webhook_check, require_operator, require_webhook_token
from web.errors import ApiError
from web.forms import read_fields
from web.services import services

log = logging.getLogger(__name__)
bp = Blueprint("callbacks", __name__)

#: The 503 of a callback the inbox could not keep (AT retries it); web/fastpath.py answers the same.
UNAVAILABLE = "temporarily unable to accept callbacks; retry later"


def queue(kind: str, fields: dict[str, Any]) -> str:
    """Put a validated callback on the inbox; 503 (AT retries) if the store could not keep it."""
    try:
        return services().inbox.push(kind, storable_fields(fields))
    except STORE_ERRORS as exc:
        log.error("could not queue %s callback: %s", kind, exc)
        raise ApiError(503, UNAVAILABLE) from None


def accepted(item_id: str) -> ResponseReturnValue:
    return {"status": "queued", "id": item_id}, 200


@bp.post("/dlr")
def dlr() -> ResponseReturnValue:
    """AT delivery report: queue it, answer 200."""
    require_webhook_token()
    fields = read_fields(request)
    parse(Dlr, fields)
    return accepted(queue("dlr", fields))


@bp.post("/receiveSMS")
def receive_sms() -> ResponseReturnValue:
    """Incoming SMS from a customer: queue it, answer 200."""
    require_webhook_token()
    fields = read_fields(request)
    parse(IncomingSms, fields)
    return accepted(queue("sms", fields))


@bp.post("/ussd")
def ussd_step() -> ResponseReturnValue:
    """USSD step: answer the menu screen now, in the contact's language; the choice is applied from the queue."""
    require_webhook_token()
    fields = read_fields(request)
    step = parse(UssdStep, fields)
    phone = phone_or_raw(step.phone_number) or step.phone_number
    contact, looked_up = _ussd_contact(phone)
    language = contact.language if contact else None
    screen = ussd.step(step.text, language)
    queue("ussd", fields)
    text = screen.text
    if screen.effect is ussd.Effect.SHOW_STATUS:
        text = _status_screen(phone, contact) if looked_up else prompts.ussd(language).status_unavailable
    elif screen.effect is ussd.Effect.SHOW_LAST_MESSAGE:
        text = _last_message_screen(phone, screen.page, language)
    return Response(text[: ussd.MAX_SCREEN], mimetype="text/plain")


def _ussd_contact(phone: str) -> tuple[Row[Any] | None, bool]:
    """The contact's language, status and channel choice (None: not on our list), and whether the lookup
    worked; when Postgres cannot be reached the menu is still answered, in English."""
    try:
        with services().live_reads.connect() as connection:
            row = connection.execute(
                select(Contact.language, Contact.status, Contact.channel_preference).where(Contact.phone == phone)
            ).first()
    except SQLAlchemyError as exc:
        log.error("USSD contact lookup failed: %s", exc)
        return None, False
    return row, True


def _last_message_screen(phone: str, page: int, language: str | None) -> str:
    try:
        with services().live_reads.connect() as connection:
            shown = last_message.latest(connection, phone)
    except SQLAlchemyError as exc:
        log.error("USSD last-message lookup failed: %s", exc)
        return prompts.ussd(language).messages_unavailable
    return ussd.last_message_screen(shown.text if shown else None, page, language)


def _status_screen(phone: str, contact: Row[Any] | None) -> str:
    if contact is None:
        return ussd.status_screen(phone, None, None)
    preference = contact.channel_preference.value if contact.channel_preference else None
    return ussd.status_screen(phone, contact.status.value, preference, contact.language)


@bp.post("/voice")
def voice() -> ResponseReturnValue:
    """Voice callback: live (`isActive=1`) gets this call's script as XML; final gets a 200."""
    require_webhook_token()
    return _voice(read_fields(request))


def _voice(fields: dict[str, Any]) -> ResponseReturnValue:
    event = parse(VoiceEvent, fields)
    if not event.live:
        return accepted(queue("voice", fields))
    # A customer is on the line: answer even when the step cannot be kept (a 503 would be silence).
    try:
        services().inbox.push("voice", storable_fields(fields))
        store_up = True
    except STORE_ERRORS as exc:
        log.error("could not queue live voice step of %s (answering it anyway): %s", event.session_id, exc)
        store_up = False
    if event.dtmf_digits:  # thanks in the call's language; a call Reach did not place hears English
        script = _placed_call_script(event, store_up, wait=0)
        return Response(voice_script.thank(script.language if script else None), mimetype="application/xml")
    script = _placed_call_script(event, store_up)
    if script is None:
        log.warning("voice session %s is not a call Reach placed to its caller; saying the greeting", event.session_id)
        return Response(voice_script.greet(services().settings.voice_greeting), mimetype="application/xml")
    return Response(voice_script.speak(script), mimetype="application/xml")


def _placed_call_script(
    event: VoiceEvent, store_up: bool, wait: float = live_calls.WAIT_SECONDS
) -> voice_script.VoiceScript | None:
    """What the call Reach placed to this caller with this sessionId says (`shared.live_calls`), or None.

    Never by the caller's number alone: anyone can post a number, and an inbound call can spoof one.
    """
    phone = phone_or_raw(event.caller_number)
    if phone is None or (event.direction or "").lower() == "inbound":
        return None
    if store_up:
        try:
            return live_calls.placed_script(services().store, session_id=event.session_id, phone=phone, wait=wait)
        except STORE_ERRORS as exc:
            log.error("voice script lookup failed (reading the call from Postgres): %s", exc)
    return _script_from_postgres(event.session_id, phone)


def _script_from_postgres(session_id: str, phone: str) -> voice_script.VoiceScript | None:
    """When the store cannot be reached: the Call row Reach placed to `phone` whose sessionId AT returned."""
    try:
        with services().live_reads.connect() as connection:
            row = connection.execute(
                select(Call.message, Call.audio_url, Call.language).where(
                    Call.session_id == session_id, Call.phone == phone, Call.send_state.is_not(None)
                )
            ).first()
    except SQLAlchemyError as exc:
        log.error("voice script lookup in Postgres failed: %s", exc)
        return None
    if row is None or (row.message is None and row.audio_url is None):
        return None
    return voice_script.VoiceScript(row.message, audio_url=row.audio_url, language=row.language)


@bp.post("/communicate")
def communicate() -> ResponseReturnValue:
    """Seed compatibility: a voice callback (has sessionId/isActive) or an operator send (to, message).

    The credentials are checked before the body is read, so a stranger's body is never read (nor waited
    for): `?token=` lets it be a voice callback, the bearer header an operator send."""
    if not (passes_webhook_check() or has_operator_token()):
        _refuse_stranger()
    fields = read_fields(request)
    if "sessionId" in fields or "isActive" in fields:
        require_webhook_token()
        return _voice(fields)
    if "to" in fields or "message" in fields:
        require_operator()
        return operator_api.send_one(fields)
    raise ApiError(400, "expected a voice callback (sessionId, isActive) or a send request (to, message)")


def _refuse_stranger() -> NoReturn:
    """Without the body, which of the two it was is unknown: the error of the credential it tried, if any."""
    tried_bearer = "Authorization" in request.headers
    if "token" in request.args and not tried_bearer:
        require_webhook_token()
    if tried_bearer or not services().settings.api_tokens:
        require_operator()  # what is wrong with the bearer, or that the operator API is off
    raise ApiError(401, "missing credentials: an operator send needs a bearer token, a voice callback ?token=")
