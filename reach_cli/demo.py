"""`reach demo` (what `reach up --demo` runs): watch SMS, delivery reports and voice fallback happen.

Runs against a stack `reach up` started with the demo scenario (`demo_data/scenario.json`) on its
simulator, through the same code as production: contacts are imported with `shared.contacts`, cycles
started with `shared.cycles` and handed to the worker by task name (`reach_cli.cycles.send_tasks`), the
customer's STOP is posted to `/receiveSMS` as AT would post it. Then:

1. cycle 1 sends an SMS to every new contact; the simulator answers and posts delivery reports;
2. one customer texts STOP;
3. cycle 2 sends an SMS to the active contacts and calls the inactive and pending ones;
4. a contact added afterwards stays `new`; a summary shows every contact and each cycle's counts.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import click
import requests
from sqlalchemy import func, select

from reach_cli.common import echo, visible
from reach_cli.cycles import progress_line, send_tasks, table
from shared import cycle_report, cycles
from shared.contacts import contact_json
from shared.db import get_engine, session_scope
from shared.imports import import_contacts, rows_from_csv
from shared.models import Call, Contact, ContactStatus
from shared.settings import Settings
from shared.store import store_for
from shared.windows import ALWAYS

SMS_TEXT = "Hello from Reach: your statement is ready. Reply STOP to opt out."
VOICE_TEXT = "Hello from Reach. Your statement is ready; please check your messages."
#: The customer who texts STOP between the cycles, and the one added after them.
STOP_PHONE = "+254711000004"
LATE_CONTACT = {"phone": "+254711000015", "name": "Njeri"}
CYCLE_TIMEOUT_SECONDS = 60


class DemoError(click.ClickException):
    """The demo cannot run or did not finish; the message says why."""


def data_file(name: str) -> str:
    return str(resources.files("reach_cli") / "demo_data" / name)


def run_demo(settings: Settings) -> None:
    if not on_simulator(settings):
        raise DemoError("the demo runs on the simulator only: start it with `reach up --demo` (no AT credentials)")
    with session_scope() as session:
        if session.scalar(select(func.count()).select_from(Contact)):
            raise DemoError(
                "the demo needs an empty database and this one has contacts; "
                "run it in a fresh directory, or with REACH_VAR_DIR=var/demo"
            )
    say("1. importing the sample contacts (one row is a typo on purpose)")
    with Path(data_file("contacts.csv")).open(encoding="utf-8-sig", newline=None) as sample:
        import_rows(rows_from_csv(sample))
    say(f"2. cycle 1: an SMS to every new contact ({short_setup(settings)})")
    run_cycle(settings)
    say(f"3. {STOP_PHONE} texts STOP (posted to /receiveSMS as AT would)")
    text_stop(settings, STOP_PHONE)
    say("4. cycle 2: an SMS to the active contacts, a voice call to the inactive and pending ones")
    run_cycle(settings)
    say(f"5. {LATE_CONTACT['phone']} is added after the cycles, so it stays new")
    import_rows([LATE_CONTACT])
    summary()


def on_simulator(settings: Settings) -> bool:
    """AT's voice URL is our simulator (the real AT has no `/_sim/`)."""
    try:
        return requests.get(f"{settings.voice_base_url}/_sim/idle", timeout=3).status_code == 200
    except requests.RequestException:
        return False


def say(line: str) -> None:
    click.secho(visible(line), bold=True)


def short_setup(settings: Settings) -> str:
    return f"simulator at {settings.voice_base_url}"


def import_rows(rows: Iterable[Any]) -> None:
    with session_scope() as session:
        report = import_contacts(session, rows, "KE")
    echo(f"   {report.received} rows: {report.created} added, {report.refused_count} refused")
    for refused in report.refused:
        echo(f"   refused row {refused['row']} ({refused['phone']!r}): {refused['reason']}")


