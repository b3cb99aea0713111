"""Request rate limits on the callback and operator endpoints, counted in the real (private) Redis.

Callbacks that carry the webhook token (AT, or us) are never refused for rate: a 429 may be a delivery
report lost for good. Callbacks without it (strangers) share one bucket per client address across every
callback endpoint. Without a WEBHOOK_TOKEN nobody can prove being AT, and every callback keeps
RATE_LIMIT_CALLBACKS.

Limits here are per hour, so a test never straddles a window edge; production defaults are in
shared/settings.py and justified in the README's Security section.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from prometheus_client import REGISTRY

from shared.inbox import INBOX
from shared.settings import Settings, SettingsError, load_settings
from simulator import wire
from tests.conftest import API_TOKEN, AT_VOICE_NUMBER, SECOND_API_TOKEN, WEBHOOK_TOKEN
from web.limits import storage_uri

CUSTOMER = "+254711000001"
FORM = "application/x-www-form-urlencoded"

#: A valid body for each callback endpoint (the `/communicate` one is its voice form).
BODIES = {
    "/dlr": wire.dlr("ATXid_1", "Success", CUSTOMER),
    "/receiveSMS": wire.incoming_sms(CUSTOMER, "21512", "STOP", "in-1"),
    "/ussd": wire.ussd("ATUid_1", CUSTOMER, ""),
    "/voice": wire.voice_final_answered("ATVId_1", CUSTOMER, AT_VOICE_NUMBER),
    "/communicate": wire.voice_final_answered("ATVId_2", CUSTOMER, AT_VOICE_NUMBER),
}
CALLBACKS = list(BODIES)


def dlr(client, n: int, address: str = "127.0.0.1", *, as_json: bool = False, token: str | None = WEBHOOK_TOKEN):
    """A delivery report: a form goes through the receiver's fast path, JSON through Flask."""
    body = wire.dlr(f"ATXid_{n:032x}", "Success", CUSTOMER)
    url = "/dlr" if token is None else f"/dlr?token={token}"
    encoded = {"json": body} if as_json else {"data": body}
    return client.post(url, **encoded, environ_base={"REMOTE_ADDR": address})


def stranger(client, path: str = "/dlr", address: str = "127.0.0.1", *, token: str | None = "not-the-token", **kw):
    """A callback without the webhook token (a wrong one, or none): someone who is not AT."""
    url = path if token is None else f"{path}?token={token}"
    return client.post(url, data=BODIES[path], environ_base={"REMOTE_ADDR": address}, **kw)


# -- callbacks carrying the token ---------------------------------------------------------------------------


@pytest.mark.parametrize("as_json", [False, True], ids=["form (fast path)", "JSON (Flask)"])
def test_a_burst_of_callbacks_with_the_token_is_never_refused(make_app, redis_client, as_json: bool) -> None:
    """AT's reports are never 429'd: a 429 may be a report lost for good (AT's retries are undocumented)."""
    client = make_app(rate_limit_callbacks="20/hour", rate_limit_unauthenticated="20/hour").test_client()
    codes = [dlr(client, n, as_json=as_json).status_code for n in range(200)]
    assert codes == [200] * 200
    queued = {raw for raw in redis_client.lrange(INBOX, 0, -1)}
    assert len(queued) == 200  # every one reached the inbox


@pytest.mark.parametrize("path", CALLBACKS)
def test_no_callback_endpoint_limits_a_caller_with_the_token(make_app, path: str) -> None:
    client = make_app(rate_limit_callbacks="2/hour", rate_limit_unauthenticated="2/hour").test_client()
    codes = {client.post(f"{path}?token={WEBHOOK_TOKEN}", data=BODIES[path]).status_code for _ in range(10)}
    assert codes == {200}
    # Bad bodies too: the token holder is AT or us, and the body cap bounds each one.
    assert 429 not in {client.post(f"{path}?token={WEBHOOK_TOKEN}", data={}).status_code for _ in range(5)}


# -- callbacks without it -----------------------------------------------------------------------------------


