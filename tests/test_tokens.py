"""Webhook and operator tokens: compared in constant time, several valid at once, rotated without downtime.

Settings are read when the app is built, so a changed token list takes effect when the receiver restarts
(granian: `kill -HUP <main process>` replaces the workers one by one). Rotation is: add the new token next to
the old one, restart, move every client (AT's callback URLs, operator scripts) to the new one, remove the
old one, restart. These tests play that out with one app per step.
"""

from __future__ import annotations

import hmac
from typing import Any

import pytest

from simulator import wire
from tests.conftest import API_TOKEN, SECOND_API_TOKEN

OLD, NEW = "hook-old-5a1f93e0c7d2b8a4f6e1", "hook-new-b24d6e8f1a3c9e7b5d02"
CUSTOMER = "+254711000001"


def post_dlr(client: Any, token: str) -> int:
    body = wire.dlr("ATXid_" + "a" * 32, "Success", CUSTOMER)
    return client.post(f"/dlr?token={token}", data=body).status_code


def list_contacts(client: Any, token: str) -> int:
    return client.get("/api/contacts", headers={"Authorization": f"Bearer {token}"}).status_code


def test_webhook_token_rotation_without_a_refused_callback(make_app) -> None:
    before = make_app(webhook_token=OLD).test_client()
    during = make_app(webhook_token=f"{NEW}, {OLD}").test_client()
    after = make_app(webhook_token=NEW).test_client()
    assert (post_dlr(before, OLD), post_dlr(before, NEW)) == (200, 403)
    assert (post_dlr(during, OLD), post_dlr(during, NEW)) == (200, 200)  # AT's retries with the old URL pass
    assert (post_dlr(after, OLD), post_dlr(after, NEW)) == (403, 200)
    assert post_dlr(during, f"{NEW},{OLD}") == 403  # the setting's raw value is not itself a token
    assert post_dlr(during, "") == 403


def test_operator_token_rotation_without_a_refused_call(make_app) -> None:
    before = make_app(api_token=API_TOKEN).test_client()
    during = make_app(api_token=f"{API_TOKEN},{SECOND_API_TOKEN}").test_client()
    after = make_app(api_token=SECOND_API_TOKEN).test_client()
    assert (list_contacts(before, API_TOKEN), list_contacts(before, SECOND_API_TOKEN)) == (200, 401)
    assert (list_contacts(during, API_TOKEN), list_contacts(during, SECOND_API_TOKEN)) == (200, 200)
    assert (list_contacts(after, API_TOKEN), list_contacts(after, SECOND_API_TOKEN)) == (401, 200)


def test_the_first_webhook_token_is_the_one_handed_out(settings) -> None:
    rotating = settings.model_copy(update={"webhook_token": type(settings.webhook_token)(f"{NEW},{OLD}")})
    assert rotating.webhook_tokens == [NEW, OLD]


@pytest.fixture
def comparisons(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Any]]:
    """Every call to `hmac.compare_digest` while the test runs, with its arguments."""
    seen: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    return seen


@pytest.mark.parametrize("given", [API_TOKEN, SECOND_API_TOKEN, "wrong", "ünïcode-token"])
def test_operator_tokens_are_compared_in_constant_time_against_every_token(make_app, comparisons, given) -> None:
    client = make_app(api_token=f"{API_TOKEN},{SECOND_API_TOKEN}").test_client()
    expected = 200 if given in (API_TOKEN, SECOND_API_TOKEN) else 401
    assert list_contacts(client, given) == expected
    # Both tokens, as bytes, whichever matched: no early exit that would time which one did.
    assert [b for _, b in comparisons] == [API_TOKEN.encode(), SECOND_API_TOKEN.encode()]
    assert all(isinstance(a, bytes) and isinstance(b, bytes) for a, b in comparisons)


def test_webhook_tokens_are_compared_in_constant_time(make_app, comparisons) -> None:
    client = make_app(webhook_token=f"{NEW},{OLD}").test_client()
    assert post_dlr(client, "guess") == 403
    # Every check (the fast path's, then the view's: web/fastpath.py) compares against every token.
    rounds = [comparisons[i : i + 2] for i in range(0, len(comparisons), 2)]
    assert rounds and all(check == [(b"guess", NEW.encode()), (b"guess", OLD.encode())] for check in rounds)
