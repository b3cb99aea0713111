"""Money (issue 13): SMS parts and estimated cost by parts and by country, in the dry run, the cycle's
answer, the CLI and the dashboard; the cycle's `cost` (what AT charged) in the same shape."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import insert

from shared import cycles
from shared.models import Contact, ContactStatus, Message
from shared.settings import SettingsError, get_settings, load_settings
from tests.conftest import API_TOKEN
from worker.cycles import plan_cycle

KE, NG, UG, GB = "+254711000201", "+2348031000202", "+256772000203", "+447700900204"
#: 2 parts of UCS-2 (71 units; the `ж` is outside GSM-7).
TWO_UCS2_PARTS = "ж" * 71
#: 2 parts of UCS-2 (two hold 134 units), 3 with a promotional sender id's opt-out (` *456*9*5#`, 10 more).
JUST_TWO_UCS2_PARTS = "ж" * 130
TABLE = "KE=0.80,NG=2.50,default=1.00"


@pytest.fixture
def audience(session) -> None:
    """SMS to a Kenyan, two Nigerians, a Ugandan and a British number; a call to one inactive Kenyan."""
    rows = [(KE, ContactStatus.NEW), (NG, ContactStatus.ACTIVE), ("+2348031000205", ContactStatus.NEW)]
    rows += [(UG, ContactStatus.NEW), (GB, ContactStatus.NEW), ("+254711000206", ContactStatus.INACTIVE)]
    rows += [("+254711000207", ContactStatus.OPTED_OUT)]
    session.execute(insert(Contact), [{"phone": p, "status": s} for p, s in rows])
    session.commit()


#: KE 1 x 0.80 + NG 2 x 2.50 + UG and GB 2 x 1.00 (default) = 7.80 per part; x 2 parts; + 1 call x 3.00.
EXPECTED = {"amount": "18.60", "currency": "KES"}


def test_dry_run_counts_parts_and_prices_sms_by_country(make_app, operator_headers, audience) -> None:
    client = make_app(sms_cost_estimate=TABLE).test_client()
    body = {"message": TWO_UCS2_PARTS, "dry_run": True}
    answer = client.post("/api/cycles", json=body, headers=operator_headers).get_json()

    assert answer["segments"] == {"encoding": "UCS-2", "parts": 2}
    assert answer["estimated_cost"] == EXPECTED


def test_a_single_price_still_works_and_counts_parts(make_app, operator_headers, audience) -> None:
    client = make_app(sms_cost_estimate="0.80").test_client()
    body = {"message": "a" * 161, "dry_run": True}  # 2 GSM-7 parts
    answer = client.post("/api/cycles", json=body, headers=operator_headers).get_json()

    assert answer["segments"] == {"encoding": "GSM-7", "parts": 2}
    assert answer["estimated_cost"] == {"amount": "11.00", "currency": "KES"}  # 5 x 2 x 0.80 + 3.00


def test_the_cycle_answer_carries_segments_estimate_and_cost(make_app, operator_headers, audience, session) -> None:
    app = make_app(sms_cost_estimate=TABLE)
    cycle_id = cycles.start_cycle(session, TWO_UCS2_PARTS)
    plan_cycle(session, cycle_id)
    session.commit()
    charged(session, cycle_id, [Decimal("1.60"), Decimal("5.00")])

    answer = app.test_client().get(f"/api/cycles/{cycle_id}", headers=operator_headers).get_json()

    assert answer["segments"] == {"encoding": "UCS-2", "parts": 2}
    assert answer["estimated_cost"] == EXPECTED
    assert answer["cost"] == {"amount": "6.60", "currency": "KES"}


def charged(session: Any, cycle_id: int, amounts: list[Decimal]) -> None:
    """What AT's answer would have recorded: messages sent with their cost."""
    contact_ids = [c.id for c in session.query(Contact).order_by(Contact.id).limit(len(amounts))]
    now = datetime.now(UTC)
    session.execute(
        insert(Message),
        [
            {"contact_id": cid, "cycle_id": cycle_id, "phone": "+254711000201", "text": "x", "send_state": "sent"}
            | {"cost": amount, "currency": "KES", "created_at": now}
            for cid, amount in zip(contact_ids, amounts, strict=True)
        ],
    )
    session.commit()


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("KE=0.80", "needs a default= price"),
        ("XX=1,default=1", "unknown country 'XX'"),
        ("KE=abc,default=1", "price for KE is not a number"),
        ("US=1,CA=2,default=1", "US and CA share calling code +1"),
        ("-1", "must be zero or more"),
        ('{"KE": "0.80"', "not a JSON object"),
    ],
)
def test_a_bad_sms_cost_estimate_is_refused_at_start_naming_the_setting(value: str, error: str) -> None:
    with pytest.raises(SettingsError, match="SMS_COST_ESTIMATE") as raised:
        load_settings(sms_cost_estimate=value)
    assert error in str(raised.value)


def test_a_json_table_is_read_like_the_short_form() -> None:
    short = load_settings(sms_cost_estimate=TABLE).sms_cost_estimate
    assert load_settings(sms_cost_estimate='{"KE": 0.80, "NG": "2.50", "default": 1}').sms_cost_estimate == short


# -- the CLI and the dashboard show the same ------------------------------------------------------------------


