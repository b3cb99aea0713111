"""Contact imports hold a few thousand rows at a time, whatever the file's size (issue 12, Imports).

The CSV is read as a stream (the API's body, `reach contacts import FILE`), written in batches, and the
refused rows are not kept in memory: the answer lists the first ones with the counts, the whole list is a
download (`refused_url`), and the CLI writes it to FILE.refused.csv as it goes. Memory is checked here with
tracemalloc (Python's own allocations, deterministic), the real RSS by `python -m bench.import_memory`.
"""

from __future__ import annotations

import csv
import io
import os
import pty
import select
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, delete, func
from sqlalchemy import select as sql_select
from sqlalchemy.orm import sessionmaker

from reach_cli.main import cli
from shared.models import Contact, ContactStatus
from tests.conftest import API_TOKEN
from tests.services import ROOT

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
#: Refused rows listed in the API's answer; the rest are in the download.
SHOWN = 100


def contacts_csv(count: int, first: int = 0) -> str:
    """A customer file of `count` rows: one in ten not a number, one in ten a repeat of the row before."""
    lines = ["phone,name"]
    for i in range(first, first + count):
        if i % 10 == 3:
            lines.append(f"not-a-number-{i},Customer {i}")
        elif i % 10 == 7:
            lines.append(f"+2547{i - 1:08d},Again {i}")
        else:
            lines.append(f"+2547{i:08d},Customer {i}")
    return "\n".join(lines) + "\n"


def contact_count(session: Any) -> int:
    session.expire_all()
    return session.scalar(sql_select(func.count()).select_from(Contact))


# -- the answer and the refused list --------------------------------------------------------------------------


def test_the_answer_lists_the_first_refused_rows_and_links_the_whole_list(client: Any, session: Any) -> None:
    bad = [f"not-a-number-{i}" for i in range(250)]
    body = "phone,name\n+254711000001,Amina\n" + "".join(f"{phone},x\n" for phone in bad) + "0711000001,again\n"
    response = client.post("/api/contacts", data=body, content_type="text/csv", headers=AUTH)
    assert response.status_code == 200, response.get_data(as_text=True)
    report = response.get_json()
    assert (report["received"], report["created"], report["updated"], report["refused_count"]) == (252, 1, 0, 251)
    assert len(report["refused"]) == SHOWN
    assert report["refused"][0] == {
        "row": 2,
        "phone": "not-a-number-0",
        "reason": "not a phone number (it has letters in it)",
    }
    assert [r["row"] for r in report["refused"]] == list(range(2, 2 + SHOWN))

    download = client.get(report["refused_url"], headers=AUTH)
    assert download.status_code == 200 and download.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(download.get_data(as_text=True), newline="")))
    assert [r["phone"] for r in rows] == [*bad, "+254711000001"]
    assert [int(r["row"]) for r in rows] == list(range(2, 253))
    assert rows[-1]["reason"] == "duplicate of row 1"


def test_an_import_with_nothing_refused_answers_as_before(client: Any, session: Any) -> None:
    response = client.post("/api/contacts", json=[{"phone": "0711000001"}], headers=AUTH)
    assert response.get_json() == {"received": 1, "created": 1, "updated": 0, "refused_count": 0, "refused": []}


def test_a_name_that_is_not_unicode_text_refuses_its_row(client: Any, session: Any) -> None:
    body = '[{"phone": "0711000001", "name": "Amina\\ud800"}, {"phone": "0711000002", "name": "Brian"}]'
    response = client.post("/api/contacts", data=body, content_type="application/json", headers=AUTH)
    assert response.status_code == 200, response.get_data(as_text=True)
    report = response.get_json()
    assert (report["created"], report["refused_count"]) == (1, 1)
    assert report["refused"][0]["reason"] == "name must be Unicode text (it has a lone surrogate)"


