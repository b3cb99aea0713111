"""A cycle's voice in each contact's language (issue 14): `voice_message` and `voice_audio_url` per language.

Each is either one value for everyone (a string, as before) or an object by language code, as contacts store
them (`{"sw": "...", "en": "..."}`). A recording (`voice_audio_url`) is played with `<Play>` instead of saying
the text: AT has no Swahili voice (at-api.md §13), so a local language is spoken well only from a recording.

Which entry a contact gets (`entry_for`): the one for their language (`sw-KE` takes `sw`), else the one for
DEFAULT_LANGUAGE, else the first given. A recording for their own language wins over text; a text for their
language wins over a recording for the default one (`script_for`).

Stored: a plain `voice_message` string stays in the `voice_message` text column; the rest goes in the JSON
column `voice_languages` as given (`{"voice_message": {...}?, "voice_audio_url": "..." | {...}?}`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

# `cycles` as a module: it imports this one (start_cycle), so its names are read when called, not now.
from shared import cycles, placeholders, prompts
from shared.contact_changes import BadChange, read_language
from shared.tags import json_type
from shared.voice_script import XML_FORBIDDEN, VoiceScript

#: What a recording's URL must end in: the formats AT plays (at-api.md §13: "a known audio extension").
AUDIO_EXTENSIONS = (".mp3", ".wav")
MAX_URL = 2000

#: One value for everyone, or values by language code.
PerLanguage = str | dict[str, str]


def check_voice_message(value: object, what: str = "voice_message") -> PerLanguage | None:
    """A `voice_message` as stored: each text through the one message rule (`cycles.check_message`); absent,
    null or "" is None. `CycleError` naming the field (`voice_message.sw`) otherwise."""
    return _per_language(value, what, lambda text, name: cycles.check_message(text, name))


def check_audio_url(value: object, what: str = "voice_audio_url") -> PerLanguage | None:
    """A `voice_audio_url` as stored: each an http(s) URL ending in .mp3 or .wav; absent, null or "" is None."""
    return _per_language(value, what, _url)


def _per_language(value: object, what: str, check: Any) -> PerLanguage | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return check(value, what)
    example = '{"sw": "...", "en": "..."}'
    if not isinstance(value, dict):
        kind = json_type(value)
        raise cycles.CycleError(f"{what} must be text or an object by language code ({example}), not {kind}")
    if not value:
        raise cycles.CycleError(f"{what} must not be an empty object: give one entry per language ({example})")
    checked: dict[str, str] = {}
    for key, text in value.items():
        language = _language(key, what)
        if language in checked:
            raise cycles.CycleError(f"{what} gives language {language} twice")
        if not isinstance(text, str):
            raise cycles.CycleError(f"{what}.{language} must be text, not {json_type(text)}")
        checked[language] = check(text, f"{what}.{language}")
    return checked


def _language(key: str, what: str) -> str:
    try:
        language = read_language(key)
    except BadChange:
        language = None
    if language is None:
        raise cycles.CycleError(f"{what}: {key[:20]!r} is not a language code such as sw or en (ISO 639)")
    return language


def _url(value: str, what: str) -> str:
    url = value.strip()
    parts = urlsplit(url) if len(url) <= MAX_URL else None
    good = (
        parts is not None
        and parts.scheme.lower() in ("http", "https")
        and bool(parts.hostname)
        and url.lower().endswith(AUDIO_EXTENSIONS)
        and parts.path.lower().endswith(AUDIO_EXTENSIONS)
        and not any(char.isspace() for char in url)
        and not XML_FORBIDDEN.search(url)
    )
    if not good:
        raise cycles.CycleError(f"{what} must be an http(s) URL of a .mp3 or .wav file (at most {MAX_URL} characters)")
    return url


def checked(voice_message: object, voice_audio_url: object) -> tuple[str | None, dict[str, Any] | None]:
    """The (`voice_message`, `voice_languages`) columns for the operator's values; `CycleError` naming a bad one."""
    return stored(check_voice_message(voice_message), check_audio_url(voice_audio_url))


def stored(
    voice_message: PerLanguage | None, voice_audio_url: PerLanguage | None
) -> tuple[str | None, dict[str, Any] | None]:
    """The (`voice_message`, `voice_languages`) columns for checked values."""
    doc: dict[str, Any] = {}
    if isinstance(voice_message, dict):
        doc["voice_message"] = voice_message
    if voice_audio_url is not None:
        doc["voice_audio_url"] = voice_audio_url
    return (voice_message if isinstance(voice_message, str) else None), (doc or None)


def as_given(plain: str | None, doc: dict[str, Any] | None) -> dict[str, Any]:
    """`voice_message` and `voice_audio_url` as the operator gave them (reports, schedules)."""
    doc = doc or {}
    return {"voice_message": doc.get("voice_message", plain), "voice_audio_url": doc.get("voice_audio_url")}


def _base(language: str | None) -> str:
    return (language or "").split("-")[0].lower()


def match_for(entries: PerLanguage | None, language: str | None) -> tuple[str | None, str] | None:
    """The entry for `language` itself (`sw-KE`: `sw-KE`, else any `sw`); a string is everyone's, key None."""
    if entries is None or isinstance(entries, str):
        return None if entries is None else (None, entries)
    if language in entries:
        return language, entries[language]
    return next(((key, value) for key, value in entries.items() if _base(key) == _base(language) != ""), None)


def entry_for(entries: PerLanguage, language: str | None, *, default: str) -> tuple[str | None, str]:
    """The entry a contact speaking `language` gets: theirs, else DEFAULT_LANGUAGE's (`default`), else the first."""
    found = match_for(entries, language) or match_for(entries, default)
    if found is not None:
        return found
    assert isinstance(entries, dict)  # a string always matches
    return next(iter(entries.items()))


def script_for(
    doc: dict[str, Any] | None,
    plain: str | None,
    message: str,
    *,
    language: str | None,
    default: str,
    name: str | None,
    phone: str,
) -> VoiceScript:
    """What a call to one contact says: from the cycle's `voice_languages` (`doc`), its plain `voice_message`,
    else its SMS `message`. The text is kept even when a recording plays (the call's `message`, read on USSD)."""
    doc = doc or {}
    texts: PerLanguage = doc.get("voice_message") or plain or message
    audio: PerLanguage | None = doc.get("voice_audio_url")
    text_key, text = entry_for(texts, language, default=default)
    mine = match_for(audio, language)
    text_is_mine = match_for(texts, language) is not None
    chosen = mine if mine or text_is_mine else match_for(audio, default)
    key = chosen[0] if chosen else text_key
    return VoiceScript(
        placeholders.render(text, name=name, phone=phone),
        audio_url=chosen[1] if chosen else None,
        language=call_language(language, key, default),
    )


def call_language(*candidates: str | None) -> str | None:
    """A call's `language`: that of its prompts, the first of `candidates` that has them (the contact's, then
    its message's, then DEFAULT_LANGUAGE: `prompts.table_language`); None for English, as before languages."""
    spoken = prompts.table_language(*candidates)
    return None if spoken == prompts.FALLBACK else spoken


def is_personal(doc: dict[str, Any] | None, plain: str | None, message: str) -> bool:
    """Whether any text of the cycle's voice holds a placeholder (then the contacts' names are read)."""
    texts = (doc or {}).get("voice_message") or plain or message
    values = texts.values() if isinstance(texts, dict) else [texts]
    return any(placeholders.is_personal(text) for text in values)
