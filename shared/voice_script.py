"""What a live voice call says, cached in Redis so `/voice` with `isActive=1` answers without Postgres.

The worker stores the message under the customer's number *before* it places the call (AT may call
back before `/call` has even answered) and under AT's sessionId once it knows it. The receiver looks up
the sessionId first, then the number.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

import redis

SCRIPT_TTL_SECONDS = 6 * 3600
CONFIRM_PROMPT = "To confirm you got this message, press 1."
THANKS = "Thank you. Goodbye."
FALLBACK_MESSAGE = "Hello. We tried to reach you by SMS. Please check your messages. Goodbye."


def session_key(session_id: str) -> str:
    return f"reach:voice:session:{session_id}"


def phone_key(phone: str) -> str:
    return f"reach:voice:phone:{phone}"


def remember(client: redis.Redis, message: str, *, phone: str, session_id: str | None = None) -> None:
    with client.pipeline(transaction=False) as pipe:
        pipe.set(phone_key(phone), message, ex=SCRIPT_TTL_SECONDS)
        if session_id:
            pipe.set(session_key(session_id), message, ex=SCRIPT_TTL_SECONDS)
        pipe.execute()


def lookup(client: redis.Redis, *, session_id: str, phone: str | None) -> str | None:
    keys = [session_key(session_id)] + ([phone_key(phone)] if phone else [])
    for value in client.mget(keys):
        if value is not None:
            return value.decode() if isinstance(value, bytes) else value
    return None


def _document(actions: str) -> str:
    return f'<?xml version="1.0" encoding="UTF-8"?><Response>{actions}</Response>'


def speak(message: str) -> str:
    """The call's first answer: the message, then ask for a 1 to confirm it was heard."""
    say = f'<Say voice="woman">{escape(message)}</Say>'
    ask = f'<GetDigits numDigits="1" timeout="10"><Say voice="woman">{escape(CONFIRM_PROMPT)}</Say></GetDigits>'
    return _document(say + ask)


def thank() -> str:
    """The answer after the customer pressed a key (AT ignores what we say once the call ended)."""
    return _document(f'<Say voice="woman">{escape(THANKS)}</Say>')
