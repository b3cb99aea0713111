"""Request rate limits on the callback and operator endpoints, counted in the real (private) Redis.

Limits here are per hour, so a test never straddles a window edge; production defaults are in
shared/settings.py and justified in the README's Security section.
"""

from __future__ import annotations

import pytest

from shared.settings import Settings, SettingsError, load_settings
from simulator import wire
from tests.conftest import API_TOKEN, SECOND_API_TOKEN, WEBHOOK_TOKEN
from web.limits import storage_uri

CUSTOMER = "+254711000001"


def dlr(client, n: int, address: str = "127.0.0.1"):
    body = wire.dlr(f"ATXid_{n:032x}", "Success", CUSTOMER)
    return client.post(f"/dlr?token={WEBHOOK_TOKEN}", data=body, environ_base={"REMOTE_ADDR": address})


def test_a_burst_up_to_the_callback_limit_passes_and_the_next_is_refused(make_app, redis_client) -> None:
    client = make_app(rate_limit_callbacks="20/hour").test_client()
    assert [dlr(client, n).status_code for n in range(20)] == [200] * 20
    refused = dlr(client, 20)
    assert refused.status_code == 429
    assert refused.is_json and "too many requests" in refused.json["error"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 2 * 3600
    assert redis_client.llen("reach:inbox") == 20  # the refused one was never queued
    assert list(redis_client.scan_iter("reach:limits*"))  # counted in Redis, not in this process


def test_each_client_address_has_its_own_budget(make_app) -> None:
    client = make_app(rate_limit_callbacks="3/hour").test_client()
    assert [dlr(client, n, "10.1.1.1").status_code for n in range(4)] == [200, 200, 200, 429]
    assert dlr(client, 9, "10.2.2.2").status_code == 200


def forwarded_dlr(client, n: int, forwarded_for: str):
    body = wire.dlr(f"ATXid_{n:032x}", "Success", CUSTOMER)
    headers = {"X-Forwarded-For": forwarded_for}
    return client.post(
        f"/dlr?token={WEBHOOK_TOKEN}", data=body, headers=headers, environ_base={"REMOTE_ADDR": "10.0.0.1"}
    )


def test_behind_a_trusted_proxy_each_client_keeps_its_own_budget(make_app) -> None:
    client = make_app(rate_limit_callbacks="2/hour", trusted_proxies=1).test_client()
    assert [forwarded_dlr(client, n, "41.90.1.1").status_code for n in range(3)] == [200, 200, 429]
    assert forwarded_dlr(client, 5, "41.90.2.2").status_code == 200  # same proxy, another client


def test_without_trusted_proxies_a_forwarded_address_changes_nothing(make_app) -> None:
    """A client cannot escape its budget by writing its own X-Forwarded-For."""
    client = make_app(rate_limit_callbacks="2/hour").test_client()
    codes = [forwarded_dlr(client, n, f"41.90.3.{n}").status_code for n in range(3)]
    assert codes == [200, 200, 429]


def test_only_the_configured_hops_are_believed(make_app) -> None:
    client = make_app(rate_limit_callbacks="2/hour", trusted_proxies=1).test_client()
    # The client prepends made-up addresses; the proxy appends the one it saw, which alone counts.
    codes = [forwarded_dlr(client, n, f"1.2.3.{n}, 41.90.4.4").status_code for n in range(3)]
    assert codes == [200, 200, 429]


def test_the_count_is_shared_by_every_receiver_process(make_app) -> None:
    """Two apps (two gunicorn workers) on one Redis: one budget, not one each."""
    first = make_app(rate_limit_callbacks="4/hour").test_client()
    second = make_app(rate_limit_callbacks="4/hour").test_client()
    codes = [dlr(first if n % 2 else second, n).status_code for n in range(5)]
    assert codes == [200, 200, 200, 200, 429]


@pytest.mark.parametrize("path", ["/dlr", "/receiveSMS", "/ussd", "/voice", "/communicate"])
def test_every_callback_endpoint_is_limited(make_app, path: str) -> None:
    client = make_app(rate_limit_callbacks="2/hour").test_client()
    codes = [client.post(f"{path}?token={WEBHOOK_TOKEN}", data={}).status_code for _ in range(3)]
    assert codes[:2] != [429, 429] and codes[2] == 429  # bad bodies count too: they cost us work


def test_operator_api_limit_counts_strangers_too(make_app) -> None:
    client = make_app(rate_limit_operator="3/hour").test_client()
    assert client.get("/api/contacts").status_code == 401  # no token: refused, and counted
    for token in (API_TOKEN, SECOND_API_TOKEN):
        assert client.get("/api/contacts", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    refused = client.get("/api/contacts", headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert refused.status_code == 429 and refused.is_json and int(refused.headers["Retry-After"]) >= 1


def test_operator_and_callback_budgets_are_separate(make_app) -> None:
    client = make_app(rate_limit_operator="1/hour", rate_limit_callbacks="1/hour").test_client()
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    assert client.get("/api/contacts", headers=auth).status_code == 200
    assert dlr(client, 1).status_code == 200
    assert client.get("/api/contacts", headers=auth).status_code == 429
    assert dlr(client, 2).status_code == 429


def test_health_checks_are_never_limited(make_app) -> None:
    client = make_app(rate_limit_callbacks="1/hour", rate_limit_operator="1/hour").test_client()
    assert {client.get("/healthz").status_code for _ in range(5)} == {200}


def test_default_limits_let_an_at_sized_burst_through(make_app) -> None:
    """Defaults: 400 callbacks in well under a second from one address (AT's servers) all pass."""
    default = Settings.model_fields["rate_limit_callbacks"].default
    client = make_app(rate_limit_callbacks=default).test_client()
    assert {dlr(client, n).status_code for n in range(400)} == {200}


@pytest.mark.parametrize("value", ["", "fast", "0/second", "10 per fortnight"])
def test_bad_limits_are_refused_at_start_up(value: str) -> None:
    with pytest.raises(SettingsError, match="RATE_LIMIT_OPERATOR: not a rate limit"):
        load_settings(rate_limit_operator=value)


def test_storage_follows_redis_url() -> None:
    assert storage_uri("redis://:pw@127.0.0.1:6379/0") == "redis://:pw@127.0.0.1:6379/0"
    assert storage_uri("unix:///run/redis.sock") == "redis+unix:///run/redis.sock"
    assert storage_uri("") == "memory://"  # embedded mode: no Redis to share a count in
