"""Logging set-up for every process, with secrets scrubbed from every line (tracebacks included)."""

from __future__ import annotations

import logging
import re
import sys

from shared.settings import get_settings

# Passwords in URLs (`redis://:secret@host`, `postgresql://user:secret@host`) and token query parameters.
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@", re.IGNORECASE)
_TOKEN_PARAM = re.compile(r"(?P<key>[?&](?:token|apiKey|api_key)=)[^&\s]+", re.IGNORECASE)


def redact(text: str, secrets: list[str]) -> str:
    # Longest first: a secret that contains another must not leave its tail behind.
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    text = _URL_PASSWORD.sub(r"\g<scheme>***@", text)
    return _TOKEN_PARAM.sub(r"\g<key>***", text)


class RedactingFormatter(logging.Formatter):
    """Formats as usual, then replaces configured secrets and URL passwords with `***`."""

    def __init__(self, fmt: str, secrets: list[str]) -> None:
        super().__init__(fmt)
        self.secrets = [s for s in secrets if len(s) >= 4]

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), self.secrets)


def configured_secrets() -> list[str]:
    settings = get_settings()
    return [
        settings.at_api_key.get_secret_value(),
        settings.webhook_token.get_secret_value(),
        settings.metrics_token.get_secret_value(),
        *settings.api_tokens,
    ]


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", configured_secrets()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
