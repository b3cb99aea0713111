"""Logging set-up for every process, with secrets scrubbed from every line (tracebacks included)."""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import TextIO
from urllib.parse import unquote, urlsplit

from shared.settings import get_settings

# Passwords in URLs (`redis://:secret@host`, `postgresql://user:secret@host`) and token query parameters.
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@", re.IGNORECASE)
_TOKEN_PARAM = re.compile(r"(?P<key>[?&](?:token|apiKey|api_key)=)[^&\s]+", re.IGNORECASE)


def redact(text: str, secrets: list[str]) -> str:
    # Longest first: a secret that contains another must not leave its tail behind.
    return _redact_longest_first(text, sorted(secrets, key=len, reverse=True))


def _redact_longest_first(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    # Each pattern needs its punctuation; most lines have neither, and the patterns cost more than the look
    # (the receiver writes a line per callback).
    if "://" in text:
        text = _URL_PASSWORD.sub(r"\g<scheme>***@", text)
    if "=" in text:
        text = _TOKEN_PARAM.sub(r"\g<key>***", text)
    return text


def _worth_redacting(secrets: list[str]) -> list[str]:
    # A secret of a character or three would star out ordinary words; such settings are refused anyway.
    # Sorted longest first once, for `_redact_longest_first`.
    return sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True)


class RedactingFormatter(logging.Formatter):
    """Formats as usual, then replaces configured secrets and URL passwords with `***`."""

    def __init__(self, fmt: str, secrets: list[str]) -> None:
        super().__init__(fmt)
        self.secrets = _worth_redacting(secrets)
        self._second: tuple[int, str] = (-1, "")  # the last second's date and time, as formatted

    def format(self, record: logging.LogRecord) -> str:
        return _redact_longest_first(super().format(record), self.secrets)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """`logging.Formatter.formatTime`, its date and time formatted once a second (a line per callback)."""
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second, text = self._second
        if int(record.created) != second:
            text = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = (int(record.created), text)  # one assignment: handlers may share the formatter
        return self.default_msec_format % (text, record.msecs) if self.default_msec_format else text


class RedactedOutput(logging.Formatter):
    """Another formatter's lines with secrets and URL passwords replaced by `***`: for handlers Reach does not
    set up itself."""

    def __init__(self, inner: logging.Formatter, secrets: list[str]) -> None:
        super().__init__()
        self.inner = inner
        self.secrets = _worth_redacting(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return _redact_longest_first(self.inner.format(record), self.secrets)


def redact_handlers(logger: logging.Logger, secrets: list[str]) -> None:
    """Scrub secrets from every line `logger`'s own handlers write, keeping the format each has."""
    for handler in logger.handlers:
        if not isinstance(handler.formatter, RedactedOutput):
            handler.setFormatter(RedactedOutput(handler.formatter or logging.Formatter(), secrets))


def configured_secrets() -> list[str]:
    settings = get_settings()
    return [
        settings.at_api_key.get_secret_value(),
        *settings.webhook_tokens,
        settings.metrics_token.get_secret_value(),
        *settings.api_tokens,
        # Also outside a URL (a DSN in key=value form, an error that quotes it).
        *url_passwords(settings.database_url),
        *url_passwords(settings.redis_url),
    ]


def url_passwords(url: str) -> list[str]:
    """A URL's password as written and percent-decoded (either may end up in a message)."""
    try:
        password = urlsplit(url).password or ""
    except ValueError:
        return []
    return [password, unquote(password)] if password else []


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def redacting_handler(stream: TextIO, secrets: list[str]) -> logging.Handler:
    """The handler every Reach process logs through: Reach's format, secrets scrubbed."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter(LOG_FORMAT, secrets))
    return handler


def configure_logging(level: str = "INFO") -> None:
    root = logging.getLogger()
    root.handlers[:] = [redacting_handler(sys.stderr, configured_secrets())]
    root.setLevel(level)
