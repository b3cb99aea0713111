"""The dashboard's overview (issue 13): what a person sees for each cycle (its funnel as counts and
percentages, failures by reason, delivery by mobile network, a chart each cycle fills on its own scale),
that it refreshes itself only while a cycle runs, and that its times name their zone; and that
`GET /api/cycles/<id>` carries the same numbers. Flask test client against the real Postgres; the cycles'
messages and calls are rows as the worker and the delivery reports leave them."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import insert, select

from shared import cycle_report
from shared import cycles as shared_cycles
from shared.models import Call, Contact, ContactStatus, Cycle, CycleState, Message
from tests.conftest import API_TOKEN
from tests.test_cli import invoke
from tests.test_dashboard import sign_in
from worker.cycles import plan_cycle

SAFARICOM, AIRTEL, UNKNOWN_NETWORK = "63902", "63903", "60199"


def add_contacts(session: Any, first: int, n: int, status: ContactStatus = ContactStatus.NEW) -> list[str]:
    phones = [f"+2547{first + i:08d}" for i in range(n)]
    session.execute(insert(Contact), [{"phone": p, "status": status} for p in phones])
    return phones


def planned_cycle(session: Any, message: str = "Your bill is ready") -> int:
    cycle_id = shared_cycles.start_cycle(session, message)
    plan_cycle(session, cycle_id)
    session.commit()
    return cycle_id


def sms(cycle_id: int, phone: str, status: str | None, network: str | None, reason: str | None = None) -> dict:
    """A message AT accepted, as its delivery report (if any) left it."""
    return {
        "cycle_id": cycle_id, "phone": phone, "text": "Your bill is ready", "send_state": "sent", "status": status,
        "failure_reason": reason, "network_code": network, "cost": "0.8000", "currency": "KES",
    }  # fmt: skip


def call(cycle_id: int, phone: str, outcome: str | None, acknowledged: bool = False) -> dict:
    return {
        "cycle_id": cycle_id,
        "phone": phone,
        "send_state": "sent",
        "outcome": outcome,
        "acknowledged": acknowledged,
    }


def of_contacts(session: Any, rows: list[dict]) -> list[dict]:
    """The rows with their contact's id, as the worker writes them."""
    ids = dict(session.execute(select(Contact.phone, Contact.id)).all())
    return [{**row, "contact_id": ids[row["phone"]]} for row in rows]


def finish(session: Any, cycle_id: int) -> None:
    session.get(Cycle, cycle_id).state = CycleState.DONE
    session.commit()


@pytest.fixture
def small_and_large(session: Any) -> tuple[int, int]:
    """A finished cycle of 3 SMS contacts (1 delivered, 2 failed) and, after 4,997 more contacts came,
    a running one of 5,000: 4,000 SMS (3,000 delivered, 600 failed, 400 without a report yet) and 1,000
    calls (800 placed, 400 answered, 100 acknowledged)."""
    small_phones = add_contacts(session, 11_000_000, 3)
    small = planned_cycle(session)
    session.execute(
        insert(Message),
        of_contacts(
            session,
            [
                sms(small, small_phones[0], "Success", SAFARICOM),
                sms(small, small_phones[1], "Failed", AIRTEL, "UserIsInactive"),
                sms(small, small_phones[2], "Rejected", UNKNOWN_NETWORK, "DeliveryFailure"),
            ],
        ),
    )
    finish(session, small)

    sms_phones = small_phones + add_contacts(session, 12_000_000, 3_997)
    voice_phones = add_contacts(session, 13_000_000, 1_000, ContactStatus.INACTIVE)
    large = planned_cycle(session)
    outcomes = (
        [(SAFARICOM, "Success", None)] * 2_900
        + [(AIRTEL, "Success", None)] * 100
        + [(SAFARICOM, "Failed", "UserIsInactive")] * 500
        + [(AIRTEL, "Failed", "DeliveryFailure")] * 100
        + [(None, None, None)] * 400
    )
    session.execute(
        insert(Message),
        of_contacts(
            session,
            [sms(large, p, status, net, why) for p, (net, status, why) in zip(sms_phones, outcomes, strict=True)],
        ),
    )
    calls = [("answered", True)] * 100 + [("answered", False)] * 300 + [("not_answered", False)] * 400
    session.execute(
        insert(Call),
        of_contacts(
            session, [call(large, p, outcome, ack) for p, (outcome, ack) in zip(voice_phones[:800], calls, strict=True)]
        ),
    )
    session.commit()
    return small, large


@pytest.fixture
def operator(client: Any) -> Any:
    assert sign_in(client, API_TOKEN).status_code == 303
    return client


