"""AT's account: the balance, from `GET {SMS base}/user?username=...` (at-api.md §1.3, the SDK's
`Application` service). One small request for `reach doctor`; it proves the credentials at the same time."""

from __future__ import annotations

from typing import Any

import requests

from shared.at_client import AtError, AtRejected, AtTransient
from shared.settings import Settings


def fetch_balance(settings: Settings) -> str:
    """The account's balance as AT writes it (`KES 1234.50`); AtRejected for refused credentials (401),
    AtTransient when AT cannot be asked or answers something else."""
    url = f"{settings.sms_base_url.rstrip('/')}/user"
    headers = {"apiKey": settings.at_api_key.get_secret_value(), "Accept": "application/json"}
    timeout = (settings.at_timeout_connect, settings.at_timeout_read)
    try:
        response = requests.get(url, params={"username": settings.at_username}, headers=headers, timeout=timeout)
    except requests.RequestException as exc:
        raise AtTransient(f"AT unreachable at {settings.sms_base_url}: {exc.__class__.__name__}") from None
    if response.status_code == 401:
        raise AtRejected("AT refused the credentials (AT_USERNAME, AT_API_KEY)", 401)
    if response.status_code != 200:
        raise AtTransient(f"AT answered {response.status_code} to the balance request", response.status_code)
    return _balance(response)


def _balance(response: requests.Response) -> str:
    try:
        doc: Any = response.json()
        return str(doc["UserData"]["balance"])
    except (ValueError, KeyError, TypeError):
        raise AtError("AT's balance answer is not the JSON it documents") from None
