"""Posting one alert to ALERT_WEBHOOK_URL: a JSON POST, a short timeout, and a URL never logged whole."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import requests

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = (3.0, 10.0)


class WebhookFailed(Exception):
    """The webhook did not take the alert (a connection error or a non-2xx answer): worth retrying."""


def safe_url(url: str) -> str:
    """The URL without its query string, user and password: what may be logged (it may carry a secret)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def post(url: str, payload: dict[str, Any]) -> None:
    """POST the alert as JSON; `WebhookFailed` if it was not taken."""
    try:
        response = requests.post(url, json=payload, timeout=TIMEOUT_SECONDS, allow_redirects=False)
    except requests.RequestException as exc:
        raise WebhookFailed(f"alert webhook {safe_url(url)} unreachable: {exc.__class__.__name__}") from None
    if not 200 <= response.status_code < 300:
        raise WebhookFailed(f"alert webhook {safe_url(url)} answered {response.status_code}")
    log.info("alert %s posted to %s", payload.get("kind"), safe_url(url))
