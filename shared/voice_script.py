"""What a live voice call says, cached in Redis so `/voice` with `isActive=1` answers without Postgres.

The worker stores the message under the customer's number *before* it places the call (AT may call
back before `/call` has even answered) and under AT's sessionId once it knows it. The receiver looks up
the sessionId first, then the number. When Redis cannot be reached, the receiver reads the message from
the Call row with that sessionId instead (web/callbacks.py), never by number.
"""

from __future__ import annotations

import re
from xml.sax.saxutils import escape

import redis

SCRIPT_TTL_SECONDS = 6 * 3600
#: How long `<GetDigits>` waits for the customer's key after the prompt (AT's default would be 30 s).
DIGITS_TIMEOUT_SECONDS = 10
CONFIRM_PROMPT = "To confirm you got this message, press 1."
THANKS = "Thank you. Goodbye."
FALLBACK_MESSAGE = "Hello. We tried to reach you by SMS. Please check your messages. Goodbye."

#: What XML 1.0 cannot carry at all, escaped or not (outside its `Char` production): C0 controls other than
#: tab, LF and CR; lone surrogates; U+FFFE and U+FFFF. A `<Say>` holding one does not parse, so AT cannot
#: speak it. `shared.cycles.check_message` refuses such text where it enters; `speak` never emits it.
XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


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


def _say(text: str) -> str:
    """One `<Say>` that parses whatever `text` holds: markup characters escaped, and what XML cannot carry
    (text stored before `check_message` refused it) spoken as a pause, i.e. a space."""
    return f'<Say voice="woman">{escape(XML_FORBIDDEN.sub(" ", text))}</Say>'


def speak(message: str) -> str:
    """The call's first answer: the message, then ask for a 1 to confirm it was heard."""
    ask = f'<GetDigits numDigits="1" timeout="{DIGITS_TIMEOUT_SECONDS}">{_say(CONFIRM_PROMPT)}</GetDigits>'
    return _document(_say(message) + ask)


def thank() -> str:
    """The answer after the customer pressed a key (AT ignores what we say once the call ended)."""
    return _document(_say(THANKS))