def test_the_refused_list_needs_the_token_and_an_import_that_exists(client: Any, session: Any) -> None:
    report = client.post("/api/contacts", json=[{"phone": "12"}], headers=AUTH).get_json()
    url = report["refused_url"]
    assert client.get(url).status_code == 401
    missing = client.get("/api/imports/999999/refused.csv", headers=AUTH)
    assert missing.status_code == 404 and missing.is_json


def test_a_csv_broken_after_several_batches_writes_nothing(client: Any, session: Any, tmp_path: Path) -> None:
    body = contacts_csv(12_000) + '+254799000001,"never closed\n'
    response = client.post("/api/contacts", data=body, content_type="text/csv", headers=AUTH)
    assert response.status_code == 400
    assert "not readable as CSV (line 12002)" in response.get_json()["error"]
    assert contact_count(session) == 0

    source = tmp_path / "contacts.csv"
    source.write_text(body)
    result = CliRunner().invoke(cli, ["contacts", "import", str(source)])
    assert result.exit_code == 2 and "not readable as CSV (line 12002)" in result.stderr
    assert contact_count(session) == 0
    assert not (tmp_path / "contacts.refused.csv").exists()  # the refused rows of an import that did not happen


def test_an_import_of_several_batches_is_the_same_on_both_databases(dialect_engine: Engine) -> None:
    """Postgres writes each batch with one statement over arrays, SQLite (embedded mode) with executemany; both
    find repeats across batches in a temporary table."""
    from shared.imports import IMPORT_CHUNK, import_contacts
    from shared.operator_models import ContactImport
    from shared.refusals import StoredRefusals, refused_csv

    sessions = sessionmaker(dialect_engine, expire_on_commit=False)
    with sessions.begin() as session:
        session.execute(delete(ContactImport))
        session.execute(delete(Contact))
        session.add(Contact(phone="+254700000001", name="Known", status=ContactStatus.ACTIVE))
    count = 2 * IMPORT_CHUNK + 10
    rows = [*csv.DictReader(io.StringIO(contacts_csv(count))), {"phone": "0700000000", "name": "late"}]
    with sessions.begin() as session:
        refused = StoredRefusals(session)
        report = import_contacts(session, rows, "KE", refused=refused)
        refused.finish(report)
    unique = count - count // 10 * 2  # one in ten rows not a number, one in ten a repeat
    assert (report.received, report.created, report.updated) == (count + 1, unique - 1, 1)
    assert report.refused_count == count // 10 * 2 + 1
    assert refused.import_id is not None
    stored = list(csv.reader(io.StringIO("".join(refused_csv(sessions, refused.import_id)), newline="")))
    assert stored[0] == ["row", "phone", "reason"] and len(stored) == report.refused_count + 1
    assert stored[-1] == [str(count + 1), "+254700000000", "duplicate of row 1"]  # a repeat of the first batch
    assert stored[2] == ["8", "+254700000006", "duplicate of row 7"]
    with sessions() as session:
        found = {c.phone: (c.name, c.status) for c in session.scalars(sql_select(Contact))}
    assert len(found) == unique
    assert found["+254700000001"] == ("Customer 1", ContactStatus.ACTIVE)  # a new name, the status kept
    assert found["+254700000000"] == ("Customer 0", ContactStatus.NEW)  # the first of the repeats wins

    with sessions.begin() as session:  # the same connection again: nothing left of the first import's numbers
        again = import_contacts(session, rows[: IMPORT_CHUNK + 5], "KE")
    assert (again.created, again.updated, again.refused_count) == (0, (IMPORT_CHUNK + 5) * 8 // 10, 401)
    assert all("duplicate of row" not in r["reason"] or r["row"] % 10 == 8 for r in again.refused)


def test_housekeeping_deletes_old_imports_refused_rows_in_batches(
    client: Any, session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.operator_models import ContactImport, ImportRefusal
    from shared.settings import load_settings
    from worker import retention

    monkeypatch.setattr(retention, "BATCH", 10)
    old, new = (
        client.post("/api/contacts", json=[{"phone": f"bad-{i}"} for i in range(25)], headers=AUTH).get_json()
        for _ in range(2)
    )
    session.execute(
        ContactImport.__table__.update()
        .where(ContactImport.id == int(old["refused_url"].split("/")[3]))
        .values(created_at=datetime.now(UTC) - timedelta(days=8))
    )
    session.commit()
    settings = load_settings()
    assert settings.import_retention_days == 7
    assert retention.prune_imports(settings) == 25  # three statements: 10, 10, then the last 5 and the import
    assert client.get(old["refused_url"], headers=AUTH).status_code == 404
    assert client.get(new["refused_url"], headers=AUTH).status_code == 200
    assert session.scalar(sql_select(func.count()).select_from(ImportRefusal)) == 25
    assert retention.prune_imports(settings) == 0


# -- memory ---------------------------------------------------------------------------------------------------


def traced_peak(action: Callable[[], None]) -> int:
    """The peak of Python's allocations (bytes) while `action` runs."""
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def import_by_cli(tmp_path: Path, count: int, first: int) -> Callable[[], None]:
    source = tmp_path / f"contacts-{first}.csv"
    source.write_text(contacts_csv(count, first))  # before tracing: the test's own text is not the import's

    def run() -> None:
        result = CliRunner().invoke(cli, ["contacts", "import", str(source)], catch_exceptions=False)
        assert result.exit_code == 0, result.output

    return run


def import_by_api(client: Any, count: int, first: int) -> Callable[[], None]:
    body = contacts_csv(count, first).encode()  # before tracing: the client's own copy is not the server's

    def post() -> None:
        response = client.post("/api/contacts", data=body, content_type="text/csv", headers=AUTH)
        assert response.status_code == 200, response.get_data(as_text=True)

    return post


@pytest.mark.parametrize("way", ["cli", "api"])
def test_import_memory_does_not_grow_with_the_row_count(client: Any, session: Any, tmp_path: Path, way: str) -> None:
    def run(count: int, first: int) -> int:
        if way == "cli":
            return traced_peak(import_by_cli(tmp_path, count, first))
        return traced_peak(import_by_api(client, count, first))

    run(500, 900_000)  # warm: statement caches, imports
    small, large = run(3_000, 0), run(12_000, 100_000)
    assert contact_count(session) == (500 + 3_000 + 12_000) * 8 // 10
    assert large < 1.5 * small, f"peak {small:,} B for 3,000 rows, {large:,} B for 12,000"


# -- progress -------------------------------------------------------------------------------------------------


def test_no_progress_when_stderr_is_not_a_terminal(session: Any, tmp_path: Path) -> None:
    source = tmp_path / "contacts.csv"
    source.write_text(contacts_csv(100))
    result = CliRunner().invoke(cli, ["contacts", "import", str(source)], catch_exceptions=False)
    assert result.exit_code == 0
    assert result.stderr == ""  # a cron job's mail or a log gets the summary only
    assert result.stdout.startswith("100 rows: 80 added, 0 updated, 20 refused (")


def run_on_a_terminal(args: list[str], timeout: float = 60) -> tuple[int, str, str]:
    """Run `reach ARGS` with stderr on a pseudo-terminal; (exit code, stdout, what the terminal got)."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "reach_cli.main", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=terminal
    )
    os.close(terminal)
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([controller], [], [], 0.2)[0]:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the process closed its end
                break
            if not chunk:
                break
            seen += chunk
    os.close(controller)
    stdout = process.communicate(timeout=max(1.0, deadline - time.monotonic()))[0]
    return process.returncode, stdout.decode(), seen.decode()


def test_progress_on_a_terminal_counts_rows_done(session: Any, tmp_path: Path) -> None:
    source = tmp_path / "contacts.csv"
    source.write_text(contacts_csv(2_500))
    code, stdout, terminal = run_on_a_terminal(["contacts", "import", str(source)])
    assert code == 0, terminal
    assert "2,500 rows" in terminal and "100%" in terminal, terminal
    assert stdout.startswith("2500 rows: 2000 added, 0 updated, 500 refused (")
