"""`/dashboard`: who may see it (a signed session cookie from an API_TOKEN), and what a real browser shows
after real cycles, checked against the database."""

from __future__ import annotations

from sqlalchemy import func, select

from shared.models import Call, Contact, Cycle, Message
from simulator.scenario import Scenario
from tests.conftest import API_TOKEN, SECOND_API_TOKEN, wait_for
from tests.test_cycle import STORY, add_contacts, start, state_of, statuses

#: The Flask test client's own origin: a browser sends it with every form (tests/test_dashboard_auth.py).
SAME_ORIGIN = {"Origin": "http://localhost"}


def sign_in(client, token: str):
    return client.post("/dashboard/login", data={"token": token}, headers=SAME_ORIGIN)


# -- auth -----------------------------------------------------------------------------------------------------


def test_dashboard_refuses_without_a_session(client) -> None:
    response = client.get("/dashboard")
    assert response.status_code == 303 and response.headers["Location"].endswith("/dashboard/login")
    assert client.get("/dashboard/login").status_code == 200


def test_wrong_token_is_refused_and_sets_no_cookie(client) -> None:
    for wrong in ("", "wrong-token", API_TOKEN + "x"):
        response = sign_in(client, wrong)
        assert response.status_code == 401
        assert "Set-Cookie" not in response.headers
        assert "Wrong token" in response.get_data(as_text=True)
    assert client.get("/dashboard").status_code == 303


def test_a_sign_in_body_larger_than_the_form_is_refused_unread(client) -> None:
    """The form carries the credential, so its body is read before anything is checked: it is kept small
    (a client may send a huge or endless one; BODY_TIMEOUT_SECONDS bounds how slowly)."""
    response = client.post("/dashboard/login", data={"token": API_TOKEN, "padding": "x" * 5000}, headers=SAME_ORIGIN)
    assert response.status_code == 413
    assert response.get_json() == {"error": "request body too large"}
    assert "Set-Cookie" not in response.headers


def test_a_token_gives_a_strict_httponly_session_without_the_token_in_it(client) -> None:
    response = sign_in(client, API_TOKEN)
    assert response.status_code == 303 and response.headers["Location"].startswith("/dashboard?")
    cookie = response.headers["Set-Cookie"]
    # `Secure` over HTTPS: tests/test_dashboard_cookie.py.
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/dashboard" in cookie
    assert API_TOKEN not in cookie and API_TOKEN not in response.headers["Location"]
    page = client.get("/dashboard")
    assert page.status_code == 200 and "Contacts by status" in page.get_data(as_text=True)
    assert page.headers["Cache-Control"] == "no-store"
    client.post("/dashboard/logout", headers=SAME_ORIGIN)
    assert client.get("/dashboard").status_code == 303


def test_tampered_cookie_and_removed_token_are_refused(make_app) -> None:
    both = make_app().test_client()
    assert sign_in(both, SECOND_API_TOKEN).status_code == 303
    cookie = both.get_cookie("reach_dashboard", path="/dashboard")
    assert both.get("/dashboard").status_code == 200

    tampered = make_app().test_client()
    # Change a character well inside the signature: the last one holds bits base64 decoding ignores.
    middle = len(cookie.value) - 8
    changed = "A" if cookie.value[middle] != "A" else "B"
    forged = cookie.value[:middle] + changed + cookie.value[middle + 1 :]
    tampered.set_cookie("reach_dashboard", forged, path="/dashboard")
    assert tampered.get("/dashboard").status_code == 303

    # SECOND_API_TOKEN rotated out: its sessions end at once; sessions of the remaining token still work.
    rotated = make_app(api_token=API_TOKEN).test_client()
    rotated.set_cookie("reach_dashboard", cookie.value, path="/dashboard")
    assert rotated.get("/dashboard").status_code == 303


def test_dashboard_is_off_without_api_token(make_app) -> None:
    client = make_app(api_token="").test_client()
    assert sign_in(client, "").status_code == 401
    assert sign_in(client, "anything").status_code == 401
    assert client.get("/dashboard").status_code == 303


