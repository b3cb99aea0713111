"""The operator API's field checks: one helper per kind of field, used by every endpoint that takes one.

Each answers a 400 naming the field and what was sent. Nothing is coerced: `"dry_run": "true"` once
started a real cycle to every contact because the code tested `is True`, and `/communicate` sent
`"message": true` as the SMS "1" because it read the operator's fields as leniently as AT's callbacks
(issue 12). `True` is an `int` in Python, so every type test here is exact.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from shared import cycles, voice_languages
from shared.cycles import CycleError
from shared.models import Fallback
from shared.tags import BadTags, audience_tags
from web.errors import ApiError

_JSON_TYPES = {
    bool: "a boolean",
    int: "a number",
    float: "a number",
    str: "a string",
    list: "an array",
    dict: "an object",
    type(None): "null",
}


def json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    return _JSON_TYPES.get(type(value), type(value).__name__)


def only_fields(doc: dict[str, Any], allowed: Collection[str]) -> None:
    """A 400 for a field the endpoint does not take: a misspelt `dry_run` must not start a real cycle."""
    for key in doc:
        if key not in allowed:
            raise ApiError(400, f"unknown field {key!r}; the fields are: {', '.join(sorted(allowed))}")


def flag(doc: dict[str, Any], key: str) -> bool:
    """A JSON boolean; absent or null is false (design §4.1)."""
    value = doc.get(key)
    if value is None:
        return False
    if type(value) is not bool:
        raise ApiError(400, f"field {key} must be a JSON boolean (true or false), not {json_type(value)}")
    return value


def text(doc: dict[str, Any], key: str, required: bool = True) -> str | None:
    """A JSON string without NUL (Postgres text cannot hold it); absent or null is None when optional."""
    value = doc.get(key)
    if value is None and not required:
        return None
    value = _string(key, value)
    if "\x00" in value:
        raise ApiError(400, f"field {key} must not contain NUL characters")
    return value


def message(doc: dict[str, Any], key: str, required: bool = True) -> str | None:
    """A message through the one message rule (`cycles.check_message`, which names a NUL and where it is),
    trimmed; absent, null or empty is None when optional."""
    value = doc.get(key)
    if not required and (value is None or value == ""):
        return None
    try:
        return cycles.check_message(_string(key, value), key)
    except CycleError as exc:
        raise ApiError(400, str(exc)) from None


def voice(doc: dict[str, Any]) -> dict[str, Any]:
    """A cycle's or schedule's `voice_message` and `voice_audio_url`, each a string or an object by language
    (`shared.voice_languages`), checked; absent, null or empty is None."""
    try:
        return {
            "voice_message": voice_languages.check_voice_message(doc.get("voice_message")),
            "voice_audio_url": voice_languages.check_audio_url(doc.get("voice_audio_url")),
        }
    except CycleError as exc:
        raise ApiError(400, str(exc)) from None


def tags(doc: dict[str, Any], key: str = "tags") -> list[str] | None:
    """A cycle's or schedule's audience tags (`shared.tags.audience_tags`); absent is None: every contact."""
    if key not in doc:
        return None
    try:
        return audience_tags(doc[key], key)
    except BadTags as exc:
        raise ApiError(400, str(exc)) from None


def window(doc: dict[str, Any], key: str) -> str | None:
    """A send window (design §4.2): `HH:MM-HH:MM` or `always`, as stored; absent or null is None (the settings')."""
    if doc.get(key) is None:
        return None
    value = _string(key, doc[key])
    try:
        return cycles.check_window(value, key)
    except CycleError as exc:
        raise ApiError(400, f"field {exc}") from None


def fallback(doc: dict[str, Any], key: str = "fallback") -> Fallback:
    """A cycle's or schedule's `fallback` (`shared.cycles.check_fallback`); absent or null is `next_cycle`."""
    try:
        return cycles.check_fallback(doc.get(key), key)
    except CycleError as exc:
        raise ApiError(400, str(exc)) from None


def _string(key: str, value: object) -> str:
    if value is None:
        raise ApiError(400, f"missing field: {key}")
    if type(value) is not str:
        raise ApiError(400, f"field {key} must be text, not {json_type(value)}")
    return value


def whole_number(raw: str | None, name: str, low: int, high: int, default: int) -> int:
    """A query parameter that is a whole number from `low` to `high`: ASCII digits only, so no sign, no
    exponent (`1e3`), no fraction, and no digit string long enough to make `int()` slow."""
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= len(str(high))) or not low <= int(raw) <= high:
        raise ApiError(400, f"{name} must be a whole number from {low} to {high}, not {raw[:40]!r}")
    return int(raw)
