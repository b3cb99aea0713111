"""The dashboard's session cookie over HTTPS and over plain HTTP (issue 13), through the Flask test client:
`Secure` or not by DASHBOARD_COOKIE_SECURE (auto: as the browser reached the receiver), and the page that says
why a sign-in did not stick when the browser comes back without the cookie it was just given.

What a real browser does with these headers (keeps the cookie, or drops it and reads the explanation) is in
tests/test_dashboard_browser.py.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import API_TOKEN

COOKIE = "reach_dashboard"
PLAIN = "http://reach.lan:8000"
TLS = "https://reach.example"
DROPPED = "Your browser did not keep the sign-in cookie"


def sign_in(client: Any, base: str = PLAIN, headers: dict[str, str] | None = None) -> Any:
    """Post the form as a browser on `base` does (its Origin is the page's own)."""
    return client.post(
        "/dashboard/login", data={"token": API_TOKEN}, base_url=base, headers={"Origin": base, **(headers or {})}
    )


def session_cookie(response: Any) -> str:
    (cookie,) = [c for c in response.headers.getlist("Set-Cookie") if c.startswith(f"{COOKIE}=")]
    return cookie


def is_secure(cookie: str) -> bool:
    return "secure" in [attribute.strip().lower() for attribute in cookie.split(";")]


# -- Secure or not ------------------------------------------------------------------------------------------------

WHEN_SECURE = {
    # (settings, the address the browser used, extra headers): Secure?
    "auto, plain HTTP on a LAN address": ({}, PLAIN, {}, False),
    "auto, HTTPS": ({}, TLS, {}, True),
    "auto, a trusted proxy says https": ({"trusted_proxies": 1}, PLAIN, {"X-Forwarded-Proto": "https"}, True),
    "auto, anyone else's X-Forwarded-Proto is ignored": ({}, PLAIN, {"X-Forwarded-Proto": "https"}, False),
    # TLS ends at a proxy TRUSTED_PROXIES does not declare: the browser's own Origin still says https.
    "auto, the browser's page was https": ({}, PLAIN, {"Origin": "https://reach.lan:8000"}, True),
    "forced true over plain HTTP": ({"dashboard_cookie_secure": True}, PLAIN, {}, True),
    "forced false over HTTPS": ({"dashboard_cookie_secure": False}, TLS, {}, False),
}


@pytest.mark.parametrize(("settings", "base", "headers", "secure"), WHEN_SECURE.values(), ids=WHEN_SECURE.keys())
def test_the_cookie_is_secure_when_the_browser_came_over_https_or_the_setting_says(
    make_app: Any, settings: dict[str, Any], base: str, headers: dict[str, str], secure: bool
) -> None:
    response = sign_in(make_app(**settings).test_client(), base, headers)
    assert response.status_code == 303
    cookie = session_cookie(response)
    assert is_secure(cookie) is secure, cookie
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/dashboard" in cookie


# -- a sign-in that did not stick ----------------------------------------------------------------------------------


def test_a_sign_in_lands_on_the_dashboard_at_a_clean_address(client: Any) -> None:
    landing = sign_in(client).headers["Location"]
    assert urlsplit(landing).path == "/dashboard" and urlsplit(landing).query  # the one-time marker
    cleaned = client.get(landing, base_url=PLAIN)
    assert cleaned.status_code == 303 and cleaned.headers["Location"] == "/dashboard"
    assert client.get("/dashboard", base_url=PLAIN).status_code == 200


@pytest.mark.parametrize("store", ["redis", "embedded"])
def test_coming_back_without_the_cookie_says_why_once(make_app: Any, store: str) -> None:
    """DASHBOARD_COOKIE_SECURE=true over plain HTTP: the browser drops the cookie and comes back without it. The
    marker is kept where sessions are: Redis, or the database's kv_entries without it."""
    app = make_app(dashboard_cookie_secure=True, **({"redis_url": ""} if store == "embedded" else {}))
    landing = sign_in(app.test_client()).headers["Location"]
    dropped = app.test_client()  # the same browser, without the cookie it refused

    page = dropped.get(landing, base_url=PLAIN)
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    assert f"{DROPPED}: this address is plain HTTP and DASHBOARD_COOKIE_SECURE=true requires HTTPS" in text
    assert 'action="/dashboard/login"' in text  # the form, to try again
    again = dropped.get(landing, base_url=PLAIN)  # the marker is used up: a reload is an ordinary visit
    assert again.status_code == 303 and again.headers["Location"].endswith("/dashboard/login")


def test_a_cookie_refused_for_another_reason_is_explained_without_blaming_the_setting(make_app: Any) -> None:
    app = make_app()
    landing = sign_in(app.test_client()).headers["Location"]
    text = app.test_client().get(landing, base_url=PLAIN).get_data(as_text=True)
    assert DROPPED in text and "allow cookies" in text.lower()
    assert "DASHBOARD_COOKIE_SECURE" not in text


@pytest.mark.parametrize("marker", ["made-up", "", "x" * 500])
def test_a_made_up_marker_is_an_ordinary_visit(client: Any, marker: str) -> None:
    sign_in(client)  # a real marker exists; these are not it
    response = client.application.test_client().get(f"/dashboard?signed_in={marker}", base_url=PLAIN)
    assert response.status_code == 303 and response.headers["Location"].endswith("/dashboard/login")