# -- in a browser (tests/browser.py) ---------------------------------------------------------------------------


def expected_cycle(session, cycle_id: int) -> dict[str, int]:
    """The funnel counted straight from the tables (not through shared.cycle_report.report)."""

    def count(model, *where) -> int:
        return session.scalar(select(func.count()).select_from(model).where(model.cycle_id == cycle_id, *where))

    return {
        "sms-sent": count(Message, Message.send_state == "sent"),
        "sms-delivered": count(Message, Message.status == "Success"),
        "voice-called": count(Call, Call.send_state == "sent"),
        "voice-answered": count(Call, Call.outcome == "answered"),
        "voice-acknowledged": count(Call, Call.acknowledged.is_(True)),
    }


def test_browser_shows_what_the_database_holds(live, receiver, session, wide_page) -> None:
    live.set_scenario(Scenario.from_dict(STORY))
    phones = [f"+25471100000{i}" for i in range(1, 7)]
    add_contacts(receiver, phones)
    first = start(receiver, "Your bill is ready")
    wait_for(lambda: state_of(session, first) == "done", timeout=30, what="cycle 1 done")
    wait_for(lambda: sum(s.value == "inactive" for s in statuses(session).values()) == 3, timeout=20)
    second = start(receiver, "Your bill is ready")
    wait_for(lambda: state_of(session, second) == "done", timeout=60, what="cycle 2 done")
    wait_for(lambda: expected_cycle(session, second)["sms-delivered"] == 2, timeout=20, what="reports applied")
    session.expire_all()

    page = wide_page
    page.goto(f"{receiver}/dashboard")
    assert page.url.endswith("/dashboard/login")  # no session: sent to sign in
    page.fill("#token", "not-the-token")
    page.click("#sign-in")
    assert page.inner_text("#error") == "Wrong token."
    page.fill("#token", API_TOKEN)
    page.click("#sign-in")
    page.wait_for_selector("#cycles")
    assert page.url.endswith("/dashboard") and API_TOKEN not in page.url

    for cycle_id in (first, second):
        shown = {
            field: int(page.inner_text(f'tr[data-cycle="{cycle_id}"] td[data-field="{field}"]'))
            for field in expected_cycle(session, cycle_id)
        }
        assert shown == expected_cycle(session, cycle_id), cycle_id
        assert page.inner_text(f'tr[data-cycle="{cycle_id}"] td[data-field="state"]') == "done"
    assert shown["voice-called"] == 4 and shown["voice-answered"] >= 1  # the story reached the calls

    by_status = dict(session.execute(select(Contact.status, func.count()).group_by(Contact.status)).all())
    for status in by_status:
        assert int(page.inner_text(f'td[data-status="{status.value}"]')) == by_status[status]

    # Failure reasons over both cycles, as the page ranks them.
    reason = func.coalesce(Message.failure_reason, Message.status, Message.send_status)
    failed = dict(
        session.execute(
            select(reason, func.count())
            .where(Message.status.in_(["Failed", "Rejected", "AbsentSubscriber", "Expired"]))
            .group_by(reason)
        ).all()
    )
    assert failed  # UserIsInactive, Rejected and AbsentSubscriber in the story
    for name, count in failed.items():
        assert int(page.inner_text(f'td[data-reason="{name}"]')) == count
    hangups = dict(
        session.execute(
            select(Call.hangup_cause, func.count())
            .where(Call.ended_at.is_not(None), Call.outcome != "answered")
            .group_by(Call.hangup_cause)
        ).all()
    )
    assert hangups  # USER_BUSY and NO_ANSWER in the story
    for cause, count in hangups.items():
        assert int(page.inner_text(f'td[data-cause="{cause}"]')) == count
    # The chart: one bar per funnel step per cycle, the tallest the full height.
    assert page.locator("#funnel-chart rect").count() == 5 * session.scalar(select(func.count()).select_from(Cycle))
    assert page.get_attribute("#funnel-chart rect.step0", "height") is not None
