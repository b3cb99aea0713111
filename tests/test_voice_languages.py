"""A cycle speaks to each contact in their language (issue 14): `voice_message` and `voice_audio_url` per
language, the call's prompts and the USSD menu in the contact's language.

The rules one by one run in-process; the end-to-end cases run the receiver, a Celery worker and the
simulator, so what a customer hears is what AT would say or play from the receiver's real answer.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest
import requests
from sqlalchemy import select

from shared import prompts, ussd, voice_languages, voice_script
from shared.models import Call, Contact, ContactStatus, Cycle, Schedule
from simulator.scenario import Scenario
from tests.conftest import API_TOKEN, WEBHOOK_TOKEN, wait_for

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
SW_CUSTOMER, EN_CUSTOMER, LUO_CUSTOMER = "+254733000031", "+254733000032", "+254733000033"
SWAHILI = "Habari {name}, bili yako iko tayari."
ENGLISH = "Hello {name}, your bill is ready."
AUDIO_SW = "https://media.example.org/reach/bill-sw.mp3"


# -- validation: a 400 naming the field ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"voice_message": {}}, "voice_message"),
        ({"voice_message": {"sw": ""}}, "voice_message.sw"),
        ({"voice_message": {"sw": 5}}, "voice_message.sw"),
        ({"voice_message": {"xx-yy-zz": "Habari"}}, "voice_message"),
        ({"voice_message": {"sw": "Habari {jina}"}}, "voice_message.sw"),
        ({"voice_message": {"sw": "Habari\x0b"}}, "voice_message.sw"),
        ({"voice_message": ["Habari"]}, "voice_message"),
        ({"voice_audio_url": "ftp://media.example.org/bill.mp3"}, "voice_audio_url"),
        ({"voice_audio_url": "https://media.example.org/bill.ogg"}, "voice_audio_url"),
        ({"voice_audio_url": "https://media.example.org/bill"}, "voice_audio_url"),
        ({"voice_audio_url": {"sw": "bill-sw.mp3"}}, "voice_audio_url.sw"),
        ({"voice_audio_url": {"sw": 3}}, "voice_audio_url.sw"),
        ({"voice_audio_url": {}}, "voice_audio_url"),
        ({"voice_audio_url": 7}, "voice_audio_url"),
    ],
)
def test_a_bad_voice_field_is_a_400_naming_it(client, operator_headers, body: dict[str, Any], named: str) -> None:
    for path, base in (
        ("/api/cycles", {"message": "Your bill is ready"}),
        ("/api/schedules", {"name": "bills", "cron": "0 9 * * 1", "message": "Your bill is ready"}),
    ):
        response = client.post(path, json={**base, **body}, headers=operator_headers)
        assert response.status_code == 400, (path, response.get_json())
        assert named in response.get_json()["error"], (path, response.get_json())


@pytest.mark.parametrize("field", ["voice_message", "voice_audio_url"])
def test_a_voice_field_takes_only_text_or_an_object(client, operator_headers, session, field: str) -> None:
    """Text, or texts by language (test_operator_fields.py holds the other text fields to text alone)."""
    not_text = [(True, "a boolean"), (0, "a number"), (1.5, "a number"), ([], "an array"), (["hi"], "an array")]
    for value, sent in not_text:
        body = {"message": "Your bill is ready", field: value}
        response = client.post("/api/cycles", json=body, headers=operator_headers)
        error = f'{field} must be text or an object by language code ({{"sw": "...", "en": "..."}}), not {sent}'
        assert (response.status_code, response.get_json()) == (400, {"error": error}), value
    assert session.scalars(select(Cycle)).first() is None


def test_a_cycle_keeps_its_voice_per_language_and_reports_it(client, operator_headers, session) -> None:
    body = {
        "message": "Your bill is ready",
        "voice_message": {"SW": f" {SWAHILI} ", "en": ENGLISH},
        "voice_audio_url": {"sw": AUDIO_SW},
    }
    response = client.post("/api/cycles", json=body, headers=operator_headers)
    assert response.status_code == 202, response.get_json()
    cycle = session.get_one(Cycle, response.get_json()["id"])
    assert cycle.voice_message is None  # the text column holds only a plain string
    per_language = {"voice_message": {"sw": SWAHILI, "en": ENGLISH}, "voice_audio_url": {"sw": AUDIO_SW}}
    assert cycle.voice_languages == per_language
    report = client.get(f"/api/cycles/{cycle.id}", headers=operator_headers).get_json()
    assert report["voice_message"] == {"sw": SWAHILI, "en": ENGLISH}
    assert report["voice_audio_url"] == {"sw": AUDIO_SW}


def test_a_plain_voice_message_stays_text(client, operator_headers, session) -> None:
    body = {"message": "Your bill is ready", "voice_message": ENGLISH, "voice_audio_url": "http://m.example.org/a.WAV"}
    response = client.post("/api/cycles", json=body, headers=operator_headers)
    assert response.status_code == 202, response.get_json()
    cycle = session.get_one(Cycle, response.get_json()["id"])
    assert cycle.voice_message == ENGLISH
    assert cycle.voice_languages == {"voice_audio_url": "http://m.example.org/a.WAV"}


def test_a_schedule_keeps_its_voice_per_language(client, operator_headers, session) -> None:
    body = {"name": "bills", "cron": "0 9 * * 1", "message": "Bill", "voice_message": {"sw": SWAHILI}}
    response = client.post("/api/schedules", json={**body, "voice_audio_url": AUDIO_SW}, headers=operator_headers)
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["voice_message"] == {"sw": SWAHILI}
    assert response.get_json()["voice_audio_url"] == AUDIO_SW
    schedule = session.scalars(select(Schedule)).one()
    assert schedule.voice_message is None
    assert schedule.voice_languages == {"voice_message": {"sw": SWAHILI}, "voice_audio_url": AUDIO_SW}


# -- which entry a contact gets ------------------------------------------------------------------------------


def test_each_contact_gets_the_entry_for_their_language_else_the_default_else_the_first() -> None:
    texts = {"sw": "Habari", "en": "Hello"}
    assert voice_languages.entry_for(texts, "sw", default="en") == ("sw", "Habari")
    assert voice_languages.entry_for(texts, "sw-KE", default="en") == ("sw", "Habari")  # the language, any region
    assert voice_languages.entry_for(texts, "luo", default="en") == ("en", "Hello")  # DEFAULT_LANGUAGE's entry
    assert voice_languages.entry_for(texts, None, default="en") == ("en", "Hello")
    assert voice_languages.entry_for({"sw": "Habari", "fr": "Bonjour"}, "luo", default="en") == ("sw", "Habari")
    assert voice_languages.entry_for("Hello", "sw", default="en") == (None, "Hello")  # a plain string: everyone


def test_audio_for_the_language_wins_over_text() -> None:
    stored = {"voice_message": {"sw": SWAHILI, "en": ENGLISH}, "voice_audio_url": {"sw": AUDIO_SW}}
    sw = voice_languages.script_for(stored, None, "Bill", language="sw", default="en", name="Amina", phone="+2547")
    assert (sw.audio_url, sw.language) == (AUDIO_SW, "sw")
    en = voice_languages.script_for(stored, None, "Bill", language="en", default="en", name="John", phone="+2547")
    assert (en.text, en.audio_url, en.language) == ("Hello John, your bill is ready.", None, None)


# -- the call's XML ----------------------------------------------------------------------------------------------


def _xml(body: str) -> ET.Element:
    return ET.fromstring(body)


def test_a_swahili_call_says_its_text_and_asks_in_swahili() -> None:
    root = _xml(voice_script.speak(voice_script.VoiceScript("Habari Amina", language="sw")))
    said = [say.text for say in root.iter("Say")]
    assert said == ["Habari Amina", prompts.voice("sw").confirm]
    assert "Bonyeza 1" in prompts.voice("sw").confirm
    assert root.find("Play") is None


def test_an_audio_call_plays_the_file_instead_of_saying() -> None:
    root = _xml(voice_script.speak(voice_script.VoiceScript(None, audio_url=AUDIO_SW, language="sw")))
    assert [play.get("url") for play in root.iter("Play")] == [AUDIO_SW]
    assert [say.text for say in root.iter("Say")] == [prompts.voice("sw").confirm]  # only the prompt is said
    assert root[0].tag == "Play" and root[1].tag == "GetDigits"


def test_an_english_call_is_as_before() -> None:
    assert voice_script.speak(voice_script.VoiceScript("Hi")) == voice_script.speak("Hi")
    assert voice_script.CONFIRM_PROMPT in voice_script.speak("Hi")
    assert prompts.voice("sw").thanks in voice_script.thank("sw")
    assert voice_script.THANKS in voice_script.thank(None)


def test_a_script_keeps_its_language_and_audio_in_the_store() -> None:
    script = voice_script.VoiceScript("Habari", audio_url=AUDIO_SW, language="sw")
    assert voice_script.VoiceScript.decode(script.encode()) == script
    assert voice_script.VoiceScript("Hello").encode() == "Hello"  # as before: a plain message
    assert voice_script.VoiceScript.decode("Hello") == voice_script.VoiceScript("Hello")


# -- USSD in the contact's language -------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "1", "2", "3", "4", "4*1", "4*2", "9", "5*1"])
def test_every_swahili_screen_fits_and_differs_from_english(text: str) -> None:
    sw, en = ussd.step(text, "sw"), ussd.step(text)
    assert sw.effect is en.effect and sw.text[:4] == en.text[:4]
    assert len(sw.text) < ussd.MAX_SCREEN
    if en.text not in ("END ", "CON "):
        assert sw.text != en.text


@pytest.mark.parametrize("status", [s.value for s in ContactStatus])
def test_every_swahili_status_screen_fits(status: str) -> None:
    assert len(ussd.status_screen("+254722000001", status, "voice", "sw")) < ussd.MAX_SCREEN


def test_a_swahili_contact_gets_the_menu_in_swahili(client, session) -> None:
    session.add(Contact(phone=SW_CUSTOMER, status=ContactStatus.ACTIVE, language="sw-KE"))
    session.add(Contact(phone=EN_CUSTOMER, status=ContactStatus.ACTIVE, language="en"))
    session.commit()

    def menu(phone: str, text: str = "") -> str:
        data = {"sessionId": f"ATUid_{phone}", "serviceCode": "*384*303#", "phoneNumber": phone, "text": text}
        response = client.post(f"/ussd?token={WEBHOOK_TOKEN}", data=data)
        assert response.status_code == 200
        return response.get_data(as_text=True)

    assert menu(SW_CUSTOMER) == ussd.step("", "sw").text
    assert "Hali yangu" in menu(SW_CUSTOMER)
    assert menu(EN_CUSTOMER) == ussd.MAIN_MENU
    assert menu(SW_CUSTOMER, "1") == f"END {SW_CUSTOMER}: hai; SMS zetu zinakufikia."
    assert menu(SW_CUSTOMER, "5") == "END Bado hatujakutumia ujumbe."
    assert menu(SW_CUSTOMER, "4") == prompts.ussd("sw").confirm_stop
    assert menu(EN_CUSTOMER, "5") == "END We have not sent you a message yet."


# -- a real call through the simulator ------------------------------------------------------------------------------


def live_answers(simulator: Any, phone: str) -> list[dict[str, Any]]:
    """What the simulator heard back from each live callback it posted for `phone` (not the key presses)."""
    return [
        cb
        for cb in simulator.callbacks("voice")
        if cb["form"]["callerNumber"] == phone and cb["form"]["isActive"] == "1" and "dtmfDigits" not in cb["form"]
    ]


def key_press_answers(simulator: Any, phone: str) -> list[dict[str, Any]]:
    voice = simulator.callbacks("voice")
    return [cb for cb in voice if cb["form"]["callerNumber"] == phone and "dtmfDigits" in cb["form"]]


def live_answer(simulator: Any, phone: str) -> dict[str, Any]:
    answers = wait_for(lambda: live_answers(simulator, phone), timeout=20, what=f"the live callback for {phone}")
    assert len(answers) == 1, answers
    return answers[0]


def run_cycle(receiver: str, session: Any, body: dict[str, Any]) -> int:
    started = requests.post(f"{receiver}/api/cycles", json=body, headers=AUTH, timeout=10)
    assert started.status_code == 202, started.text

    def done() -> bool:
        session.expire_all()
        return session.get_one(Cycle, started.json()["id"]).state.value == "done"

    wait_for(done, timeout=40, what="the cycle done")
    return started.json()["id"]


@pytest.mark.worker
def test_each_contact_hears_the_cycle_in_their_language(live: Any, receiver: str, session: Any) -> None:
    live.set_scenario(Scenario.from_dict({"default": {"voice": "answered", "dtmf": "1"}}))
    people = ((SW_CUSTOMER, "sw", "Amina"), (EN_CUSTOMER, "en", "John"), (LUO_CUSTOMER, "luo", "Otieno"))
    for phone, language, name in people:
        session.add(Contact(phone=phone, status=ContactStatus.INACTIVE, language=language, name=name))
    session.commit()
    cycle_id = run_cycle(receiver, session, {"message": "Bill", "voice_message": {"sw": SWAHILI, "en": ENGLISH}})
    swahili = "Habari Amina, bili yako iko tayari."
    assert live_answer(live, SW_CUSTOMER)["said"] == [swahili, prompts.voice("sw").confirm]
    thanks = wait_for(lambda: key_press_answers(live, SW_CUSTOMER), timeout=20, what="the key press answered")
    assert thanks[0]["said"] == [prompts.voice("sw").thanks]  # "Asante. Kwaheri."
    assert live_answer(live, EN_CUSTOMER)["said"] == ["Hello John, your bill is ready.", voice_script.CONFIRM_PROMPT]
    # luo has no entry: DEFAULT_LANGUAGE's (en), and the prompts in English too (none written in luo)
    assert live_answer(live, LUO_CUSTOMER)["said"] == ["Hello Otieno, your bill is ready.", voice_script.CONFIRM_PROMPT]
    calls = {c.phone: c for c in session.scalars(select(Call).where(Call.cycle_id == cycle_id))}
    assert calls[SW_CUSTOMER].language == "sw" and calls[SW_CUSTOMER].message == "Habari Amina, bili yako iko tayari."
    wait_for(
        lambda: session.expire_all() is None and all(c.acknowledged for c in session.scalars(select(Call))),
        timeout=20,
        what="the key presses applied",
    )


@pytest.mark.worker
def test_a_swahili_contact_hears_the_recorded_audio(live: Any, receiver: str, session: Any) -> None:
    live.set_scenario(Scenario.from_dict({"default": {"voice": "answered"}}))
    session.add(Contact(phone=SW_CUSTOMER, status=ContactStatus.INACTIVE, language="sw"))
    session.add(Contact(phone=EN_CUSTOMER, status=ContactStatus.INACTIVE, language="en"))
    session.commit()
    body = {"message": "Bill", "voice_message": "Your bill is ready.", "voice_audio_url": {"sw": AUDIO_SW}}
    run_cycle(receiver, session, body)
    sw = live_answer(live, SW_CUSTOMER)
    assert sw["played"] == [AUDIO_SW] and sw["said"] == [prompts.voice("sw").confirm]
    assert live_answer(live, EN_CUSTOMER)["played"] == []
    assert live_answer(live, EN_CUSTOMER)["said"] == ["Your bill is ready.", voice_script.CONFIRM_PROMPT]


# -- what the operator reads back -----------------------------------------------------------------------------------


def test_the_dashboard_and_cycle_show_list_the_voice_per_language(client, operator_headers, session) -> None:
    from click.testing import CliRunner

    from tests.cli_support import invoke
    from tests.test_dashboard import sign_in

    body = {"message": "Bill", "voice_message": {"sw": "Bili <yako>", "en": "Your bill"}, "voice_audio_url": AUDIO_SW}
    cycle_id = client.post("/api/cycles", json=body, headers=operator_headers).get_json()["id"]
    assert sign_in(client, API_TOKEN).status_code == 303
    page = client.get(f"/dashboard/cycles/{cycle_id}").get_data(as_text=True)
    assert '<span lang="sw">sw: Bili &lt;yako&gt;</span>' in page and AUDIO_SW in page
    shown = invoke(CliRunner(), "cycle", "show", str(cycle_id)).output
    assert "voice sw:  Bili <yako>" in shown and "voice en:  Your bill" in shown
    assert f"audio:     {AUDIO_SW}" in shown


@pytest.mark.worker
def test_a_one_off_call_to_a_swahili_contact_asks_in_swahili(live: Any, receiver: str, session: Any) -> None:
    live.set_scenario(Scenario.from_dict({"default": {"voice": "answered"}}))
    session.add(Contact(phone=SW_CUSTOMER, status=ContactStatus.INACTIVE, language="sw"))
    session.commit()
    body = {"to": SW_CUSTOMER, "message": "Bili yako iko tayari."}
    answer = requests.post(f"{receiver}/communicate", json=body, headers=AUTH, timeout=5)
    assert answer.status_code == 202 and answer.json()["channel"] == "voice", answer.text
    assert live_answer(live, SW_CUSTOMER)["said"] == ["Bili yako iko tayari.", prompts.voice("sw").confirm]
    assert session.get_one(Call, answer.json()["id"]).language == "sw"


def test_a_swahili_calls_script_is_timed_with_its_swahili_prompt() -> None:
    """Who answered (voicemail or a person) compares a call's length with its script's, prompt included."""
    from shared import call_grades

    sw_prompt = call_grades.spoken_seconds(prompts.voice("sw").confirm)
    assert call_grades.script_seconds("Habari Amina", "sw") == call_grades.spoken_seconds("Habari Amina") + sw_prompt
    assert sw_prompt != call_grades.spoken_seconds(voice_script.CONFIRM_PROMPT)


def test_a_schedules_cycles_take_its_voice_per_language(session) -> None:
    from datetime import UTC, datetime, timedelta

    from shared import schedules

    voice = {"voice_message": {"sw": SWAHILI, "en": ENGLISH}, "voice_audio_url": AUDIO_SW}
    schedule = schedules.add_schedule(session, "hourly", "0 * * * *", "Bill", **voice)
    schedule.created_at = datetime(2026, 12, 1, tzinfo=UTC)
    now = datetime(2026, 12, 6, 9, 0, 5, tzinfo=UTC)
    cycle_id = schedules.start_due_period(session, schedule, now, misfire=timedelta(hours=1))
    cycle = session.get_one(Cycle, cycle_id)
    assert (cycle.voice_message, cycle.voice_languages) == (None, voice)
