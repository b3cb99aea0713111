"""Who answered (issue 14): each ended call is graded (acknowledged, answered, likely voicemail, not answered)
when its final callback is drained, and a cycle's voice_detail counts the grades."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from reach_cli.main import cli
from shared import call_grades
from shared.models import Call, Contact, ContactStatus, Cycle, CycleState
from simulator import wire
from tests.conftest import WEBHOOK_TOKEN

AT_NUMBER = "+254711082369"
#: About 40 words: spoken in roughly 16 s at 150 words a minute.
MESSAGE = (
    "Dear customer, your loan repayment of two thousand shillings is due on Friday the twelfth. "
    "Please pay through the usual paybill number before noon to avoid a late fee being added to your account."
)


def post(client, path: str, body: dict[str, str]) -> None:
    response = client.post(f"{path}?token={WEBHOOK_TOKEN}", data=body)
    assert response.status_code == 200, response.get_data(as_text=True)


def placed_call(session, cycle_id: int | None, phone: str) -> Call:
    contact = Contact(phone=phone, status=ContactStatus.INACTIVE)
    session.add(contact)
    session.flush()
    call = Call(
        contact_id=contact.id,
        cycle_id=cycle_id,
        phone=phone,
        message=MESSAGE,
        send_state="sent",
        session_id=wire.new_session_id(),
    )
    session.add(call)
    session.commit()
    return call


def test_speech_estimate_grows_with_the_words() -> None:
    short, long = call_grades.spoken_seconds("Hello there."), call_grades.spoken_seconds(MESSAGE)
    assert 0 < short < 3 and 12 < long < 22


@pytest.mark.parametrize(
    ("outcome", "acknowledged", "duration", "grade"),
    [
        ("answered", True, 5, "acknowledged"),
        ("answered", False, 4, "answered"),  # picked up and hung up early
        ("answered", False, 30, "voicemail"),  # heard all of it and pressed nothing: a machine, likely
        ("answered", False, 400, "answered"),  # far longer than the script: not a recording of it
        ("retry_later", False, 0, "not_answered"),
        ("unreached", False, 0, "not_answered"),
        ("invalid", False, 0, "not_answered"),
        ("unknown", False, None, None),
    ],
)
def test_grade_table(outcome: str, acknowledged: bool, duration: int | None, grade: str | None) -> None:
    assert call_grades.grade(outcome, acknowledged, duration, MESSAGE) == grade


def test_final_callback_stores_the_grade(client, session, drain) -> None:
    acked = placed_call(session, None, "+254711000001")
    voicemail = placed_call(session, None, "+254711000002")
    early = placed_call(session, None, "+254711000003")
    busy = placed_call(session, None, "+254711000004")
    post(client, "/voice", wire.voice_active(acked.session_id, acked.phone, AT_NUMBER, dtmf_digits="1"))
    post(client, "/voice", wire.voice_final_answered(acked.session_id, acked.phone, AT_NUMBER, duration=31))
    post(client, "/voice", wire.voice_final_answered(voicemail.session_id, voicemail.phone, AT_NUMBER, duration=29))
    post(client, "/voice", wire.voice_final_answered(early.session_id, early.phone, AT_NUMBER, duration=3))
    post(client, "/voice", wire.voice_final_not_answered(busy.session_id, busy.phone, AT_NUMBER, "USER_BUSY"))
    drain()
    session.expire_all()
    grades = {c.phone: c.grade for c in session.scalars(select(Call))}
    assert grades == {
        acked.phone: "acknowledged",
        voicemail.phone: "voicemail",
        early.phone: "answered",
        busy.phone: "not_answered",
    }


def test_a_key_press_drained_after_the_final_callback_regrades_the_call(client, session, drain) -> None:
    call = placed_call(session, None, "+254711000001")
    post(client, "/voice", wire.voice_final_answered(call.session_id, call.phone, AT_NUMBER, duration=29))
    drain()
    post(client, "/voice", wire.voice_active(call.session_id, call.phone, AT_NUMBER, dtmf_digits="1"))
    drain()
    session.expire_all()
    assert session.get(Call, call.id).grade == "acknowledged"


def test_cycle_report_counts_grades(client, session, drain, operator_headers) -> None:
    cycle = Cycle(message=MESSAGE, state=CycleState.DONE)
    session.add(cycle)
    session.commit()
    calls = [placed_call(session, cycle.id, f"+25471100000{i}") for i in range(1, 5)]
    post(client, "/voice", wire.voice_active(calls[0].session_id, calls[0].phone, AT_NUMBER, dtmf_digits="1"))
    post(client, "/voice", wire.voice_final_answered(calls[0].session_id, calls[0].phone, AT_NUMBER, duration=31))
    post(client, "/voice", wire.voice_final_answered(calls[1].session_id, calls[1].phone, AT_NUMBER, duration=29))
    post(client, "/voice", wire.voice_final_not_answered(calls[2].session_id, calls[2].phone, AT_NUMBER, "NO_ANSWER"))
    post(client, "/voice", wire.voice_final_not_answered(calls[3].session_id, calls[3].phone, AT_NUMBER, "USER_BUSY"))
    drain()
    voice = client.get(f"/api/cycles/{cycle.id}", headers=operator_headers).get_json()["voice_detail"]
    assert voice["grades"] == {"acknowledged": 1, "answered": 0, "voicemail": 1, "not_answered": 2}
    # The existing keys keep their meaning.
    assert (voice["answered"], voice["acknowledged"]) == (2, 1)
    assert voice["not_answered"] == {"NO_ANSWER": 1, "USER_BUSY": 1}


def test_cycle_show_prints_grades(client, session, drain) -> None:
    cycle = Cycle(message=MESSAGE, state=CycleState.DONE)
    session.add(cycle)
    session.commit()
    call = placed_call(session, cycle.id, "+254711000001")
    post(client, "/voice", wire.voice_final_answered(call.session_id, call.phone, AT_NUMBER, duration=29))
    drain()
    result = CliRunner().invoke(cli, ["cycle", "show", str(cycle.id)], prog_name="reach", catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "acknowledged 0, answered 0, likely voicemail 1, not answered 0" in result.output
