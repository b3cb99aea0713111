"""What a live voice call says, cached in Redis so `/voice` with `isActive=1` answers without Postgres.

A message is kept only under the call Reach placed: AT's sessionId from the `/call` answer together with
the customer's number (`placed_key`), written by the worker once it has that answer. The receiver speaks
it only to a live callback carrying both; anything else (an inbound call, a session Reach did not place,
another number) hears the neutral greeting, never "the last message for this number" (issue 12). While a
`/call` request is on its way the worker keeps a `placing_key` for the number, so a customer who picks up
before AT's answer reached the worker is waited for (`shared.live_calls`). When Redis cannot be reached,
the receiver reads the Call row with that sessionId and number instead (web/callbacks.py).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

import redis

from shared import prompts

SCRIPT_TTL_SECONDS = 6 * 3600
#: How long `<GetDigits>` waits for the customer's key after the prompt (AT's default would be 30 s).
DIGITS_TIMEOUT_SECONDS = 10
#: The English prompts (the others, and these, are in `shared.prompts`).
CONFIRM_PROMPT = prompts.VOICE[prompts.FALLBACK].confirm
THANKS = prompts.VOICE[prompts.FALLBACK].thanks
#: The key that tells a stored script (JSON) from a plain message stored as it is (`VoiceScript.encode`).
_SCRIPT_MARK = "reach_script"

#: What XML 1.0 cannot carry at all, escaped or not (outside its `Char` production): C0 controls other than
#: tab, LF and CR; lone surrogates; U+FFFE and U+FFFF. A `<Say>` holding one does not parse, so AT cannot
#: speak it. `shared.cycles.check_message` refuses such text where it enters; `speak` never emits it.
XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


@dataclass(frozen=True)
class VoiceScript:
    """What one placed call says: its text (placeholders filled) or the recording it plays instead, and the
    language of the prompts around it (None: English, as before languages; `shared.prompts`)."""

    text: str | None
    audio_url: str | None = None
    language: str | None = None

    def encode(self) -> str:
        """As kept in the store: a plain text script as the text itself (what Reach stored before languages),
        any other as JSON under a mark no message starts with."""
        if self.audio_url is None and self.language is None and self.text is not None:
            return self.text
        return json.dumps({_SCRIPT_MARK: 1, "text": self.text, "audio_url": self.audio_url, "language": self.language})

    @classmethod
    def decode(cls, stored: str) -> VoiceScript:
        if stored.startswith(f'{{"{_SCRIPT_MARK}": 1'):
            try:
                doc = json.loads(stored)
                return cls(doc.get("text"), doc.get("audio_url"), doc.get("language"))
            except (ValueError, AttributeError):
                pass  # a message that only looks like one: said as it is
        return cls(stored)


def placed_key(session_id: str, phone: str) -> str:
    """The message of the call Reach placed to `phone`, under the sessionId AT returned for it."""
    return f"reach:voice:placed:{session_id}:{phone}"


def placing_key(phone: str) -> str:
    """Set while a worker's `/call` request to `phone` has not been answered yet."""
    return f"reach:voice:placing:{phone}"


def remember(client: redis.Redis, message: str, *, phone: str, session_id: str) -> None:
    client.set(placed_key(session_id, phone), message, ex=SCRIPT_TTL_SECONDS)


def lookup(client: redis.Redis, *, session_id: str, phone: str) -> str | None:
    value = client.get(placed_key(session_id, phone))
    return value.decode() if isinstance(value, bytes) else value


def _document(actions: str) -> str:
    return f'<?xml version="1.0" encoding="UTF-8"?><Response>{actions}</Response>'


def _say(text: str) -> str:
    """One `<Say>` that parses whatever `text` holds: markup characters escaped, and what XML cannot carry
    (text stored before `check_message` refused it) spoken as a pause, i.e. a space."""
    return f'<Say voice="woman">{escape(XML_FORBIDDEN.sub(" ", text))}</Say>'


def _play(url: str) -> str:
    """The recording at `url` (checked where it entered: `shared.voice_languages.check_audio_url`)."""
    return f"<Play url={quoteattr(XML_FORBIDDEN.sub('', url))}/>"


def speak(script: VoiceScript | str) -> str:
    """The call's first answer: the message said (or its recording played), then ask, in the script's
    language, for a 1 to confirm it was heard."""
    if isinstance(script, str):
        script = VoiceScript(script)
    confirm = prompts.voice(script.language).confirm
    ask = f'<GetDigits numDigits="1" timeout="{DIGITS_TIMEOUT_SECONDS}">{_say(confirm)}</GetDigits>'
    first = _play(script.audio_url) if script.audio_url else _say(script.text or "")
    return _document(first + ask)


def greet(greeting: str) -> str:
    """The answer to a call that is not one Reach placed: the neutral greeting, nothing to confirm."""
    return _document(_say(greeting))


def thank(language: str | None = None) -> str:
    """The answer after the customer pressed a key (AT ignores what we say once the call ended)."""
    return _document(_say(prompts.voice(language).thanks))
