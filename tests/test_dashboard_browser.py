"""The dashboard in a real browser (headless Chromium, tests/browser.py), against the real receiver on a real
port: an operator signs in through the form as a person does, reads a cycle's numbers, pauses and resumes a
cycle, on a desktop window and on a phone; and signing in over plain HTTP from another machine of the LAN.

No worker runs in this module: a cycle stays where the test put it (tasks a resume sends are removed after
each test, `task_lists`). Every test leaves a screenshot in test-artifacts/screenshots/.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from shared import cycles as shared_cycles
from shared.models import Call, Cycle, CycleState, Message
from shared.settings import load_settings
from tests.browser import LAN_HOST, NARROW, require_chromium
from tests.conftest import API_TOKEN, _ServerThread
from tests.services import free_port
from tests.test_dashboard_cycles import running_cycle, state_of

#: What a document may overflow a 390 px screen by before a phone shows a sideways scroll bar (rounding).
OVERFLOW_TOLERANCE = 1


def sign_in(page: Any, base: str) -> None:
    """Open the dashboard, get sent to the sign-in form, type the token and press the button."""
    page.goto(f"{base}/dashboard")
    page.get_by_label("Operator token").fill(API_TOKEN)
    page.get_by_role("button", name="Sign in").click()


def signed_in_page(page: Any) -> None:
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def cycle_row(page: Any, cycle_id: int) -> Any:
    """The cycle's row in the table of cycles (other tables name cycles too)."""
    its_id = page.get_by_role("cell", name=f"#{cycle_id}", exact=True)  # `has` looks inside each row
    return page.locator("#cycles").get_by_role("row").filter(has=its_id)


def cycle_as_read(page: Any, cycle_id: int) -> dict[str, str]:
    """The cycle's row as a person reads it: each column's heading and the text under it."""
    headings = page.locator("#cycles").get_by_role("columnheader").all_inner_texts()
    cells = cycle_row(page, cycle_id).get_by_role("cell").all_inner_texts()
    return {heading.strip(): cell.strip() for heading, cell in zip(headings, cells, strict=True)}


def finished_cycle(session: Any, phones: list[str]) -> int:
    """A done cycle whose SMS went to `phones`: all sent, all but the last delivered; the last one called,
    answered and acknowledged."""
    cycle_id = shared_cycles.start_cycle(session, "Your bill is ready")
    session.add_all(
        Message(
            phone=phone, text="Your bill is ready", cycle_id=cycle_id, send_state="sent", status=status,
            at_message_id=f"ATXid_browser_{cycle_id}_{n}",
        )
        for n, (phone, status) in enumerate(zip(phones, ["Success"] * (len(phones) - 1) + ["Failed"], strict=True))
    )  # fmt: skip
    session.add(
        Call(
            phone=phones[-1], cycle_id=cycle_id, send_state="sent", outcome="answered", acknowledged=True,
            session_id=f"ATVId_browser_{cycle_id}", ended_at=datetime.now(UTC),
        )
    )  # fmt: skip
    session.get(Cycle, cycle_id).state = CycleState.DONE
    session.commit()
    return cycle_id


@pytest.fixture
def receiver_with(clean: None) -> Iterator[Callable[..., str]]:
    """Start another real receiver with these setting overrides; its base URL (host 127.0.0.1)."""
    from web import create_app

    started: list[tuple[_ServerThread, Any]] = []

    def start(**overrides: Any) -> str:
        port = free_port()
        app = create_app(load_settings(**overrides))
        thread = _ServerThread(app, port)
        thread.start()
        started.append((thread, app))
        return f"http://127.0.0.1:{port}"

    yield start
    for thread, app in started:
        thread.stop()
        app.extensions["reach"].close()


def on_the_lan(base: str) -> str:
    """The same receiver, as another machine of the LAN reaches it: plain HTTP to a name that is not
    localhost (Chromium keeps `Secure` cookies for http://127.0.0.1, never for http://192.168.x.y)."""
    return base.replace("127.0.0.1", LAN_HOST)


# -- the fixtures themselves ----------------------------------------------------------------------------------


def test_without_chromium_browser_tests_skip_saying_why_unless_required(tmp_path) -> None:
    missing = str(tmp_path / "no-chromium")
    with pytest.raises(pytest.skip.Exception, match=r"no Chromium at .*no-chromium: run scripts/ensure-chromium"):
        require_chromium(missing, required=False)
    with pytest.raises(pytest.fail.Exception, match="REACH_REQUIRE_BROWSER=1"):
        require_chromium(missing, required=True)
    assert require_chromium("sh", required=True).endswith("/sh")


def test_ci_requires_the_browser_tests() -> None:
    """CI must not pass with the browser tests skipped."""
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "export REACH_REQUIRE_BROWSER=1" in ci and ci.index("REACH_REQUIRE_BROWSER") < ci.index("\nmake test")


# -- an operator at work --------------------------------------------------------------------------------------