@pytest.mark.parametrize("token", ["not-the-token", None], ids=["wrong token", "no token"])
@pytest.mark.parametrize("path", CALLBACKS)
def test_strangers_get_403_then_429_from_their_own_bucket(make_app, redis_client, path: str, token) -> None:
    client = make_app(rate_limit_unauthenticated="3/hour", rate_limit_callbacks="1000/hour").test_client()
    answers = [stranger(client, path, token=token) for _ in range(4)]
    # /communicate without any credential cannot tell a voice callback from a send before its body: 401.
    refused = 401 if path == "/communicate" and token is None else 403
    assert [a.status_code for a in answers] == [refused] * 3 + [429]
    refused = answers[-1]
    assert refused.is_json and "too many requests" in refused.json["error"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 2 * 3600
    assert redis_client.llen(INBOX) == 0
    assert list(redis_client.scan_iter("reach:limits*"))  # counted in Redis, not in this process


def test_one_stranger_bucket_covers_every_callback_endpoint(make_app) -> None:
    """Five endpoints do not give a stranger five budgets."""
    client = make_app(rate_limit_unauthenticated="5/hour").test_client()
    assert [stranger(client, path).status_code for path in CALLBACKS] == [403] * 5
    assert [stranger(client, path).status_code for path in CALLBACKS] == [429] * 5


@pytest.mark.parametrize("as_json", [False, True], ids=["form (fast path)", "JSON (Flask)"])
def test_at_is_answered_while_a_stranger_at_the_same_address_is_refused(make_app, redis_client, as_json) -> None:
    """A stranger cannot push AT's reports into 429 by sharing its address (a NAT, a proxy, a spoof)."""
    client = make_app(rate_limit_unauthenticated="3/hour", rate_limit_callbacks="3/hour").test_client()
    address = "196.201.214.200"
    assert [stranger(client, address=address).status_code for _ in range(5)] == [403, 403, 403, 429, 429]
    codes = []
    for n in range(20):
        codes.append(dlr(client, n, address, as_json=as_json).status_code)
        assert stranger(client, address=address).status_code == 429  # still refused, in between
    assert codes == [200] * 20
    assert redis_client.llen(INBOX) == 20


def test_each_client_address_has_its_own_stranger_bucket(make_app) -> None:
    client = make_app(rate_limit_unauthenticated="3/hour").test_client()
    assert [stranger(client, address="10.1.1.1").status_code for _ in range(4)] == [403, 403, 403, 429]
    assert stranger(client, address="10.2.2.2").status_code == 403


def forwarded_stranger(client, forwarded_for: str):
    headers = {"X-Forwarded-For": forwarded_for}
    return stranger(client, address="10.0.0.1", headers=headers)


def test_behind_a_trusted_proxy_each_client_keeps_its_own_budget(make_app) -> None:
    client = make_app(rate_limit_unauthenticated="2/hour", trusted_proxies=1).test_client()
    assert [forwarded_stranger(client, "41.90.1.1").status_code for _ in range(3)] == [403, 403, 429]
    assert forwarded_stranger(client, "41.90.2.2").status_code == 403  # same proxy, another client


def test_without_trusted_proxies_a_forwarded_address_changes_nothing(make_app) -> None:
    """A client cannot escape its budget by writing its own X-Forwarded-For."""
    client = make_app(rate_limit_unauthenticated="2/hour").test_client()
    codes = [forwarded_stranger(client, f"41.90.3.{n}").status_code for n in range(3)]
    assert codes == [403, 403, 429]


def test_only_the_configured_hops_are_believed(make_app) -> None:
    client = make_app(rate_limit_unauthenticated="2/hour", trusted_proxies=1).test_client()
    # The client prepends made-up addresses; the proxy appends the one it saw, which alone counts.
    codes = [forwarded_stranger(client, f"1.2.3.{n}, 41.90.4.4").status_code for n in range(3)]
    assert codes == [403, 403, 429]


def test_the_count_is_shared_by_every_receiver_process(make_app) -> None:
    """Two apps (two receiver processes) on one Redis: one budget, not one each."""
    first = make_app(rate_limit_unauthenticated="4/hour").test_client()
    second = make_app(rate_limit_unauthenticated="4/hour").test_client()
    codes = [stranger(first if n % 2 else second).status_code for n in range(5)]
    assert codes == [403, 403, 403, 403, 429]


def unauthenticated_count(kind: str) -> float:
    return sum(
        REGISTRY.get_sample_value("reach_unauthenticated_callbacks_total", {"kind": kind, "outcome": outcome}) or 0
        for outcome in ("forbidden", "limited")
    )


def test_strangers_are_counted_each_and_logged_at_most_once_a_period(make_app, caplog) -> None:
    """An attacker must not flood the log: one WARNING line per period per process, and no line of its own
    per refused request (Flask-Limiter logs each 429); the metric counts every one."""
    from web.callers import STRANGER_LOG_SECONDS

    client = make_app(rate_limit_unauthenticated="10/hour").test_client()
    before = unauthenticated_count("dlr")
    caplog.set_level(logging.INFO)
    started = time.monotonic()
    codes = [stranger(client, address="41.90.9.9").status_code for _ in range(60)]
    elapsed = time.monotonic() - started
    assert codes == [403] * 10 + [429] * 50
    assert unauthenticated_count("dlr") - before == 60
    lines = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert all(r.levelno == logging.WARNING and r.name == "web.callers" for r in lines), lines
    assert 1 <= len(lines) <= 1 + elapsed // STRANGER_LOG_SECONDS
    assert "41.90.9.9" in lines[0].getMessage() and "/dlr" in lines[0].getMessage()


def test_the_stranger_log_says_how_many_lines_it_held_back() -> None:
    from web.callers import ThrottledLog

    now = [100.0]
    log = ThrottledLog(logging.getLogger("test.throttled"), period=10, clock=lambda: now[0])
    said = [log.warning("stranger %s", n) for n in range(5)]
    now[0] += 10
    said.append(log.warning("stranger %s", 5))
    assert said == [0, None, None, None, None, 4]  # the lines written carry how many were held back before them


# -- without a webhook token --------------------------------------------------------------------------------


def test_without_a_webhook_token_every_callback_keeps_the_callback_limit(make_app, redis_client) -> None:
    """Nobody can prove being AT, so nobody is let past RATE_LIMIT_CALLBACKS (fast path and Flask alike)."""
    client = make_app(webhook_token="", rate_limit_callbacks="20/hour").test_client()
    codes = [dlr(client, n, token=None, as_json=n % 2 == 1).status_code for n in range(20)]
    assert codes == [200] * 20
    for as_json in (False, True):
        refused = dlr(client, 20, token=None, as_json=as_json)
        assert refused.status_code == 429
        assert refused.is_json and "too many requests" in refused.json["error"]
        assert 1 <= int(refused.headers["Retry-After"]) <= 2 * 3600
    assert redis_client.llen(INBOX) == 20  # the refused ones were never queued


def test_without_a_webhook_token_the_default_lets_an_at_sized_burst_through(make_app) -> None:
    """Default RATE_LIMIT_CALLBACKS: 400 callbacks in well under a second from one address all pass."""
    default = Settings.model_fields["rate_limit_callbacks"].default
    client = make_app(webhook_token="", rate_limit_callbacks=default).test_client()
    assert {dlr(client, n, token=None).status_code for n in range(400)} == {200}


def test_rate_limit_callbacks_with_a_webhook_token_says_it_does_not_apply(make_app, caplog) -> None:
    make_app(rate_limit_callbacks="50/second")
    assert "RATE_LIMIT_CALLBACKS applies only while WEBHOOK_TOKEN is unset" in caplog.text


# -- the operator API ---------------------------------------------------------------------------------------


def test_operator_api_limit_counts_strangers_too(make_app) -> None:
    client = make_app(rate_limit_operator="3/hour").test_client()
    assert client.get("/api/contacts").status_code == 401  # no token: refused, and counted
    for token in (API_TOKEN, SECOND_API_TOKEN):
        assert client.get("/api/contacts", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    refused = client.get("/api/contacts", headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert refused.status_code == 429 and refused.is_json and int(refused.headers["Retry-After"]) >= 1


def test_operator_sends_through_communicate_keep_the_operator_limit(make_app) -> None:
    client = make_app(rate_limit_operator="2/hour", rate_limit_unauthenticated="100/hour").test_client()
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    bad_number = {"to": "not-a-number", "message": "hi"}  # a 400 after the token check: nothing is sent
    codes = [client.post("/communicate", json=bad_number, headers=auth).status_code for _ in range(3)]
    assert codes == [400, 400, 429]


def test_operator_and_stranger_budgets_are_separate(make_app) -> None:
    client = make_app(rate_limit_operator="1/hour", rate_limit_unauthenticated="1/hour").test_client()
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    assert client.get("/api/contacts", headers=auth).status_code == 200
    assert stranger(client).status_code == 403
    assert client.get("/api/contacts", headers=auth).status_code == 429
    assert stranger(client).status_code == 429


def test_health_checks_are_never_limited(make_app) -> None:
    client = make_app(rate_limit_unauthenticated="1/hour", rate_limit_operator="1/hour").test_client()
    assert {client.get("/healthz").status_code for _ in range(5)} == {200}


# -- settings -----------------------------------------------------------------------------------------------

LIMIT_SETTINGS = ["rate_limit_callbacks", "rate_limit_unauthenticated", "rate_limit_operator"]


@pytest.mark.parametrize("name", LIMIT_SETTINGS)
@pytest.mark.parametrize("value", ["", "fast", "0/second", "10 per fortnight"])
def test_bad_limits_are_refused_at_start_up(name: str, value: str) -> None:
    overrides: dict[str, Any] = {name: value}
    with pytest.raises(SettingsError, match=f"{name.upper()}: not a rate limit"):
        load_settings(**overrides)


def test_storage_follows_redis_url() -> None:
    assert storage_uri("redis://:pw@127.0.0.1:6379/0") == "redis://:pw@127.0.0.1:6379/0"
    assert storage_uri("unix:///run/redis.sock") == "redis+unix:///run/redis.sock"
    assert storage_uri("") == "memory://"  # embedded mode: no Redis to share a count in
