"""Break things for real and count: a worker SIGKILLed mid-drain, Postgres stopped for 30 s, Redis
SIGKILLed mid-load, two beats at once, AT failing. Each test asserts lost 0 and duplicated 0 and prints
its figures (`pytest -m fault -s`); RELIABILITY.md quotes them.

Every test runs on a stack of its own (tests/stack.py `fault_stack`): its own PostgreSQL cluster and
Redis (AOF, fsync always), receiver, simulator and Celery processes, so nothing shared is touched.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import func, insert, select, update

from shared import cycles as shared_cycles
from shared import schedules
from shared.inbox import CLAIMS, INBOX
from shared.models import (
    Channel,
    Contact,
    ContactStatus,
    Cycle,
    CycleItem,
    CycleState,
    DlrEvent,
    ItemState,
    Message,
    RawCallback,
)
from simulator import wire
from simulator.scenario import Scenario
from tests.conftest import API_TOKEN, WEBHOOK_TOKEN, wait_for
from tests.services import BeatProcess
from tests.stack import Stack, fault_stack

pytestmark = [pytest.mark.worker, pytest.mark.fault]

DEAD_LETTERS = "reach:inbox:dead"


# -- helpers ----------------------------------------------------------------------------------------------------


def seed_sent_messages(stack: Stack, count: int) -> list[dict[str, str]]:
    """`count` contacts each with one SMS AT accepted (status pending); returns a `Success` report for each."""
    phones = [f"+2547{i:08d}" for i in range(count)]
    at_ids = [wire.new_message_id() for _ in phones]
    with stack.session() as session, session.begin():
        contact_ids = session.scalars(
            insert(Contact).returning(Contact.id, sort_by_parameter_order=True),
            [{"phone": p, "status": ContactStatus.PENDING} for p in phones],
        ).all()
        message_ids = session.scalars(
            insert(Message).returning(Message.id, sort_by_parameter_order=True),
            [
                {"contact_id": c, "phone": p, "text": "hello", "send_state": "sent", "at_message_id": a}
                for c, p, a in zip(contact_ids, phones, at_ids, strict=True)
            ],
        ).all()
        session.execute(
            update(Contact), [{"id": c, "last_message_id": m} for c, m in zip(contact_ids, message_ids, strict=True)]
        )
    return [wire.dlr(a, "Success", p) for a, p in zip(at_ids, phones, strict=True)]


class CallbackPoster:
    """Posts callbacks as AT does: each one again until it is answered 200, from a few threads, at most
    `rate` per second overall. Records every answer: status and, for a 200, the inbox id it was given."""

    def __init__(self, url: str, forms: list[dict[str, str]], *, threads: int = 4, rate: float | None = None) -> None:
        self.url = f"{url}?token={WEBHOOK_TOKEN}"
        self.forms = forms
        self.rate = rate
        self.answers: list[tuple[int | str, str | None]] = []
        self._todo: queue.Queue[int] = queue.Queue()
        for index in range(len(forms)):
            self._todo.put(index)
        self._start = time.monotonic()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        http = requests.Session()
        while True:
            try:
                index = self._todo.get_nowait()
            except queue.Empty:
                return
            if self.rate:
                time.sleep(max(0.0, self._start + index / self.rate - time.monotonic()))
            while not self._post(http, self.forms[index]):
                time.sleep(0.2)  # AT retries a callback that was not answered 200

    def _post(self, http: requests.Session, form: dict[str, str]) -> bool:
        try:
            response = http.post(self.url, data=form, timeout=30)
        except requests.RequestException as exc:
            self.answers.append((type(exc).__name__, None))
            return False
        self.answers.append((response.status_code, response.json().get("id") if response.ok else None))
        return response.status_code == 200

    def accepted(self) -> int:
        return sum(1 for status, _ in self.answers if status == 200)

    def join(self, timeout: float = 120) -> None:
        for thread in self._threads:
            thread.join(timeout)
        assert not any(t.is_alive() for t in self._threads), "callbacks still being posted"

    def accepted_ids(self) -> set[str]:
        return {item_id for status, item_id in self.answers if status == 200 and item_id}


def applied_reports(stack: Stack) -> int:
    with stack.session() as session:
        return session.scalar(select(func.count()).select_from(DlrEvent).where(DlrEvent.applied_at.is_not(None))) or 0


def queue_settled(stack: Stack) -> bool:
    return stack.redis.llen(INBOX) == 0 and stack.redis.zcard(CLAIMS) == 0


def assert_each_report_applied_once(stack: Stack, poster: CallbackPoster, forms: list[dict[str, str]]) -> int:
    """Lost 0 and duplicated 0: every callback answered 200 is recorded once, every report applied once.
    Returns how many callbacks were kept although the receiver could not confirm it (absorbed as duplicates)."""
    assert queue_settled(stack) and stack.redis.llen(DEAD_LETTERS) == 0
    accepted = poster.accepted_ids()
    assert len(accepted) == poster.accepted()  # one inbox id per 200
    with stack.session() as session:
        recorded = set(session.scalars(select(RawCallback.inbox_id)))
        assert accepted <= recorded, f"lost {len(accepted - recorded)} callbacks that were answered 200"
        events = session.execute(select(DlrEvent.at_message_id, func.count()).group_by(DlrEvent.at_message_id)).all()
        assert len(events) == len(forms) and {n for _, n in events} == {1}
        assert session.scalar(select(func.count()).select_from(DlrEvent).where(DlrEvent.applied_at.is_(None))) == 0
        statuses = Counter(session.scalars(select(Message.status)))
        assert statuses == {"Success": len(forms)}
        contacts = Counter(session.scalars(select(Contact.status)))
        assert contacts == {ContactStatus.ACTIVE: len(forms)}
    return len(recorded) - len(accepted)


def log_lines(stack: Stack, needle: str) -> list[str]:
    return [line for worker in stack.workers for line in worker.log().splitlines() if needle in line]


# -- a worker killed ---------------------------------------------------------------------------------------------

REPORTS = 5000


def test_worker_killed_mid_drain_applies_every_report_once(tmp_path: Path) -> None:
    with fault_stack(tmp_path, Scenario(), drain_batch_size=50, drain_stale_seconds=5) as stack:
        forms = seed_sent_messages(stack, REPORTS)
        first = stack.start_worker("first")
        poster = CallbackPoster(f"{stack.receiver_url}/dlr", forms)
        wait_for(lambda: applied_reports(stack) >= REPORTS // 5, timeout=60, what="a fifth applied")
        first.kill()
        killed_at = time.monotonic()
        applied_at_kill, queued_at_kill = applied_reports(stack), poster.accepted()
        in_claims = stack.redis.zcard(CLAIMS)
        poster.join()  # the rest arrive while no worker runs
        stack.start_worker("second")
        restarted_at = time.monotonic()
        wait_for(
            lambda: applied_reports(stack) == REPORTS and queue_settled(stack),
            timeout=90,
            interval=0.5,
            what="every report applied after the restart",
        )
        dead_for, recovered = restarted_at - killed_at, time.monotonic() - restarted_at
        assert applied_at_kill < REPORTS, "the kill came too late to interrupt anything"
        extra = assert_each_report_applied_once(stack, poster, forms)
        assert extra == 0 and all(status == 200 for status, _ in poster.answers)
        restored = log_lines(stack, "restored")
        restored_text = restored[-1].split(": ", 1)[-1] if restored else "none restored"
        print(
            f"\n[worker-kill] {REPORTS} DLRs posted, {queued_at_kill} answered 200 and {applied_at_kill} applied "
            f"when the worker's process group was SIGKILLed; {in_claims} drain batch(es) in flight; no worker for "
            f"{dead_for:.1f} s; all applied {recovered:.1f} s after the restart; {restored_text}; lost 0, duplicated 0"
        )


# -- Postgres down -----------------------------------------------------------------------------------------------

OUTAGE_SECONDS = 30.0


def readiness(stack: Stack) -> tuple[int, dict[str, Any]]:
    response = requests.get(f"{stack.receiver_url}/readyz", timeout=10)
    return response.status_code, response.json()


def test_postgres_down_callbacks_are_kept_and_applied_once(tmp_path: Path) -> None:
    reports = 1600
    with fault_stack(tmp_path, Scenario(), drain_stale_seconds=5) as stack:
        assert stack.postgres is not None
        forms = seed_sent_messages(stack, reports)
        stack.start_worker("worker")
        # Spread over the outage: 40 per second for 40 s.
        poster = CallbackPoster(f"{stack.receiver_url}/dlr", forms, threads=2, rate=40)
        wait_for(lambda: applied_reports(stack) >= 100, timeout=30, what="some applied before the outage")
        stack.engine.dispose()
        stack.postgres.stop("immediate")  # a crash: recovery from WAL at the next start
        down_at = time.monotonic()
        accepted_before = poster.accepted()
        readyz = []
        while time.monotonic() - down_at < OUTAGE_SECONDS:
            readyz.append(readiness(stack))
            time.sleep(1)
        depth_at_return = stack.redis.llen(INBOX)
        accepted_during = poster.accepted() - accepted_before
        stack.postgres.start()
        back_at = time.monotonic()
        poster.join()
        wait_for(
            lambda: applied_reports(stack) == reports and queue_settled(stack),
            timeout=60,
            interval=0.5,
            what="every report applied after Postgres returned",
        )
        caught_up = time.monotonic() - back_at
        assert all(status == 200 for status, _ in poster.answers), Counter(s for s, _ in poster.answers)
        assert readyz and all(code == 503 and body["database"] == "down" for code, body in readyz), readyz[:3]
        assert readiness(stack)[0] == 200
        assert accepted_during > 0 and depth_at_return > 0
        assert assert_each_report_applied_once(stack, poster, forms) == 0
        print(
            f"\n[postgres-down] Postgres crashed (pg_ctl -m immediate) for {OUTAGE_SECONDS:.0f} s; {accepted_during} "
            f"DLRs answered 200 meanwhile, {depth_at_return} waiting in Redis when it returned; /readyz 503 "
            f"'database: down' {len(readyz)}/{len(readyz)} polls; all {reports} applied {caught_up:.1f} s after "
            f"the restart; lost 0, duplicated 0"
        )


# -- Redis down --------------------------------------------------------------------------------------------------


def test_redis_killed_mid_load_loses_no_acknowledged_callback(tmp_path: Path) -> None:
    reports = 3000
    with fault_stack(tmp_path, Scenario(), drain_stale_seconds=5) as stack:
        assert stack.redis_server is not None
        forms = seed_sent_messages(stack, reports)
        stack.start_worker("worker")
        poster = CallbackPoster(f"{stack.receiver_url}/dlr", forms, rate=400)
        wait_for(lambda: poster.accepted() >= reports // 3, timeout=60, what="a third accepted")
        stack.redis_server.kill()
        down_at = time.monotonic()
        accepted_at_kill = poster.accepted()
        readyz = []
        while time.monotonic() - down_at < 5:
            readyz.append(readiness(stack))
            time.sleep(0.5)
        accepted_while_down = poster.accepted() - accepted_at_kill
        stack.redis_server.start()  # same port and directory: reloads the append-only file
        outage = time.monotonic() - down_at
        poster.join()
        wait_for(
            lambda: applied_reports(stack) == reports and queue_settled(stack),
            timeout=90,
            interval=0.5,
            what="every report applied after Redis returned",
        )
        answers = Counter(status for status, _ in poster.answers)
        assert set(answers) <= {200, 503}, answers  # never a 200 for a callback Redis did not keep
        assert answers[503] > 0, "no callback arrived while Redis was down"
        assert all(code == 503 and body["broker"] == "down" for code, body in readyz), readyz[:3]
        kept_anyway = assert_each_report_applied_once(stack, poster, forms)
        assert kept_anyway <= answers[503]
        print(
            f"\n[redis-down] redis-server (appendonly yes, appendfsync always) SIGKILLed after {accepted_at_kill} "
            f"DLRs were answered 200, restarted from its AOF {outage:.1f} s later; {answers[503]} answers 503 "
            f"meanwhile ({accepted_while_down} 200s while down), retried like AT; {answers[200]} answered 200 = "
            f"{answers[200]} recorded; {reports} reports applied once ({kept_anyway} callbacks kept although "
            f"answered 503, absorbed); lost 0, duplicated 0"
        )


# -- two beats ---------------------------------------------------------------------------------------------------

SPEED = 20.0  # a simulated minute lasts 3 real seconds
SIMULATED_MINUTES = 10


def test_two_beats_for_ten_simulated_minutes_start_one_cycle_per_period(tmp_path: Path) -> None:
    real_now = datetime.now(UTC).replace(second=0, microsecond=0)
    sim_start = real_now + timedelta(seconds=30)  # half-way through a minute: the first period is 30 s away
    clock_file = tmp_path / "clock"
    phones = [f"+25471100000{i}" for i in range(3)]
    env = {
        "schedule_tick_seconds": 0.5,  # 10 simulated seconds
        "send_rate_per_second": 1000,  # dispatchers never wait for the rate budget while ticks queue behind them
        "reach_test_clock_start": sim_start.isoformat(),
        "reach_test_clock_speed": SPEED,
        "reach_test_clock_span": SIMULATED_MINUTES * 60,
        "reach_test_clock_file": clock_file,
    }
    with fault_stack(tmp_path, Scenario(), **env) as stack:
        with stack.session() as session, session.begin():
            session.execute(
                insert(Contact),
                [{"phone": p, "status": ContactStatus.NEW, "channel_preference": Channel.SMS} for p in phones],
            )
            schedule = schedules.add_schedule(session, "every minute", "* * * * *", "Tick tock")
            schedule.created_at = sim_start
            schedule_id = schedule.id
        for name in ("worker-a", "worker-b"):
            stack.start_worker(name, app="tests.fast_clock_app", beat=False)
        beats = [BeatProcess(tmp_path, name, stack.env, app="tests.fast_clock_app") for name in ("beat-a", "beat-b")]
        try:
            clock_file.write_text(str(time.time()))  # the simulated clock starts now, for every process
            wait_for(
                lambda: time.time() - float(clock_file.read_text()) > SIMULATED_MINUTES * 60 / SPEED + 1,
                timeout=60,
                interval=0.5,
                what="ten simulated minutes",
            )
        finally:
            for beat in beats:
                beat.stop()
        expected = {
            schedules.period_key(schedule, sim_start.replace(second=0) + timedelta(minutes=m))
            for m in range(1, SIMULATED_MINUTES + 1)
        }

        # A period due while the previous minute's cycle still dispatched (a slow machine) is skipped and
        # recorded under its key: still one row per period, and the contacts got one SMS per cycle run.
        def all_finished() -> bool:
            with stack.session() as session:
                states = session.scalars(select(Cycle.state)).all()
            return bool(states) and all(s in {CycleState.DONE, CycleState.SKIPPED} for s in states)

        wait_for(all_finished, timeout=60, interval=0.5, what="every cycle done or skipped")
        with stack.session() as session:
            rows = session.execute(select(Cycle.period_key, Cycle.state).where(Cycle.schedule_id == schedule_id))
            keys = Counter(key for key, _ in rows.all())
            run = session.scalar(select(func.count()).where(Cycle.state == CycleState.DONE))
            assert session.scalar(select(func.count()).select_from(Cycle)) == SIMULATED_MINUTES
        assert set(keys) == expected and set(keys.values()) == {1}, keys
        assert run >= SIMULATED_MINUTES // 2, f"{SIMULATED_MINUTES - run} of {SIMULATED_MINUTES} periods skipped"
        sent = accepted_sms_per_number(stack)
        assert sent == dict.fromkeys(phones, run), sent
        ticks = [line for line in log_lines(stack, "tests.fast_clock.tick[") if "succeeded" in line]
        started = [line for line in ticks if not line.rstrip().endswith("[]")]
        sent_ticks = sum(beat.log().count("Scheduler: Sending due task schedules") for beat in beats)
        print(
            f"\n[two-beats] 2 beat processes + 2 workers, {SIMULATED_MINUTES} simulated minutes at {SPEED:.0f}x "
            f"(cron '* * * * *', each beat ticking every 10 simulated s); {sent_ticks} ticks sent, {len(ticks)} run, "
            f"{len(started)} started a cycle; {len(keys)} cycles for {len(expected)} periods ({run} run, "
            f"{SIMULATED_MINUTES - run} skipped while the previous one dispatched), each contact {run} SMS; "
            "missed 0, duplicated 0"
        )


def accepted_sms_per_number(stack: Stack) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for request in stack.simulator.requests("/version1/messaging"):
        if request.get("status") == 201:
            counts.update(request["form"]["to"].split(","))
    return dict(counts)


def accepted_calls_per_number(stack: Stack) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for request in stack.simulator.requests("/call"):
        if request.get("status") == 200:
            counts.update(str(request["form"]["to"]).split(","))
    return dict(counts)


# -- AT failing --------------------------------------------------------------------------------------------------


def test_at_errors_and_timeouts_are_retried_and_nothing_is_sent_twice(tmp_path: Path) -> None:
    faults = [
        {"path": path, "status": status, "count": 1}
        for path in ("/version1/messaging", "/call")
        for status in (429, 500, "timeout")
    ]
    scenario = Scenario.from_dict({"faults": faults, "timeout_seconds": 3})
    sms_phones = [f"+25472200{i:04d}" for i in range(12)]
    voice_phones = [f"+25473300{i:04d}" for i in range(3)]
    one_off = "+254744000001"
    settings = {"at_timeout_connect": 1, "at_timeout_read": 1, "sms_batch_size": 4}
    with fault_stack(tmp_path, scenario, **settings) as stack:
        with stack.session() as session, session.begin():
            session.execute(
                insert(Contact),
                [{"phone": p, "status": ContactStatus.NEW} for p in sms_phones]
                + [{"phone": p, "status": ContactStatus.INACTIVE} for p in voice_phones],
            )
            cycle_id = shared_cycles.start_cycle(session, "Through the storm", "Through the storm, by voice")
        stack.start_worker("worker")
        started = time.monotonic()
        stack.app.extensions["reach"].celery.send_task("reach.cycle.plan", args=[cycle_id])

        def planned() -> bool:
            with stack.session() as session:
                return session.get(Cycle, cycle_id).state is not CycleState.PLANNING

        # The one-off number is a stranger until it is sent to: planned first, the cycle leaves it out.
        wait_for(planned, timeout=30, what="cycle planned")
        answer = requests.post(
            f"{stack.receiver_url}/communicate",
            json={"to": one_off, "message": "Just you"},
            headers={"Authorization": f"Bearer {API_TOKEN}"},
            timeout=10,
        )
        assert answer.status_code == 202, answer.text
        message_id = answer.json()["id"]

        def finished() -> bool:
            with stack.session() as session:
                cycle_done = session.get(Cycle, cycle_id).state is CycleState.DONE
                one_off_sent = session.get(Message, message_id).send_state == "sent"
            return cycle_done and one_off_sent

        wait_for(finished, timeout=120, interval=0.5, what="cycle and one-off send complete")
        took = time.monotonic() - started
        hit = Counter(str(r["fault"]) for r in stack.simulator.requests() if "fault" in r)
        assert hit == {"429": 2, "500": 2, "timeout": 2}, hit  # every fault was met
        assert accepted_sms_per_number(stack) == dict.fromkeys([*sms_phones, one_off], 1)
        assert accepted_calls_per_number(stack) == dict.fromkeys(voice_phones, 1)
        with stack.session() as session:
            items = Counter(
                session.execute(select(CycleItem.channel, CycleItem.state).where(CycleItem.cycle_id == cycle_id)).all()
            )
        assert items == {
            (Channel.SMS, ItemState.SENT): len(sms_phones),
            (Channel.VOICE, ItemState.DONE): len(voice_phones),
        }, items
        print(
            f"\n[at-faults] simulator answered {hit['429']}x429, {hit['500']}x500 and {hit['timeout']} timeouts "
            f"(SMS and calls); cycle of {len(sms_phones)} SMS + {len(voice_phones)} calls and a one-off /communicate "
            f"send all completed in {took:.1f} s; each number accepted by AT exactly once; lost 0, duplicated 0"
        )
