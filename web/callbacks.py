"""AT's callbacks (design §4): validate, queue on the inbox, answer fast. Views never write Postgres; a live
voice call reads it only when Redis cannot be reached (the customer is on the line)."""

from __future__ import annotations

import logging
from typing import Any, NoReturn

from flask import Blueprint, Response, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from shared import last_message, live_calls, ussd, voice_script
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
    """USSD step: answer the menu screen now; the choice is applied from the queue."""
    require_webhook_token()
    fields = read_fields(request)
    step = parse(UssdStep, fields)
    screen = ussd.step(step.text)
    queue("ussd", fields)
    text = screen.text
    phone = phone_or_raw(step.phone_number) or step.phone_number
    if screen.effect is ussd.Effect.SHOW_STATUS:
        text = _status_screen(phone)
    elif screen.effect is ussd.Effect.SHOW_LAST_MESSAGE:
        text = _last_message_screen(phone, screen.page)
    return Response(text[: ussd.MAX_SCREEN], mimetype="text/plain")


def _last_message_screen(phone: str, page: int) -> str:
    try:
        with services().live_reads.connect() as connection:
            shown = last_message.latest(connection, phone)
    except SQLAlchemyError as exc:
        log.error("USSD last-message lookup failed: %s", exc)
        return "END Sorry, we cannot look up your messages right now. Please try again later."
    return ussd.last_message_screen(shown.text if shown else None, page)


def _status_screen(phone: str) -> str:
    try:
        with services().live_reads.connect() as connection:
            row = connection.execute(
                select(Contact.status, Contact.channel_preference).where(Contact.phone == phone)
            ).first()
    except SQLAlchemyError as exc:
        log.error("USSD status lookup failed: %s", exc)
        return "END Sorry, we cannot look up your status right now. Please try again later."
    if row is None:
        return ussd.status_screen(phone, None, None)
    status, preference = row
    return ussd.status_screen(phone, status.value, preference.value if preference else None)


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
    if event.dtmf_digits:
        return Response(voice_script.thank(), mimetype="application/xml")
    message = _placed_call_message(event, store_up)
    if message is None:
        log.warning("voice session %s is not a call Reach placed to its caller; saying the greeting", event.session_id)
        return Response(voice_script.greet(services().settings.voice_greeting), mimetype="application/xml")
    return Response(voice_script.speak(message), mimetype="application/xml")


def _placed_call_message(event: VoiceEvent, store_up: bool) -> str | None:
    """The message of the call Reach placed to this caller with this sessionId (`shared.live_calls`), or None.

    Never by the caller's number alone: anyone can post a number, and an inbound call can spoof one.
    """
    phone = phone_or_raw(event.caller_number)
    if phone is None or (event.direction or "").lower() == "inbound":
        return None
    if store_up:
        try:
            return live_calls.placed_message(services().store, session_id=event.session_id, phone=phone)
        except STORE_ERRORS as exc:
            log.error("voice script lookup failed (reading the call from Postgres): %s", exc)
    return _message_from_postgres(event.session_id, phone)


def _message_from_postgres(session_id: str, phone: str) -> str | None:
    """When the store cannot be reached: the Call row Reach placed to `phone` whose sessionId AT returned."""
    try:
        with services().live_reads.connect() as connection:
            return connection.scalar(
                select(Call.message).where(
                    Call.session_id == session_id, Call.phone == phone, Call.send_state.is_not(None)
                )
            )
    except SQLAlchemyError as exc:
        log.error("voice script lookup in Postgres failed: %s", exc)
        return None


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
