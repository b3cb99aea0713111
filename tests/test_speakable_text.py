"""Text AT can speak (issue 11 item 7): a message with a character XML 1.0 forbids is refused where it enters,
with a 400 (or the CLI's error) naming the character and its 1-based position; and the `<Say>` answer the
receiver builds always parses, whatever text it is given.

Every way a message enters goes through `shared.cycles.check_message`: `POST /api/cycles` (and its dry run),
`POST /api/schedules`, the operator send on `/communicate`, and `reach cycle run` / `reach schedule add`.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from reach_cli.main import cli
from shared import voice_script
from shared.cycles import CycleError, check_message
from shared.models import Call, Cycle, Message, Schedule
from tests.conftest import API_TOKEN

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}

#: Characters XML 1.0 forbids (its `Char` production), as spreadsheets and copy-paste bring them in.
FORBIDDEN = ["\x0b", "\x0c", "\x00", "\x01", "\x08", "\x0e", "\x1f", "\ufffe", "\uffff", "\ud800", "\udfff"]
#: Text that is awkward but speakable: kept verbatim.
AWKWARD = [
    "Tom & Jerry <owe> 5 > 4",
    'He said "pay" and it\'s due',
    "Habari 😀 ✓ ñ",
    "]]> <![CDATA[ x ]]>",
    "tab\there, new\nline, return\r",
    "&amp; &#11; &lt;",
]


def _post(client: Any, path: str, doc: dict[str, Any]) -> Any:
    # json.dumps escapes lone surrogates as \udXXX, as a client would send them.
    return client.post(path, data=json.dumps(doc), content_type="application/json", headers=AUTH)


@pytest.mark.parametrize("char", FORBIDDEN, ids=lambda c: f"U+{ord(c):04X}")
def test_a_cycle_whose_message_has_a_forbidden_character_is_a_400(client: Any, session: Any, char: str) -> None:
    response = _post(client, "/api/cycles", {"message": f"Hello{char}world"})
    assert response.status_code == 400, response.get_data(as_text=True)
    error = response.json["error"]
    assert f"U+{ord(char):04X}" in error and "position 6" in error and "message" in error
    assert session.scalar(select(func.count()).select_from(Cycle)) == 0


def test_the_vertical_tab_alone_is_named_not_stripped(client: Any, session: Any) -> None:
    response = _post(client, "/api/cycles", {"message": "\x0b"})
    assert response.status_code == 400
    assert response.json == {"error": "message has a character AT cannot speak: U+000B at position 1"}


@pytest.mark.parametrize(
    ("path", "doc", "what"),
    [
        ("/api/cycles", {"message": "hi", "voice_message": "Pay\x0bnow"}, "voice_message"),
        ("/api/cycles", {"message": "Pay\x0bnow", "dry_run": True}, "message"),
        ("/api/cycles", {"message": "hi", "voice_message": "Pay\x0bnow", "dry_run": True}, "voice_message"),
        ("/api/schedules", {"name": "n", "cron": "0 9 * * 1", "message": "Pay\x0bnow"}, "message"),
        (
            "/api/schedules",
            {"name": "n", "cron": "0 9 * * 1", "message": "hi", "voice_message": "Pay\x0bnow"},
            "voice_message",
        ),
    ],
)
def test_every_operator_entry_refuses_it(client: Any, session: Any, path: str, doc: dict[str, Any], what: str) -> None:
    response = _post(client, path, doc)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.json == {"error": f"{what} has a character AT cannot speak: U+000B at position 4"}
    assert session.scalar(select(func.count()).select_from(Cycle)) == 0
    assert session.scalar(select(func.count()).select_from(Schedule)) == 0


@pytest.mark.parametrize("char", ["\x0c", "\x00", "\ud800"], ids=lambda c: f"U+{ord(c):04X}")
def test_communicate_send_refuses_it(client: Any, session: Any, char: str) -> None:
    # As JSON (the seed's curl): NUL and a lone surrogate are named too, not turned into U+FFFD first.
    response = _post(client, "/communicate", {"to": "+254711000001", "message": f"Pay{char}now"})
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.json == {"error": f"message has a character AT cannot speak: U+{ord(char):04X} at position 4"}
    assert session.scalar(select(func.count()).select_from(Message)) == 0
    assert session.scalar(select(func.count()).select_from(Call)) == 0


def test_the_cli_refuses_it(session: Any) -> None:
    result = CliRunner().invoke(cli, ["cycle", "run", "--message", "Pay\x0bnow", "--dry-run"], prog_name="reach")
    assert result.exit_code != 0
    assert "message has a character AT cannot speak: U+000B at position 4" in result.output
    result = CliRunner().invoke(
        cli, ["schedule", "add", "n", "--cron", "0 9 * * 1", "--message", "Pay\x0bnow"], prog_name="reach"
    )
    assert result.exit_code != 0
    assert "U+000B at position 4" in result.output
    assert session.scalar(select(func.count()).select_from(Schedule)) == 0


@pytest.mark.parametrize("text", AWKWARD)
def test_awkward_but_speakable_text_is_kept(text: str) -> None:
    assert check_message(text) == text.strip()


def test_the_position_counts_characters_from_one_before_any_trimming() -> None:
    with pytest.raises(CycleError, match=r"U\+0001 at position 3$"):
        check_message("  \x01 hi")
    with pytest.raises(CycleError, match=r"^voice_message has .* U\+FFFF at position 2$"):
        check_message("😀\uffff", "voice_message")


def _said(document: str) -> list[str]:
    root = ET.fromstring(document.encode())  # what AT does with our answer: parse it as XML
    assert root.tag == "Response"
    return [say.text or "" for say in root.iter("Say")]


@pytest.mark.parametrize("text", AWKWARD)
def test_the_voice_answer_parses_and_says_the_text(text: str) -> None:
    said = _said(voice_script.speak(text))
    assert said == [text.replace("\r", "\n"), voice_script.CONFIRM_PROMPT]  # XML reads a lone CR as LF


@pytest.mark.parametrize("char", FORBIDDEN, ids=lambda c: f"U+{ord(c):04X}")
def test_the_voice_answer_parses_even_for_text_stored_before_the_check(char: str) -> None:
    said = _said(voice_script.speak(f"Pay{char}now"))
    assert said[0] == "Pay now"


def test_the_live_voice_callback_answers_parseable_xml(client: Any, redis_client: Any) -> None:
    from simulator import wire
    from tests.conftest import WEBHOOK_TOKEN

    session_id = wire.new_session_id()
    voice_script.remember(redis_client, 'Rent & <fees> "due" 😀\x0b!', phone="+254711000001", session_id=session_id)
    body = wire.voice_active(session_id, "+254711000001", "+254711082369")
    response = client.post(f"/voice?token={WEBHOOK_TOKEN}", data=body)
    assert response.status_code == 200
    assert _said(response.get_data(as_text=True))[0] == 'Rent & <fees> "due" 😀 !'


def test_a_schedule_stored_before_the_rule_does_not_stop_the_others(session: Any) -> None:
    from datetime import UTC, datetime, timedelta

    from worker.tasks import start_due_cycles

    added = datetime.now(UTC) - timedelta(days=2)
    session.add_all(
        [
            Schedule(name="legacy", cron="* * * * *", timezone="UTC", message="Pay\x0bnow", created_at=added),
            Schedule(name="fine", cron="* * * * *", timezone="UTC", message="Pay now", created_at=added),
        ]
    )
    session.commit()
    started = start_due_cycles(datetime.now(UTC))
    assert [c.message for c in session.scalars(select(Cycle).where(Cycle.id.in_(started)))] == ["Pay now"]