def page_of(operator: Any) -> str:
    response = operator.get("/dashboard")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def cell(page: str, row: str, field: str) -> str:
    """The text of the cell `data-field=field` in the table row whose opening tag is `<tr {row}>`."""
    found = re.search(rf"<tr {re.escape(row)}>(.*?)</tr>", page, re.S)
    assert found, f"no row {row}"
    value = re.search(rf'<td[^>]* data-field="{re.escape(field)}"[^>]*>(.*?)</td>', found.group(1), re.S)
    assert value, f"no cell {field} in row {row}"
    return html.unescape(re.sub(r"<[^>]+>", "", value.group(1))).strip()


def test_each_cycle_shows_its_funnel_as_counts_and_percentages_of_the_step_before(
    operator: Any, small_and_large: tuple[int, int]
) -> None:
    small, large = small_and_large
    page = page_of(operator)

    # Each percentage says what it is of, in its column's heading.
    for heading in ("% of SMS planned", "% of SMS sent", "% of calls planned", "% of called", "% of answered"):
        assert heading in page
    row = f'data-cycle="{large}"'
    assert [cell(page, row, f) for f in ("sms-sent", "sms-delivered", "voice-called", "voice-answered")] == [
        "4000", "3000", "800", "400"
    ]  # fmt: skip
    assert cell(page, row, "sms-sent-pct") == "100.0%"  # 4,000 of 4,000 SMS planned
    assert cell(page, row, "sms-delivered-pct") == "75.0%"  # 3,000 of 4,000 sent
    assert cell(page, row, "voice-called-pct") == "80.0%"  # 800 of 1,000 calls planned
    assert cell(page, row, "voice-answered-pct") == "50.0%"  # 400 of 800 called
    assert cell(page, row, "voice-acknowledged-pct") == "25.0%"  # 100 of 400 answered
    assert cell(page, f'data-cycle="{small}"', "sms-delivered-pct") == "33.3%"
    # Nothing to be a share of: a dash, not 0% and not a division by zero.
    assert cell(page, f'data-cycle="{small}"', "voice-answered-pct") == "\N{EN DASH}"
    # Cost: estimated, and charged so far (0.80 per SMS AT accepted).
    assert cell(page, row, "estimated-cost") == "KES 6200.00"  # 4,000 x 0.80 + 1,000 x 3.00
    assert cell(page, row, "cost") == "KES 3200.00"
    # The cycle's id leads to its own page.
    assert f'<a href="/dashboard/cycles/{large}">#{large}</a>' in page


def test_failed_sms_by_reason_per_cycle_and_over_the_cycles_shown(
    operator: Any, small_and_large: tuple[int, int]
) -> None:
    small, large = small_and_large
    page = page_of(operator)

    inactive = 'data-reason="UserIsInactive"'
    assert cell(page, inactive, f"cycle-{large}") == "500"
    assert cell(page, inactive, f"cycle-{small}") == "1"
    assert cell(page, inactive, "all") == "501"
    assert cell(page, 'data-reason="DeliveryFailure"', "all") == "101"
    # The latest failed numbers, each leading to its contact's page.
    assert re.search(r'href="/dashboard/contacts/%2B2547\d{8}"', page)


def test_delivery_rate_by_mobile_network_names_the_networks_at_api_md_names(
    operator: Any, small_and_large: tuple[int, int]
) -> None:
    small, large = small_and_large
    page = page_of(operator)

    safaricom = f'data-network="{SAFARICOM}" data-cycle="{large}"'
    assert cell(page, safaricom, "network") == "Safaricom"
    assert [cell(page, safaricom, f) for f in ("sent", "delivered", "rate")] == ["3400", "2900", "85.3%"]
    airtel = f'data-network="{AIRTEL}" data-cycle="{large}"'
    assert cell(page, airtel, "network") == "Airtel Kenya"
    assert cell(page, airtel, "rate") == "50.0%"  # 100 of 200
    assert cell(page, f'data-network="{UNKNOWN_NETWORK}" data-cycle="{small}"', "network") == UNKNOWN_NETWORK
    # Over the cycles shown: 2,901 of 3,401 reports from Safaricom said delivered.
    assert cell(page, f'data-network="{SAFARICOM}" data-cycle="all"', "rate") == "85.3%"
    assert cell(page, f'data-network="{SAFARICOM}" data-cycle="all"', "sent") == "3401"


def test_the_api_answers_the_numbers_the_dashboard_shows(
    operator: Any, operator_headers: dict[str, str], small_and_large: tuple[int, int]
) -> None:
    _, large = small_and_large
    answer = operator.get(f"/api/cycles/{large}", headers=operator_headers).get_json()

    steps = {step["step"]: step for step in answer["funnel"]["steps"]}
    assert answer["funnel"]["audience"] == 5_000
    assert steps["delivered"] == {
        "step": "delivered", "label": "delivered", "count": 3_000, "of": "SMS sent", "of_count": 4_000,
        "percent": 75.0, "percent_of_audience": 60.0,
    }  # fmt: skip
    assert (steps["answered"]["percent"], steps["acknowledged"]["of"]) == (50.0, "answered")
    networks = {row["network_code"]: row for row in answer["sms_by_network"]}
    assert networks[SAFARICOM] == {
        "network_code": SAFARICOM, "network": "Safaricom", "sent": 3_400, "delivered": 2_900, "failed": 500,
        "delivery_rate": 85.3,
    }  # fmt: skip
    assert networks[None]["network"] == "not named by a report" and networks[None]["sent"] == 400