def test_an_operator_signs_in_and_reads_a_cycles_numbers(receiver, session, wide_page) -> None:
    cycle_id = finished_cycle(session, ["+254711300001", "+254711300002", "+254711300003"])

    wide_page.goto(f"{receiver}/dashboard")
    expect(wide_page).to_have_url(f"{receiver}/dashboard/login")  # no session yet: sent to sign in
    sign_in(wide_page, receiver)
    signed_in_page(wide_page)
    expect(wide_page).to_have_url(f"{receiver}/dashboard")
    assert API_TOKEN not in wide_page.url

    shown = cycle_as_read(wide_page, cycle_id)
    assert {k: shown[k] for k in ("state", "SMS sent", "delivered", "called", "answered", "acknowledged")} == {
        "state": "done", "SMS sent": "3", "delivered": "2", "called": "1", "answered": "1", "acknowledged": "1",
    }  # fmt: skip
    failures = wide_page.locator("#failures")  # "Failed SMS by reason"
    expect(failures.get_by_role("cell", name="Failed", exact=True)).to_be_visible()


def test_a_wrong_token_is_refused_in_words(receiver, clean, wide_page) -> None:
    wide_page.goto(f"{receiver}/dashboard/login")
    wide_page.get_by_label("Operator token").fill("not-the-token")
    wide_page.get_by_role("button", name="Sign in").click()
    expect(wide_page.get_by_text("Wrong token.")).to_be_visible()
    expect(wide_page.get_by_role("button", name="Sign out")).to_have_count(0)


def test_pause_and_resume_a_cycle_from_its_row(receiver, session, task_lists, wide_page) -> None:
    cycle_id = running_cycle(session)
    sign_in(wide_page, receiver)
    row = cycle_row(wide_page, cycle_id)
    expect(row.get_by_role("cell", name="dispatching")).to_be_visible()

    row.get_by_role("button", name="Pause").click()
    expect(row.get_by_role("cell", name="paused (paused by the operator)")).to_be_visible()
    assert state_of(session, cycle_id) == CycleState.PAUSED
    expect(row.get_by_role("button", name="Pause")).to_have_count(0)

    row.get_by_role("button", name="Resume").click()
    expect(row.get_by_role("cell", name="dispatching", exact=True)).to_be_visible()
    assert state_of(session, cycle_id) == CycleState.DISPATCHING
    expect(row.get_by_role("button", name="Pause")).to_be_visible()


# -- on a phone -----------------------------------------------------------------------------------------------


def sideways_overflow(page: Any) -> int:
    """How many CSS pixels the page is wider than the screen (a sideways scroll bar when above zero)."""
    return page.evaluate("document.scrollingElement.scrollWidth") - NARROW


def test_the_dashboard_fits_a_phone_screen(receiver, session, narrow_page) -> None:
    """A full dashboard (ten cycles in the table and the chart, a running one with its buttons), the sign-in
    page, a cycle's page and a contact's, 390 px wide: nothing makes the page scroll sideways (wide tables
    scroll inside themselves)."""
    for n in range(9):
        finished_cycle(session, [f"+2547113{n:02d}001", f"+2547113{n:02d}002"])
    running = running_cycle(session)

    narrow_page.goto(f"{receiver}/dashboard/login")
    assert sideways_overflow(narrow_page) <= OVERFLOW_TOLERANCE
    sign_in(narrow_page, receiver)
    expect(cycle_row(narrow_page, running).get_by_role("button", name="Pause")).to_be_attached()
    assert sideways_overflow(narrow_page) <= OVERFLOW_TOLERANCE
    for page in (f"cycles/{running}", "contacts/+254711600000"):  # one of the running cycle's contacts
        assert narrow_page.goto(f"{receiver}/dashboard/{page}").status == 200
        assert sideways_overflow(narrow_page) <= OVERFLOW_TOLERANCE, page


# -- plain HTTP on a LAN address ------------------------------------------------------------------------------


def test_sign_in_over_plain_http_on_a_lan_address_sticks(receiver, clean, wide_page) -> None:
    """DASHBOARD_COOKIE_SECURE unset (auto): over plain HTTP the cookie is not `Secure`, so the browser keeps it."""
    lan = on_the_lan(receiver)
    sign_in(wide_page, lan)
    signed_in_page(wide_page)
    expect(wide_page).to_have_url(f"{lan}/dashboard")


def test_a_cookie_forced_secure_over_plain_http_says_why_sign_in_did_not_stick(receiver_with, wide_page) -> None:
    lan = on_the_lan(receiver_with(dashboard_cookie_secure=True))
    sign_in(wide_page, lan)
    expect(wide_page.get_by_text("Your browser did not keep the sign-in cookie")).to_be_visible()
    expect(wide_page.get_by_text("DASHBOARD_COOKIE_SECURE=true requires HTTPS")).to_be_visible()
    expect(wide_page.get_by_role("button", name="Sign out")).to_have_count(0)
    expect(wide_page.get_by_label("Operator token")).to_be_visible()  # the form, to try again
    # (A reload is an ordinary visit again: tests/test_dashboard_cookie.py.)