@pytest.fixture
def priced(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """SMS_COST_ESTIMATE is the table for this test (the CLI reads its settings from the environment)."""
    monkeypatch.setenv("SMS_COST_ESTIMATE", TABLE)
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


def test_cli_dry_run_and_show_print_parts_and_costs(priced, audience, session) -> None:
    from click.testing import CliRunner

    from reach_cli.main import cli

    runner = CliRunner()
    dry = runner.invoke(cli, ["cycle", "run", "--message", TWO_UCS2_PARTS, "--dry-run"], catch_exceptions=False)
    assert "SMS parts:      2 (UCS-2)" in dry.output and "estimated cost: KES 18.60" in dry.output
    as_json = runner.invoke(cli, ["cycle", "run", "--message", "hi", "--dry-run", "--json"], catch_exceptions=False)
    assert json.loads(as_json.output)["segments"] == {"encoding": "GSM-7", "parts": 1}

    cycle_id = cycles.start_cycle(session, TWO_UCS2_PARTS)
    plan_cycle(session, cycle_id)
    session.commit()
    charged(session, cycle_id, [Decimal("1.60")])
    shown = runner.invoke(cli, ["cycle", "show", str(cycle_id)], catch_exceptions=False).output
    assert "SMS parts  2 (UCS-2) per message" in shown
    assert "estimated  KES 18.60" in shown and "cost       KES 1.60" in shown


def test_dashboard_rows_show_parts_estimate_and_cost(make_app, audience, session) -> None:
    from tests.test_dashboard import sign_in

    client = make_app(sms_cost_estimate=TABLE, dashboard_cookie_secure=False).test_client()
    cycle_id = cycles.start_cycle(session, TWO_UCS2_PARTS)
    plan_cycle(session, cycle_id)
    session.commit()
    charged(session, cycle_id, [Decimal("1.60"), Decimal("0.80")])
    sign_in(client, API_TOKEN)

    page = client.get("/dashboard").get_data(as_text=True)

    row = re.search(rf'<tr data-cycle="{cycle_id}">(.*?)</tr>', page, re.S).group(1)
    cells = dict(re.findall(r'<td data-field="([a-z-]+)">([^<]*)</td>', row))
    assert cells["sms-parts"] == "2 (UCS-2)"
    assert cells["estimated-cost"] == "KES 18.60" and cells["cost"] == "KES 2.40"


def test_a_message_over_ten_parts_is_refused_naming_parts_and_encoding(client, operator_headers, session) -> None:
    from click.testing import CliRunner

    from reach_cli.main import cli

    response = client.post("/api/cycles", json={"message": "ж" * 671}, headers=operator_headers)
    assert response.status_code == 400
    assert response.get_json() == {"error": "message is 11 SMS parts (UCS-2); at most 10"}
    result = CliRunner().invoke(cli, ["cycle", "run", "--message", "ж" * 671, "--dry-run"])
    # The exit code is the CLI's rule for bad input (README), not this one's.
    assert result.exit_code != 0 and result.stderr == "error: message is 11 SMS parts (UCS-2); at most 10\n"


def test_a_cycle_planned_before_its_plan_counted_prefixes_is_estimated_from_its_items(
    make_app, operator_headers, audience, session
) -> None:
    from shared.models import Cycle

    cycle_id = cycles.start_cycle(session, TWO_UCS2_PARTS)
    plan_cycle(session, cycle_id)
    cycle = session.get(Cycle, cycle_id)
    cycle.plan = {k: v for k, v in cycle.plan.items() if k != "sms_by_prefix"}
    session.commit()

    answer = make_app(sms_cost_estimate=TABLE).test_client().get(f"/api/cycles/{cycle_id}", headers=operator_headers)

    assert answer.get_json()["estimated_cost"] == EXPECTED


@pytest.fixture(params=["transactional", "promotional"])
def sender_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """AT_SENDER_KIND, read afresh by the settings for this test and after it."""
    monkeypatch.setenv("AT_SENDER_KIND", request.param)
    get_settings.cache_clear()
    yield request.param
    get_settings.cache_clear()


def test_a_plan_reads_the_bill_and_the_windows_number_groups_in_one_pass(audience, session, sender_kind) -> None:
    """A text without placeholders: one statement groups the audience by number prefix, for the send windows
    and the bill both (two were a tenth of a plan at a million contacts, issue 15), and the bill is the one
    counted apart. Under a promotional sender id too, whose opt-out lengthens the Kenyan SMS: a group's seven
    characters hold `+254` whole, and a pass of their own was another 5 % of such a plan."""
    from sqlalchemy import event

    from shared import cycle_money
    from shared.models import Channel, Cycle

    cycle_id = cycles.start_cycle(session, JUST_TWO_UCS2_PARTS, sms_window="08:00-20:00")
    session.commit()
    statements: list[str] = []

    def record(_conn, _cursor, statement, _params, _context, _executemany) -> None:
        statements.append(statement)

    engine = session.get_bind()
    event.listen(engine, "before_cursor_execute", record)
    try:
        plan = plan_cycle(session, cycle_id)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    session.commit()

    by_prefix = [s for s in statements if "substr(contacts.phone" in s and not s.lstrip().startswith("INSERT")]
    assert len(by_prefix) == 1, by_prefix
    sms = cycles.reachable() & (cycles.channel_expr() == Channel.SMS.value)
    apart = cycle_money.sms_bill(session, JUST_TWO_UCS2_PARTS, sms).as_plan()
    assert {key: plan[key] for key in apart} == apart
    assert apart["sms_by_prefix"] == {"+254": 1, "+234": 2, "+256": 1, "+447": 1}
    # Three parts with the opt-out, which only the Kenyan SMS carries.
    kenyan_parts = 3 if sender_kind == "promotional" else 2
    assert apart["sms_parts_by_prefix"] == {"+254": kenyan_parts, "+234": 4, "+256": 2, "+447": 2}
    assert session.get(Cycle, cycle_id).plan == plan