def run_cycle(settings: Settings) -> int:
    with session_scope() as session:
        # On the simulator nobody is woken: the demo shows the whole flow whatever the hour (CALL_WINDOW).
        cycle_id = cycles.start_cycle(session, SMS_TEXT, VOICE_TEXT, sms_window=ALWAYS, call_window=ALWAYS)
    if cycle_id is None:
        raise DemoError("the cycle was not created")
    send_tasks(settings, ["reach.cycle.plan"], [cycle_id])
    shown = ""
    deadline = time.monotonic() + CYCLE_TIMEOUT_SECONDS
    while True:
        with session_scope() as session:
            report = cycle_report.report(session, cycle_id)
        assert report is not None
        line = progress_line(report, datetime.now(UTC).astimezone())
        if line[9:] != shown:  # print only what changed (the time prefix always does)
            echo(f"   {line}")
            shown = line[9:]
        if report["state"] == "done":
            break
        if report["state"] in {"failed", "paused", "cancelled"} or time.monotonic() > deadline:
            raise DemoError(f"cycle {cycle_id} is {report['state']}; see the worker log")
        time.sleep(0.5)
    wait_until(lambda: settled(settings), "the simulator's callbacks to be applied")
    with session_scope() as session:
        report = cycle_report.report(session, cycle_id)
    assert report is not None
    echo(f"   {progress_line(report, datetime.now(UTC).astimezone())} (every report applied)")
    echo(f"   contacts now: {status_counts()}")
    return cycle_id


def settled(settings: Settings) -> bool:
    """The simulator has posted every callback and the inbox has applied them all."""
    idle = requests.get(f"{settings.voice_base_url}/_sim/idle", timeout=5).json()["idle"]
    store = store_for(settings, engine=get_engine())
    try:
        inbox = store.inbox()
        return bool(idle) and inbox.depth() == 0 and inbox.in_flight() == 0
    finally:
        store.close()


def text_stop(settings: Settings, phone: str) -> None:
    fields = {
        "from": phone,
        "to": settings.at_sender_id or "20414",
        "text": "STOP",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "id": f"ATXid_demo_{int(time.time() * 1000)}",
        "linkId": f"ATLid_demo_{int(time.time() * 1000)}",
    }
    token = settings.webhook_token.get_secret_value()
    url = f"http://{settings.host}:{settings.port}/receiveSMS"
    answer = requests.post(url, data=fields, params={"token": token} if token else None, timeout=10)
    answer.raise_for_status()
    wait_until(lambda: contact_status(phone) is ContactStatus.OPTED_OUT, f"{phone} to be opted out")
    echo(f"   {phone} is now opted_out")


def contact_status(phone: str) -> ContactStatus | None:
    with session_scope() as session:
        return session.scalar(select(Contact.status).where(Contact.phone == phone))


def status_counts() -> str:
    with session_scope() as session:
        found = Counter(status.value for status in session.scalars(select(Contact.status)))
    return ", ".join(f"{status.value} {found[status.value]}" for status in ContactStatus if found[status.value])


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise DemoError(f"gave up waiting for {what}; see the logs")
        time.sleep(0.3)


def summary() -> None:
    with session_scope() as session:
        contacts = [contact_json(c) for c in session.scalars(select(Contact).order_by(Contact.id))]
        calls = Counter(
            (phone, f"{outcome or '-'}{', pressed 1' if acknowledged else ''}")
            for phone, outcome, acknowledged in session.execute(select(Call.phone, Call.outcome, Call.acknowledged))
        )
    calls_by_phone: dict[str, list[str]] = {}
    for (phone, outcome), n in sorted(calls.items()):
        calls_by_phone.setdefault(phone, []).append(f"{outcome} x{n}" if n > 1 else outcome)
    say("summary")
    columns = ("phone", "name", "status", "last_sms_status", "last_failure_reason")
    rows = ([c[k] for k in columns] + [", ".join(calls_by_phone.get(c["phone"], [])) or None] for c in contacts)
    for line in table((*columns, "calls"), rows):
        echo(f"   {line}")
    echo(f"   contacts: {status_counts()}; calls recorded: {sum(calls.values())}")
