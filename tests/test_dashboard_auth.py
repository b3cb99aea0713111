"""The dashboard's sign-in against an attacker (issue 12): a session ends when its operator signs out (it is
kept server-side, in Redis or in the embedded store), a form posted from another site is refused, and
sign-in attempts are limited per client address, counted in Redis so every receiver process shares them.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import API_TOKEN, SECOND_API_TOKEN
from tests.services import free_port

COOKIE = "reach_dashboard"
#: The Flask test client's own origin (its requests go to Host: localhost).
ORIGIN = "http://localhost"
SAME_ORIGIN = {"Origin": ORIGIN}


def sign_in(client: Any, token: str, address: str = "127.0.0.1", headers: dict[str, str] | None = None) -> Any:
    return client.post(
        "/dashboard/login",
        data={"token": token},
        headers=SAME_ORIGIN if headers is None else headers,
        environ_base={"REMOTE_ADDR": address},
    )


def sign_out(client: Any, headers: dict[str, str] | None = None) -> Any:
    return client.post("/dashboard/logout", headers=SAME_ORIGIN if headers is None else headers)


def with_cookie(app: Any, value: str) -> Any:
    """A fresh client (another browser, or an attacker) presenting this session cookie."""
    client = app.test_client()
    client.set_cookie(COOKIE, value, path="/dashboard")
    return client


# -- sessions end at sign-out ----------------------------------------------------------------------------------


@pytest.fixture(params=["redis", "embedded"])
def make_receiver(request: pytest.FixtureRequest, make_app: Any) -> Any:
    """Receiver apps keeping sessions in Redis, or (no REDIS_URL) in the database's kv_entries."""
    overrides = {} if request.param == "redis" else {"redis_url": ""}
    return lambda **more: make_app(**overrides, **more)


def test_a_cookie_replayed_after_sign_out_is_refused(make_receiver: Any) -> None:
    first, second = make_receiver(), make_receiver()  # two receiver processes, one store
    browser = first.test_client()
    assert sign_in(browser, API_TOKEN).status_code == 303
    stolen = browser.get_cookie(COOKIE, path="/dashboard").value
    assert with_cookie(second, stolen).get("/dashboard").status_code == 200  # the session is shared

    assert sign_out(with_cookie(second, stolen)).status_code == 303
    assert with_cookie(first, stolen).get("/dashboard").status_code == 303
    assert with_cookie(second, stolen).get("/dashboard").status_code == 303


def test_signing_out_ends_only_that_session(make_receiver: Any) -> None:
    app = make_receiver()
    laptop, phone = app.test_client(), app.test_client()
    assert sign_in(laptop, API_TOKEN).status_code == 303
    assert sign_in(phone, API_TOKEN).status_code == 303
    sign_out(laptop)
    assert laptop.get("/dashboard").status_code == 303
    assert phone.get("/dashboard").status_code == 200


def test_a_session_from_before_a_token_was_removed_stays_refused(make_receiver: Any) -> None:
    """Removing a token from API_TOKEN still ends its sessions, with the session kept server-side."""
    browser = make_receiver().test_client()
    assert sign_in(browser, SECOND_API_TOKEN).status_code == 303
    cookie = browser.get_cookie(COOKIE, path="/dashboard").value
    assert with_cookie(make_receiver(api_token=API_TOKEN), cookie).get("/dashboard").status_code == 303


# -- cross-site posts ---------------------------------------------------------------------------------------------

CROSS_SITE = {
    "other origin": {"Origin": "https://evil.example"},
    "look-alike host": {"Origin": "http://localhost.evil.example"},
    "other port": {"Origin": "http://localhost:8080"},
    "opaque origin": {"Origin": "null"},
    "browser says cross-site": {"Sec-Fetch-Site": "cross-site", "Origin": ORIGIN},
    "browser says same-site": {"Sec-Fetch-Site": "same-site", "Origin": "https://sub.localhost"},
    "no origin, other referer": {"Referer": "https://evil.example/form.html"},
    "neither origin nor referer": {},
}