def svg_bars(page: str, cycle_id: int) -> list[float]:
    """The heights of the bars of the cycle's own chart, in funnel order."""
    charts = re.findall(rf'<svg [^>]*data-cycle="{cycle_id}"[^>]*>(.*?)</svg>', page, re.S)
    assert len(charts) == 1, f"one chart for cycle {cycle_id}"
    return [float(h) for h in re.findall(r'<rect class="step\d"[^>]* height="([\d.]+)"', charts[0])]


def test_a_cycle_of_3_keeps_visible_bars_beside_one_of_5000(operator: Any, small_and_large: tuple[int, int]) -> None:
    small, large = small_and_large
    page = page_of(operator)

    assert len(re.findall(r"<svg [^>]*data-cycle=", page)) == 2  # one chart per cycle
    small_bars, large_bars = svg_bars(page, small), svg_bars(page, large)
    assert len(small_bars) == len(large_bars) == 5
    # Each cycle is its own 100 %: all 3 sent fill the chart, as 4,000 of 5,000 fill 80 % of the other.
    assert small_bars[0] == max(large_bars + small_bars)
    assert large_bars[0] == pytest.approx(0.8 * small_bars[0], abs=0.2)
    assert small_bars[1] == pytest.approx(small_bars[0] / 3, abs=0.2)  # 1 of 3 delivered
    assert all(height >= 2 for height in small_bars[:2] + large_bars)  # every step that happened is seen
    assert f"<title>cycle {large}: delivered 3000 (60.0% of its 5000 contacts)</title>" in page


REFRESH = '<meta http-equiv="refresh" content="10">'


def test_the_page_refreshes_itself_only_while_a_cycle_runs(operator: Any, session: Any) -> None:
    add_contacts(session, 11_000_000, 2)
    cycle_id = planned_cycle(session)
    assert cycle_report.report(session, cycle_id)["state"] == "dispatching"

    assert REFRESH in page_of(operator)
    session.get(Cycle, cycle_id).state = CycleState.PAUSED
    session.commit()
    assert REFRESH in page_of(operator)
    finish(session, cycle_id)
    assert REFRESH not in page_of(operator)


def test_times_name_their_zone(operator: Any, session: Any) -> None:
    add_contacts(session, 11_000_000, 1)
    cycle_id = planned_cycle(session)
    session.get(Cycle, cycle_id).created_at = datetime(2026, 12, 6, 11, 5, tzinfo=UTC)
    session.commit()

    assert cell(page_of(operator), f'data-cycle="{cycle_id}"', "started") == "2026-12-06 11:05 UTC"


def test_the_times_zone_is_dashboard_timezone(make_app: Any, session: Any) -> None:
    client = make_app(dashboard_timezone="Africa/Nairobi").test_client()
    assert sign_in(client, API_TOKEN).status_code == 303
    add_contacts(session, 11_000_000, 1)
    cycle_id = planned_cycle(session)
    session.get(Cycle, cycle_id).created_at = datetime(2026, 12, 6, 11, 5, tzinfo=UTC)
    session.commit()

    assert cell(page_of(client), f'data-cycle="{cycle_id}"', "started") == "2026-12-06 14:05 EAT"
    # The cycle's own page keeps to the same zone (web/formats.py), to the second.
    assert "2026-12-06 14:05:00 EAT" in client.get(f"/dashboard/cycles/{cycle_id}").get_data(as_text=True)


def test_the_page_fits_a_phone(operator: Any, small_and_large: tuple[int, int]) -> None:
    """390 px wide: the viewport is the device's, and each table scrolls inside its own box."""
    page = page_of(operator)

    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    tables = re.findall(r"<(?:div class=\"scroll\">\s*)?<table", page)
    assert tables and all(t.startswith('<div class="scroll">') for t in tables)
    assert not re.search(r'<svg [^>]*width="\d{4,}', page)  # no chart wider than a phone


def test_reach_cycle_show_prints_the_same_shares(small_and_large: tuple[int, int]) -> None:
    _, large = small_and_large
    result = invoke(CliRunner(), "cycle", "show", str(large))

    assert result.exit_code == 0, result.stderr
    assert "  funnel     SMS sent 4000 (100.0% of SMS planned)\n" in result.output
    assert "             delivered 3000 (75.0% of SMS sent)\n" in result.output
    assert "             acknowledged 100 (25.0% of answered)\n" in result.output
    assert "  networks   Safaricom: 2900 of 3400 delivered (85.3%)\n" in result.output
    assert "             not named by a report: 0 of 400 delivered (0.0%)\n" in result.output
