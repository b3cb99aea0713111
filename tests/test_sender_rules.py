"""Operators' rules for a promotional sender id (at-api.md §13; shared/sender_rules.py) and AT's
DoNotDisturbRejection (at-api.md §2.2): planning and the SMS dispatcher in-process against the real
Postgres and Redis and the AT simulator, as in tests/test_send_windows.py.

The dispatchers' clock (`items.now`, and planning's) is set to a chosen local hour in Nairobi or Lagos, so no
test depends on the hour it runs at; an opening is reached by moving that clock to it and the items' due time
back to the database's now.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from sqlalchemy import func, insert, select, update

from reach_cli.main import cli
from shared import cycle_report
from shared import cycles as shared_cycles
from shared.models import Contact, ContactStatus, Cycle, CycleItem, ItemState, Message
from shared.settings import SettingsError, get_settings, load_settings
from shared.windows import next_closing, next_common_opening, parse_window
from simulator.scenario import Rule, Scenario
from tests.conftest import API_TOKEN
from tests.cycle_support import item_windows, make_items_due, plan_new_cycle
from tests.test_dashboard import sign_in
from worker import cycles
from worker.cycles import items as cycle_items
from worker.cycles import planning

NAIROBI, LAGOS = ZoneInfo("Africa/Nairobi"), ZoneInfo("Africa/Lagos")
KENYAN, NIGERIAN = "+254711400001", "+2348034000001"
OPT_OUT = "*456*9*5#"
TEXT = "Your bill is ready"


def local(zone: ZoneInfo, hour: int, minute: int = 0, days: int = 0) -> datetime:
    """Today's (or `days` later's) `hour:minute` in `zone`, as a UTC instant."""
    day = datetime.now(zone).date() + timedelta(days=days)
    return datetime.combine(day, time(hour, minute), tzinfo=zone).astimezone(UTC)


@pytest.fixture
def at(simulator: Any, clean: None) -> Iterator[Any]:
    simulator.reset()
    simulator.set_scenario(Scenario.from_dict({}))
    yield simulator
    simulator.release()


@pytest.fixture
def promotional(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AT_SENDER_KIND", "promotional")
    get_settings.cache_clear()
    yield
    monkeypatch.delenv("AT_SENDER_KIND")
    get_settings.cache_clear()


def clock_at(monkeypatch: pytest.MonkeyPatch, instant: datetime) -> None:
    monkeypatch.setattr(cycle_items, "now", lambda: instant)
    monkeypatch.setattr(planning, "now", lambda: instant)


def new_cycle(session: Any, phones: list[str], message: str = TEXT, **windows: str) -> int:
    return plan_new_cycle(
        session, [{"phone": phone, "status": ContactStatus.NEW} for phone in phones], message, **windows
    )


def reach_opening(session: Any, monkeypatch: pytest.MonkeyPatch, cycle_id: int, opening: datetime) -> None:
    clock_at(monkeypatch, opening + timedelta(seconds=1))
    make_items_due(session, cycle_id)


def sent_texts(at: Any) -> dict[str, str]:
    """Each number AT was asked to send to, and its text."""
    requests = at.requests("/version1/messaging")
    return {to: r["form"]["message"] for r in requests for to in r["form"]["to"].split(",")}


# -- a promotional sender id -----------------------------------------------------------------------------------


def test_a_promotional_sms_to_kenya_waits_for_8_to_18_eat_and_carries_the_opt_out(
    session: Any, at: Any, promotional: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock_at(monkeypatch, local(NAIROBI, 19))
    cycle_id = new_cycle(session, [KENYAN])
    opening = local(NAIROBI, 8, days=1)
    assert item_windows(session, cycle_id) == [(ItemState.PENDING, True, opening)]

    assert cycles.dispatch_sms(cycle_id, budget_seconds=5) == "idle"
    assert at.requests("/version1/messaging") == []

    reach_opening(session, monkeypatch, cycle_id, opening)
    assert cycles.dispatch_sms(cycle_id, budget_seconds=5) == "idle"
    assert sent_texts(at) == {KENYAN: f"{TEXT} {OPT_OUT}"}
    session.expire_all()
    assert session.scalar(select(Message.text)) == f"{TEXT} {OPT_OUT}"
    assert [state for state, _w, _d in item_windows(session, cycle_id)] == [ItemState.SENT]


def test_a_promotional_sms_to_nigeria_waits_out_the_ban_from_20_to_8_without_kenyas_opt_out(
    session: Any, at: Any, promotional: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock_at(monkeypatch, local(LAGOS, 19))  # the ban starts at 20:00: sent at once, as it is
    sent_now = new_cycle(session, [NIGERIAN])
    assert cycles.dispatch_sms(sent_now, budget_seconds=5) == "idle"
    assert sent_texts(at) == {NIGERIAN: TEXT}

    clock_at(monkeypatch, local(LAGOS, 21))
    session.execute(update(Contact).values(status=ContactStatus.NEW))
    session.commit()
    later = shared_cycles.start_cycle(session, TEXT)
    cycles.plan_cycle(session, later)
    session.commit()
    assert item_windows(session, later) == [(ItemState.PENDING, True, local(LAGOS, 8, days=1))]


def test_the_stricter_of_sms_window_and_the_promotional_window_wins(
    session: Any, at: Any, promotional: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """17:00-21:00 and Kenya's 08:00-18:00 meet 17:00-18:00: at noon the SMS waits for 17:00, at 18:30 for
    the next day's 17:00."""
    clock_at(monkeypatch, local(NAIROBI, 12))
    noon = new_cycle(session, [KENYAN], sms_window="17:00-21:00")
    assert item_windows(session, noon) == [(ItemState.PENDING, True, local(NAIROBI, 17))]

    clock_at(monkeypatch, local(NAIROBI, 18, 30))
    session.execute(update(Contact).values(status=ContactStatus.NEW))
    evening = shared_cycles.start_cycle(session, TEXT, sms_window="17:00-21:00")
    cycles.plan_cycle(session, evening)
    session.commit()
    assert item_windows(session, evening) == [(ItemState.PENDING, True, local(NAIROBI, 17, days=1))]