@pytest.mark.parametrize("headers", CROSS_SITE.values(), ids=CROSS_SITE.keys())
def test_a_cross_site_sign_in_is_refused(client: Any, headers: dict[str, str]) -> None:
    response = sign_in(client, API_TOKEN, headers=headers)
    assert response.status_code == 403
    assert "Set-Cookie" not in response.headers
    assert "another site" in response.get_data(as_text=True)


@pytest.mark.parametrize("headers", CROSS_SITE.values(), ids=CROSS_SITE.keys())
def test_a_cross_site_sign_out_is_refused_and_the_session_lives_on(client: Any, headers: dict[str, str]) -> None:
    assert sign_in(client, API_TOKEN).status_code == 303
    assert sign_out(client, headers=headers).status_code == 403
    assert client.get("/dashboard").status_code == 200


SAME_SITE = {
    "origin": SAME_ORIGIN,
    "origin, host in capitals": {"Origin": "http://LOCALHOST"},
    "browser says same-origin": {"Sec-Fetch-Site": "same-origin", "Origin": ORIGIN},
    # A proxy that rewrites Host: the browser's own verdict stands.
    "same-origin behind a proxy": {"Sec-Fetch-Site": "same-origin", "Origin": "https://reach.example"},
    "referer only": {"Referer": f"{ORIGIN}/dashboard/login"},
}


@pytest.mark.parametrize("headers", SAME_SITE.values(), ids=SAME_SITE.keys())
def test_a_same_origin_sign_in_passes(client: Any, headers: dict[str, str]) -> None:
    assert sign_in(client, API_TOKEN, headers=headers).status_code == 303
    assert client.get("/dashboard").status_code == 200


# -- sign-in attempts are limited per address -----------------------------------------------------------------


def test_the_next_wrong_sign_in_after_the_limit_is_429_while_another_address_signs_in(
    make_app: Any, redis_client: Any
) -> None:
    app = make_app(rate_limit_dashboard_login="3/hour")
    client = app.test_client()
    assert [sign_in(client, "wrong-token", "10.9.0.1").status_code for _ in range(3)] == [401, 401, 401]
    refused = sign_in(client, "wrong-token", "10.9.0.1")
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 2 * 3600  # a sliding window: up to two windows
    assert "Too many sign-in attempts" in refused.get_data(as_text=True)
    assert refused.mimetype == "text/html"
    # The right token waits too (or the limit would tell a guesser when it is right)...
    assert sign_in(client, API_TOKEN, "10.9.0.1").status_code == 429
    # ...on every receiver process: the count is in Redis, not in this process.
    other_process = make_app(rate_limit_dashboard_login="3/hour").test_client()
    assert sign_in(other_process, "wrong-token", "10.9.0.1").status_code == 429
    assert any(b"dashboard" in key for key in redis_client.scan_iter("reach:limits*"))
    # Another address is not held back.
    assert sign_in(client, API_TOKEN, "10.9.0.2").status_code == 303
    assert client.get("/dashboard").status_code == 200


def test_another_site_cannot_use_a_visitors_browser_to_lock_them_out(make_app: Any) -> None:
    client = make_app(rate_limit_dashboard_login="1/hour").test_client()
    forged = {"Origin": "https://evil.example"}
    assert {sign_in(client, "wrong-token", "10.9.0.3", headers=forged).status_code for _ in range(3)} == {403}
    assert sign_in(client, API_TOKEN, "10.9.0.3").status_code == 303


def test_the_sign_in_form_itself_is_not_limited(make_app: Any) -> None:
    client = make_app(rate_limit_dashboard_login="1/hour").test_client()
    assert sign_in(client, "wrong-token").status_code == 401
    assert {client.get("/dashboard/login").status_code for _ in range(3)} == {200}


def test_with_the_session_store_down_sign_in_says_so_and_sets_no_cookie(make_app: Any) -> None:
    client = make_app(redis_url=f"redis://127.0.0.1:{free_port()}/0").test_client()  # nothing listens there
    response = sign_in(client, API_TOKEN)
    assert response.status_code == 503 and "session store is unreachable" in response.get_data(as_text=True)
    assert "Set-Cookie" not in response.headers
    assert client.get("/dashboard").status_code == 303
