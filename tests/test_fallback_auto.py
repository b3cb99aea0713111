"""FALLBACK_AFTER_SECONDS=auto (issue 14, "Sooner"): a `same_cycle` fallback waits, per mobile network, the P95
of how long that network's final delivery reports took lately, bounded by FALLBACK_AFTER_MIN_SECONDS and
FALLBACK_AFTER_MAX_SECONDS.

The figures (shared/report_delays.py) on both databases Reach runs on; then end to end: a real worker with
beat, Postgres and the simulator, whose networks report at different paces (a delay profile per prefix).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, insert, select, text
from sqlalchemy.orm import Session

from shared import report_delays
from shared.models import Call, Contact, ContactStatus, CycleItem, Message
from shared.settings import Settings, SettingsError, load_settings
from simulator.scenario import Scenario
from tests.conftest import API_TOKEN, wait_for
from tests.services import WorkerProcess
from tests.test_dashboard import sign_in
from tests.test_same_cycle_fallback import add_contacts, start, state_of

SAFARICOM, AIRTEL, TELKOM, TANZANIA = "63902", "63903", "63907", "64002"
MIN_SAMPLE = report_delays.MIN_SAMPLE


# -- the settings ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["auto", "AUTO", " auto "])
def test_auto_is_a_fallback_after_seconds(raw: str) -> None:
    assert load_settings(fallback_after_seconds=raw).fallback_after_seconds == "auto"


def test_the_bounds_of_auto_default_to_a_minute_and_an_hour() -> None:
    settings = load_settings()
    assert (settings.fallback_after_min_seconds, settings.fallback_after_max_seconds) == (60, 3600)


def test_a_minimum_above_the_maximum_is_refused_naming_both() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(fallback_after_min_seconds=600, fallback_after_max_seconds=300)
    assert "FALLBACK_AFTER_MIN_SECONDS" in str(caught.value) and "FALLBACK_AFTER_MAX_SECONDS" in str(caught.value)


# -- the figures, on SQLite and Postgres ----------------------------------------------------------------------


def reported(session: Session, network: str | None, delays: list[float], ago: timedelta = timedelta(hours=1)) -> None:
    """Messages AT accepted `ago`, each with its final report `delays[i]` seconds later."""
    sent = datetime.now(UTC) - ago
    n = session.scalar(select(Message.id).order_by(Message.id.desc()).limit(1)) or 0
    rows = [
        {
            "phone": f"+2547{n + i:08d}",
            "text": "hi",
            "send_state": "sent",
            "at_message_id": f"ATXid_{n + i}",
            "status": "Success",
            "status_rank": 50,
            "network_code": network,
            "created_at": sent,
            "status_at": sent + timedelta(seconds=delay),
        }
        for i, delay in enumerate(delays, start=1)
    ]
    session.execute(insert(Message), rows)


def contact(session: Session, phone: str, network: str | None) -> Contact:
    row = Contact(phone=phone, status=ContactStatus.PENDING, last_network_code=network)
    session.add(row)
    session.flush()
    return row


def auto(**bounds: int) -> Settings:
    return load_settings(fallback_after_seconds="auto", **bounds)


@pytest.fixture
def db(dialect_engine: Engine) -> Iterator[Session]:
    with Session(dialect_engine) as session:
        yield session


def test_each_network_gets_its_p50_p95_and_wait(db: Session) -> None:
    reported(db, SAFARICOM, [float(s) for s in range(1, 101)])  # 1..100 s
    reported(db, AIRTEL, [300.0] * 90 + [1000.0] * 10)
    reported(db, TELKOM, [5000.0] * (MIN_SAMPLE - 1))  # too few to say anything
    reported(db, TANZANIA, [9.0] * 50, ago=timedelta(days=2))  # older than the window
    reported(db, None, [7.0] * 50)  # no network named: counted nowhere
    db.commit()

    report_delays.refresh(db)
    db.commit()
    figures = {f.network_code: f for f in report_delays.figures(db)}
    settings = auto(fallback_after_min_seconds=60)
    assert (figures[SAFARICOM].samples, figures[SAFARICOM].p50, figures[SAFARICOM].p95) == (100, 50, 95)
    assert (figures[AIRTEL].p50, figures[AIRTEL].p95) == (300, 1000)
    assert figures[TELKOM].samples == MIN_SAMPLE - 1
    assert TANZANIA not in figures
    pooled = figures[report_delays.ALL]
    assert pooled.samples == 100 + 100 + MIN_SAMPLE - 1

    waits = report_delays.Waits.load(db, settings)
    assert waits.seconds_for(SAFARICOM) == 95
    assert waits.seconds_for(AIRTEL) == 1000
    assert waits.seconds_for(TELKOM) == waits.seconds_for(None) == min(3600, pooled.p95)  # the pooled figure
    assert report_delays.Waits.load(db, auto(fallback_after_max_seconds=500)).seconds_for(AIRTEL) == 500
    assert report_delays.Waits.load(db, auto(fallback_after_min_seconds=120)).seconds_for(SAFARICOM) == 120


def test_with_too_few_reports_anywhere_the_wait_is_the_maximum(db: Session) -> None:
    reported(db, SAFARICOM, [10.0] * (MIN_SAMPLE - 1))
    db.commit()
    report_delays.refresh(db)
    db.commit()
    waits = report_delays.Waits.load(db, auto(fallback_after_max_seconds=1800))
    assert waits.seconds_for(SAFARICOM) == waits.seconds_for(None) == 1800


def test_the_sample_is_the_newest_reports_of_each_network(db: Session) -> None:
    reported(db, SAFARICOM, [500.0] * report_delays.SAMPLE_PER_NETWORK, ago=timedelta(hours=3))
    reported(db, SAFARICOM, [20.0] * report_delays.SAMPLE_PER_NETWORK, ago=timedelta(hours=1))
    db.commit()
    report_delays.refresh(db)
    db.commit()
    (safaricom,) = [f for f in report_delays.figures(db) if f.network_code == SAFARICOM]
    assert (safaricom.samples, safaricom.p95) == (report_delays.SAMPLE_PER_NETWORK, 20)


def test_a_contacts_items_wait_for_their_network(db: Session) -> None:
    reported(db, SAFARICOM, [100.0] * MIN_SAMPLE)
    reported(db, AIRTEL, [700.0] * MIN_SAMPLE)
    db.commit()
    report_delays.refresh(db)
    ids = {network: contact(db, phone, network).id for phone, network in [("+254711000001", SAFARICOM),
           ("+254731000001", AIRTEL), ("+254771000001", None)]}  # fmt: skip
    waits = report_delays.waits_by_contact(db, list(ids.values()), auto())
    assert waits == {ids[SAFARICOM]: 100, ids[AIRTEL]: 700, ids[None]: 700}  # no report yet: the pooled P95
    fixed = report_delays.waits_by_contact(db, list(ids.values()), load_settings(fallback_after_seconds=42))
    assert set(fixed.values()) == {42}


# -- end to end ----------------------------------------------------------------------------------------------

#: Two networks by prefix in the simulator; each report comes `delay` after the previous one (Sent, Success).
FAST, SLOW = "+25471100", "+25473300"
FAST_DELAY, SLOW_DELAY = 1.0, 6.0
FAST_P95, SLOW_P95 = 2 * FAST_DELAY, 2 * SLOW_DELAY


@pytest.fixture(scope="module")
def worker(environment: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    env = {
        **os.environ,
        "FALLBACK_AFTER_SECONDS": "auto",
        "FALLBACK_AFTER_MIN_SECONDS": "1",
        "FALLBACK_AFTER_MAX_SECONDS": "60",
        "MAX_CALLS_IN_FLIGHT": "100",  # every fallback call of the test placed as soon as it is due
    }
    process = WorkerProcess(tmp_path_factory.mktemp("worker"), "fallback-auto", env)
    yield process
    process.stop()


def profile(dlr: list[Any]) -> Scenario:
    """Safaricom reports fast, Airtel slowly (at-api.md §3 networkCodes), each on its own prefix."""
    return Scenario.from_dict(
        {
            "default": {"dlr": dlr, "voice": "answered"},
            "numbers": {
                f"{FAST}*": {"network_code": SAFARICOM, "delay": FAST_DELAY},
                f"{SLOW}*": {"network_code": AIRTEL, "delay": SLOW_DELAY},
            },
        }
    )


def test_calls_come_soon_after_each_networks_p95_not_before(live, receiver, session) -> None:
    people = {f"{prefix}{i:04d}": f"P{i}" for prefix in (FAST, SLOW) for i in range(MIN_SAMPLE)}
    add_contacts(receiver, people)
    # First the networks' pace is learned: every SMS delivered, each network at its own speed.
    live.set_scenario(profile(["Sent", "Success"]))
    first = start(receiver, fallback="same_cycle")
    wait_for(lambda: state_of(session, first) == "done", timeout=60, what="first cycle done")

    def learned() -> dict[str, report_delays.NetworkDelay]:
        session.expire_all()
        return {f.network_code: f for f in report_delays.figures(session)}

    wait_for(
        lambda: (
            {c: f.samples for c, f in learned().items() if c != report_delays.ALL}
            == {SAFARICOM: MIN_SAMPLE, AIRTEL: MIN_SAMPLE}
        ),
        timeout=20,
        what="figures refreshed by housekeeping",
    )
    figures = learned()
    assert FAST_P95 <= figures[SAFARICOM].p95 < FAST_P95 + 2
    assert SLOW_P95 <= figures[AIRTEL].p95 < SLOW_P95 + 2
    assert session.scalars(select(Call)).all() == []  # every Success came before its network's wait

    # Then nobody's SMS is delivered: each contact is called once its network's P95 has passed, not before.
    live.set_scenario(profile(["Sent"]))
    second = start(receiver, fallback="same_cycle")
    wait_for(lambda: state_of(session, second) == "done", timeout=60, what="second cycle done")
    session.expire_all()
    sms = {m.phone: m for m in session.scalars(select(Message).where(Message.cycle_id == second))}
    calls = {c.phone: c for c in session.scalars(select(Call).where(Call.cycle_id == second))}
    items = {i.contact_id: i for i in session.scalars(select(CycleItem).where(CycleItem.cycle_id == second))}
    assert sorted(calls) == sorted(people)
    for phone, call in calls.items():
        p95 = figures[SAFARICOM if phone.startswith(FAST) else AIRTEL].p95
        # The SMS item became a due call (its fallback_at) once the P95 had passed: housekeeping runs every 2 s.
        due = (items[call.contact_id].fallback_at - sms[phone].created_at).total_seconds()
        assert p95 <= due < p95 + 8, (phone, p95, due)  # the pooled P95 (the slow network's) is later
        placed = (call.created_at - sms[phone].created_at).total_seconds()
        assert due <= placed < due + 8, (phone, due, placed)


# -- where an operator sees them ------------------------------------------------------------------------------


def test_doctor_and_dashboard_show_each_networks_figures(session, client) -> None:
    from reach_cli.main import cli

    reported(session, SAFARICOM, [float(s) for s in range(1, 101)])
    session.commit()
    report_delays.refresh(session)
    session.commit()

    result = CliRunner().invoke(cli, ["doctor"])
    (line,) = [line for line in result.output.splitlines() if "fallback_wait" in line]
    assert "Safaricom" in line and "100 samples" in line and "P50 50 s" in line and "P95 95 s" in line, line

    sign_in(client, API_TOKEN)
    page = client.get("/dashboard").get_data(as_text=True)
    assert 'id="report-delays"' in page
    assert f'data-network="{SAFARICOM}"' in page and ">95 s<" in page


def test_doctor_names_auto_its_bounds_and_where_each_wait_comes_from(session, monkeypatch) -> None:
    from reach_cli.main import cli
    from shared.settings import get_settings

    reported(session, SAFARICOM, [float(s) for s in range(1, 101)])
    reported(session, AIRTEL, [3.0] * 5)
    session.commit()
    report_delays.refresh(session)
    session.commit()
    monkeypatch.setenv("FALLBACK_AFTER_SECONDS", "auto")
    get_settings.cache_clear()
    try:
        output = CliRunner().invoke(cli, ["doctor"]).output
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    (line,) = [line for line in output.splitlines() if "fallback_wait" in line]
    assert "FALLBACK_AFTER_SECONDS=auto within 60-3600 s" in line, line
    assert "Safaricom: 100 samples, P50 50 s, P95 95 s, wait 95 s (own P95)" in line, line
    assert "Airtel Kenya: 5 samples, P50 3.0 s, P95 3.0 s, wait 95 s (all networks' P95)" in line, line


def test_the_refresh_reads_an_index_never_all_messages(session) -> None:
    """One index probe per network to list them, one backward index range per network: a table of millions of
    messages costs what a few networks' newest reports cost."""
    for network in (SAFARICOM, AIRTEL, TELKOM):
        reported(session, network, [5.0] * 10_000, ago=timedelta(days=3))
    session.commit()
    session.execute(text("ANALYZE messages"))
    statement = report_delays.final_reports_query(SAFARICOM).compile(
        session.get_bind(), compile_kwargs={"literal_binds": True}
    )
    for query in (str(statement), report_delays.NETWORKS.text):
        plan = "\n".join(session.scalars(text(f"EXPLAIN {query}")))
        assert "ix_messages_final_reports" in plan and "Seq Scan" not in plan, plan
    session.rollback()