def test_a_transactional_sender_id_sends_at_any_hour_without_the_opt_out(
    session: Any, at: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock_at(monkeypatch, local(NAIROBI, 23))
    cycle_id = new_cycle(session, [KENYAN, NIGERIAN])
    assert [waiting for _s, waiting, _d in item_windows(session, cycle_id)] == [False, False]
    assert cycles.dispatch_sms(cycle_id, budget_seconds=5) == "idle"
    assert sent_texts(at) == {KENYAN: TEXT, NIGERIAN: TEXT}


def test_the_opt_out_counts_in_the_parts_and_the_cost(session: Any, promotional: None) -> None:
    """150 characters are one part; with ` *456*9*5#` (10 more) they are 160, still one; 151 make two, for the
    Kenyan number only."""
    for length, kenyan_parts in ((150, 1), (151, 2)):
        session.execute(update(Contact).values(status=ContactStatus.OPTED_OUT))
        session.commit()
        phones = [f"+2547115{length:05d}", f"+23480350{length:05d}"]
        cycle_id = new_cycle(session, phones, message="x" * length)
        session.expire_all()
        plan = session.get(Cycle, cycle_id).plan
        assert plan["segments"]["parts"] == kenyan_parts, plan["segments"]
        assert plan["sms_parts_by_prefix"] == {"+254": kenyan_parts, "+234": 1}, plan


def test_the_opt_out_counts_for_a_text_with_placeholders(session: Any, promotional: None) -> None:
    session.execute(
        insert(Contact),
        [
            {"phone": KENYAN, "status": ContactStatus.NEW, "name": "Ann"},
            {"phone": NIGERIAN, "status": ContactStatus.NEW, "name": "Ann"},
        ],
    )
    message = "Dear {name}, " + "x" * (160 - len("Dear Ann, "))  # 160 with the name: one part
    cycle_id = shared_cycles.start_cycle(session, message)
    cycles.plan_cycle(session, cycle_id)
    session.commit()
    session.expire_all()
    assert session.get(Cycle, cycle_id).plan["sms_parts_by_prefix"] == {"+254": 2, "+234": 1}


# -- settings ----------------------------------------------------------------------------------------------------


def test_at_sender_kind_is_transactional_or_promotional() -> None:
    assert load_settings().at_sender_kind == "transactional"
    assert load_settings(at_sender_kind="promotional").promotional_opt_out_text == OPT_OUT
    with pytest.raises(SettingsError, match="AT_SENDER_KIND"):
        load_settings(at_sender_kind="marketing")
    with pytest.raises(SettingsError, match="PROMOTIONAL_OPT_OUT_TEXT"):
        load_settings(at_sender_kind="promotional", promotional_opt_out_text="  ")


def test_an_sms_window_that_never_meets_a_promotional_window_is_refused() -> None:
    with pytest.raises(SettingsError, match="SMS_WINDOW: 19:00-07:00 never meets the promotional window 08:00-18:00"):
        load_settings(at_sender_kind="promotional", sms_window="19:00-07:00")
    assert load_settings(sms_window="19:00-07:00").sms_window == "19:00-07:00"  # transactional: no promotional window


# -- DoNotDisturbRejection ------------------------------------------------------------------------------------


def test_a_do_not_disturb_rejection_waits_for_the_promotional_window_then_goes(
    session: Any, at: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transactional sender id AT treats as promotional (the simulator's `dnd_hours`, Nigeria's ban): the
    409 at 21:00 in Lagos sends the SMS back to wait for 08:00, not failed; at 08:00 AT takes it."""
    at.set_scenario(Scenario(numbers={NIGERIAN: Rule(dnd_hours="20:00-08:00")}))
    sim_now = at.state.wall_clock()
    evening = datetime.combine(sim_now.astimezone(LAGOS).date() + timedelta(days=1), time(21), tzinfo=LAGOS)
    at.advance_clock((evening - sim_now).total_seconds())  # AT's clock and ours at 21:00 in Lagos
    clock_at(monkeypatch, evening.astimezone(UTC))
    cycle_id = new_cycle(session, [NIGERIAN])
    assert cycles.dispatch_sms(cycle_id, budget_seconds=5) == "idle"

    assert at.requests("/version1/messaging")[0]["status"] == 409
    opening = evening.astimezone(UTC) + timedelta(hours=11)  # 08:00 in Lagos
    assert item_windows(session, cycle_id) == [(ItemState.PENDING, True, opening)]
    error = session.scalar(select(CycleItem.error))
    assert error is not None and "DoNotDisturbRejection" in error, error
    assert session.scalar(select(Contact.status)) is ContactStatus.NEW  # the contact is not moved

    at.advance_clock(11 * 3600 + 1)
    reach_opening(session, monkeypatch, cycle_id, opening)
    assert cycles.dispatch_sms(cycle_id, budget_seconds=5) == "idle"
    assert [r["status"] for r in at.requests("/version1/messaging")] == [409, 201]
    assert [state for state, _w, _d in item_windows(session, cycle_id)] == [ItemState.SENT]


def test_a_second_do_not_disturb_rejection_fails_the_item_saying_why(
    session: Any, at: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    at.set_scenario(Scenario(numbers={NIGERIAN: Rule(send_status=409)}))
    clock_at(monkeypatch, local(LAGOS, 21))
    cycle_id = new_cycle(session, [NIGERIAN])
    assert cycles.dispatch_sms(cycle_id, budget_seconds=5) == "idle"
    reach_opening(session, monkeypatch, cycle_id, local(LAGOS, 8, days=1))
    assert cycles.dispatch_sms(cycle_id, budget_seconds=5) == "idle"

    assert len(at.requests("/version1/messaging")) == 2
    session.expire_all()
    state, error = session.execute(select(CycleItem.state, CycleItem.error)).one()
    assert state is ItemState.FAILED
    assert "DoNotDisturbRejection again" in error, error
    assert cycles.dispatch_sms(cycle_id, budget_seconds=5) == "idle"
    assert len(at.requests("/version1/messaging")) == 2  # not sent a third time


# -- where a cycle enters ----------------------------------------------------------------------------------------


def test_a_cycle_sms_window_that_never_meets_a_promotional_window_is_a_400(
    client: Any, session: Any, promotional: None
) -> None:
    body = {"message": "hi", "sms_window": "19:00-07:00"}
    response = client.post("/api/cycles", json=body, headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert response.status_code == 400, response.json
    assert response.json["error"].startswith(
        "field sms_window: 19:00-07:00 never meets the promotional window 08:00-18:00"
    )
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(Cycle)) == 0


def test_a_message_the_opt_out_takes_past_the_part_cap_is_refused(session: Any, promotional: None) -> None:
    """1530 GSM-7 characters are the 10 parts allowed; the opt-out makes them 11."""
    with pytest.raises(shared_cycles.CycleError, match="message with the opt-out is 11 SMS parts"):
        shared_cycles.start_cycle(session, "x" * 1530)
    assert shared_cycles.check_message("x" * 1520) == "x" * 1520  # 1530 with it: 10 parts


def test_a_batch_with_one_refused_number_sends_the_others(
    session: Any, at: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AT answers the whole request HTTP 409 when one recipient is refused (at-api.md §2.2); the others went."""
    other = "+2348034000002"
    at.set_scenario(Scenario(numbers={NIGERIAN: Rule(send_status=409)}))
    clock_at(monkeypatch, local(LAGOS, 21))
    cycle_id = new_cycle(session, [NIGERIAN, other])
    assert cycles.dispatch_sms(cycle_id, budget_seconds=5) == "idle"
    assert [r["status"] for r in at.requests("/version1/messaging")] == [409]
    assert [(state, waiting) for state, waiting, _d in item_windows(session, cycle_id)] == [
        (ItemState.PENDING, True),
        (ItemState.SENT, False),
    ]


def test_a_do_not_disturb_rejection_inside_the_promotional_window_waits_for_the_next_one(
    session: Any, at: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AT refused at 14:00 in Lagos, when Nigeria's window is open by our clock: not sent again at once (it
    would only be refused again) but at the next opening, 08:00 the next day."""
    at.set_scenario(Scenario(numbers={NIGERIAN: Rule(send_status=409)}))
    clock_at(monkeypatch, local(LAGOS, 14))
    cycle_id = new_cycle(session, [NIGERIAN])
    assert cycles.dispatch_sms(cycle_id, budget_seconds=5) == "idle"
    assert item_windows(session, cycle_id) == [(ItemState.PENDING, True, local(LAGOS, 8, days=1))]


def test_a_one_off_promotional_sms_to_kenya_carries_the_opt_out(promotional: None, client: Any, session: Any) -> None:
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    for phone in (KENYAN, NIGERIAN):
        response = client.post("/communicate", json={"to": phone, "message": TEXT}, headers=headers)
        assert response.status_code == 202, response.json
    session.expire_all()
    texts = dict(session.execute(select(Message.phone, Message.text)).all())
    assert texts == {KENYAN: f"{TEXT} {OPT_OUT}", NIGERIAN: TEXT}


# -- the window arithmetic -----------------------------------------------------------------------------------


def test_windows_in_two_zones_open_together_where_both_are_open() -> None:
    """06:00-10:00 in Lagos (05:00-09:00 UTC) and 08:00-18:00 in Nairobi (05:00-15:00 UTC): 05:00 UTC."""
    morning, office = parse_window("06:00-10:00"), parse_window("08:00-18:00")
    limits = [(morning, LAGOS), (office, NAIROBI)]
    day = datetime(2026, 12, 7, tzinfo=UTC)
    assert next_common_opening(limits, day) == day.replace(hour=5)
    assert next_common_opening(limits, day.replace(hour=6)) == day.replace(hour=6)  # open: now
    assert next_common_opening(limits, day.replace(hour=9)) == day.replace(hour=5) + timedelta(days=1)
    assert next_closing(limits, day.replace(hour=6)) == day.replace(hour=9)  # Lagos's 10:00 comes first
    assert next_common_opening([(parse_window("18:00-20:00"), NAIROBI), (office, NAIROBI)], day) is None


def test_a_do_not_disturb_rejection_where_no_promotional_window_is_known_fails_saying_so(
    session: Any, at: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    american = "+12125550100"
    at.set_scenario(Scenario(numbers={american: Rule(send_status=409)}))
    clock_at(monkeypatch, local(LAGOS, 21))
    cycle_id = new_cycle(session, [american])
    assert cycles.dispatch_sms(cycle_id, budget_seconds=5) == "idle"
    session.expire_all()
    state, error = session.execute(select(CycleItem.state, CycleItem.error)).one()
    assert state is ItemState.FAILED
    assert error.startswith("DoNotDisturbRejection (409)") and "no promotional window is known" in error, error


def test_reach_cycle_show_and_the_dashboard_say_a_promotional_sender_id_holds_sms_too(
    promotional: None, client: Any, session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock_at(monkeypatch, local(NAIROBI, 19))
    cycle_id = new_cycle(session, [KENYAN])
    assert cycle_report.report(session, cycle_id)["sender_kind"] == "promotional"
    result = CliRunner().invoke(cli, ["cycle", "show", str(cycle_id)], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    held = "waiting    1 items held for their send window (SMS always, calls always, local time;"
    assert f"{held} promotional sender id: Kenya 08:00-18:00, Nigeria 08:00-20:00 too)" in result.output

    assert sign_in(client, API_TOKEN).status_code == 303
    page = client.get(f"/dashboard/cycles/{cycle_id}").get_data(as_text=True)
    shown = re.search(r'data-field="windows">([^<]*)<', page)
    assert shown is not None, page
    assert " ".join(shown[1].split()) == (
        "SMS always, calls always (each customer's local time; promotional sender id: Kenya 08:00-18:00,"
        " Nigeria 08:00-20:00 too); 1 waiting for their window"
    )


def test_a_dry_run_counts_the_opt_out(promotional: None, client: Any, session: Any) -> None:
    session.execute(insert(Contact), [{"phone": KENYAN, "status": ContactStatus.NEW}])
    session.commit()
    body = {"message": "x" * 151, "dry_run": True}
    response = client.post("/api/cycles", json=body, headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert response.status_code == 200, response.json
    assert response.json["segments"] == {"encoding": "GSM-7", "parts": 2}, response.json
