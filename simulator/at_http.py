"""AT's HTTP conventions, shared by the SMS and voice surfaces: answers, request fields, the key check.

AT answers with `Content-Type: application/json` exactly (the SDK returns a str for anything else,
at-api.md §1.5) and writes its own errors as akka-http's plain texts (§2.2).
"""

from __future__ import annotations

import hmac
import json
import re
from typing import Any

from flask import Response, request

from simulator.state import current_state

AUTH_FAILED = "The supplied authentication is invalid"
#: The number check the SDK makes (at-api.md §1.5); AT refuses what fails it as InvalidPhoneNumber.
E164 = re.compile(r"^\+\d{1,3}\d{3,}$")


def json_answer(status: int, body: dict[str, Any]) -> Response:
    resp = Response(json.dumps(body, separators=(",", ":")), status=status)
    # Exactly this, no charset: the SDK returns res.json() only for this exact header (at-api.md §1.5).
    resp.headers["Content-Type"] = "application/json"
    return resp


def text_answer(status: int, text: str, content_type: str = "text/plain; charset=UTF-8") -> Response:
    resp = Response(text, status=status)
    resp.headers["Content-Type"] = content_type
    return resp


def fields() -> dict[str, Any]:
    """The request's fields: form-encoded as AT documents, or JSON (which /call also accepts)."""
    if request.is_json:
        body = request.get_json(silent=True)
        return body if isinstance(body, dict) else {}
    return request.form.to_dict()


def numbers(to: object) -> list[str]:
    """The `to` field as a list of numbers: comma-separated text, or a JSON list."""
    items = to if isinstance(to, list) else str(to).split(",")
    return [str(n).strip() for n in items if str(n).strip()]


def check(given: dict[str, Any], required: tuple[str, ...]) -> Response | None:
    """AT's answers to a bad key or a missing field, or None when the request may proceed."""
    state = current_state()
    key = request.headers.get("apiKey", "")  # werkzeug reads header names case-insensitively
    key_ok = hmac.compare_digest(key.encode(), state.api_key.encode())
    if not key_ok or given.get("username", state.username) != state.username:
        resp = text_answer(401, AUTH_FAILED)
        resp.headers["WWW-Authenticate"] = 'Basic realm="api",charset=UTF-8'
        return resp
    for name in required:
        if not given.get(name):
            return text_answer(400, f"Request is missing required form field '{name}'")
    return None
