"""Callback and operator credentials, compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from flask import request

from web.errors import ApiError
from web.services import services


def matches_any(given: str, expected: list[str]) -> bool:
    # Compare against every token (no early exit), so timing says nothing about which one matched.
    found = False
    for token in expected:
        found |= hmac.compare_digest(given.encode(), token.encode())
    return found


def is_operator_token(given: str) -> bool:
    """One of API_TOKEN (the dashboard's sign-in form checks this; the API checks the bearer header)."""
    tokens = services().settings.api_tokens
    return bool(tokens) and matches_any(given, tokens)


def has_webhook_token() -> bool:
    """The request carries `?token=` with one of WEBHOOK_TOKEN; never true while none is set."""
    expected = services().settings.webhook_tokens
    return bool(expected) and matches_any(request.args.get("token", ""), expected)


def passes_webhook_check() -> bool:
    """What `require_webhook_token` lets through: the right `?token=`, or anyone while WEBHOOK_TOKEN is unset."""
    return not services().settings.webhook_tokens or has_webhook_token()


def require_webhook_token() -> None:
    """AT callbacks carry `?token=` (one of WEBHOOK_TOKEN) when it is set (design §4); otherwise 403."""
    if not passes_webhook_check():
        raise ApiError(403, "forbidden: missing or wrong token")


def has_operator_token() -> bool:
    """The request carries `Authorization: Bearer <one of API_TOKEN>`; never true while none is set."""
    return bearer_matches(request.headers.get("Authorization", ""), services().settings.api_tokens)


def bearer_matches(authorization: str, tokens: Sequence[str]) -> bool:
    """An `Authorization` header's value is `Bearer <one of tokens>` (never true for no tokens). Also read by the
    async front before a body is (web/front.py)."""
    scheme, _, given = authorization.partition(" ")
    return bool(tokens) and scheme.lower() == "bearer" and matches_any(given.strip(), tokens)


def require_operator() -> None:
    """Operator API: `Authorization: Bearer <one of API_TOKEN>`; with no API_TOKEN set, nobody gets in."""
    if not services().settings.api_tokens:
        raise ApiError(401, "operator API disabled: set API_TOKEN")
    if not has_operator_token():
        raise ApiError(401, "missing or wrong bearer token")


def require_metrics_reader() -> None:
    """`/metrics`: `Authorization: Bearer <METRICS_TOKEN>`; unset, only METRICS_PUBLIC=true opens it."""
    settings = services().settings
    expected = settings.metrics_token.get_secret_value()
    if not expected:
        if settings.metrics_public:
            return
        raise ApiError(401, "metrics disabled: set METRICS_TOKEN (or METRICS_PUBLIC=true on a private network)")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not matches_any(given.strip(), [expected]):
        raise ApiError(401, "missing or wrong bearer token")
