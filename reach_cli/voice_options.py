"""`--voice-message`, `--voice-message-lang LANG=TEXT` and `--voice-audio-url [LANG=]URL` (issue 14): what
`reach cycle run` and `reach schedule add` give `shared.voice_languages`, through its checks (exit 2 naming
the option when one fails)."""

from __future__ import annotations

import re
from typing import Any

import click

#: The `LANG=` before a text or URL: a language code as contacts store them (checked by voice_languages).
_LANG_PREFIX = re.compile(r"(?P<lang>[A-Za-z]{2,8}(?:-[A-Za-z0-9]{2,3})?)=(?P<value>.*)", re.DOTALL)

VOICE_MESSAGE_LANG = "--voice-message-lang"
VOICE_AUDIO_URL = "--voice-audio-url"

voice_message_lang = click.option(
    VOICE_MESSAGE_LANG, "voice_message_lang", multiple=True, metavar="LANG=TEXT",
    help="What calls say to contacts of language LANG (repeat per language); a contact whose language has no "
    "entry gets DEFAULT_LANGUAGE's, else the first.",
)  # fmt: skip
voice_audio_url = click.option(
    VOICE_AUDIO_URL, "voice_audio_url", multiple=True, metavar="[LANG=]URL",
    help="A recording (http(s), .mp3 or .wav) played instead of the text: one URL for everyone, or LANG=URL "
    "per language.",
)  # fmt: skip


def voice_or_exit(plain: str | None, by_language: tuple[str, ...], audio: tuple[str, ...]) -> dict[str, Any]:
    """`{"voice_message", "voice_audio_url"}` checked as `shared.voice_languages` stores them; exit 2 if bad."""
    from reach_cli.common import EXIT_USAGE, fail
    from shared import voice_languages
    from shared.cycles import CycleError

    try:
        if plain and by_language:
            raise CycleError(f"give --voice-message or {VOICE_MESSAGE_LANG}, not both")
        texts = _pairs(by_language, VOICE_MESSAGE_LANG) if by_language else plain
        urls = _urls(audio)
        return {
            "voice_message": voice_languages.check_voice_message(
                texts, VOICE_MESSAGE_LANG if by_language else "voice message"
            ),
            "voice_audio_url": voice_languages.check_audio_url(urls, VOICE_AUDIO_URL),
        }
    except CycleError as exc:  # what was typed: bad input, exit 2
        fail(str(exc), EXIT_USAGE)


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    from shared.cycles import CycleError

    pairs: dict[str, str] = {}
    for value in values:
        match = _LANG_PREFIX.fullmatch(value)
        if match is None:
            raise CycleError(f"{option} takes LANG=VALUE (sw=...), not {value[:30]!r}")
        if match.group("lang") in pairs:
            raise CycleError(f"{option} gives language {match.group('lang')} twice")
        pairs[match.group("lang")] = match.group("value")
    return pairs


def _urls(values: tuple[str, ...]) -> str | dict[str, str] | None:
    """One URL for everyone, or LANG=URL per language; not both."""
    from shared.cycles import CycleError

    if not values:
        return None
    if len(values) == 1 and _LANG_PREFIX.fullmatch(values[0]) is None:
        return values[0]
    if any(_LANG_PREFIX.fullmatch(value) is None for value in values):
        raise CycleError(f"{VOICE_AUDIO_URL}: give one URL for everyone, or LANG=URL for each language")
    return _pairs(values, VOICE_AUDIO_URL)
