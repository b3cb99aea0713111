"""A live call while Redis is down (issue 11 item 10): the customer still hears the call's message.

The receiver answers a live voice callback (`isActive=1`) from Redis; when Redis cannot be reached it reads
the message from the Call row whose sessionId AT returned when the call was placed. Only a session Reach
placed gets its message: any other session gets the neutral answer, never "the last message for this
number". While Redis works, the live path opens no database connection.

The receiver here runs on a Redis of its own, which the test kills; Postgres is the shared test database.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from shared import voice_script
from shared.models import Call, Contact, ContactStatus
from shared.settings import load_settings
from simulator import wire
from tests.conftest import WEBHOOK_TOKEN
from tests.services import RedisServer, redis_server

pytestmark = pytest.mark.fault

CUSTOMER = "+254711000001"
AT_NUMBER = "+254711082369"
MESSAGE = "Your water bill of KES 1,200 is due on Friday & late fees <apply>."


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path) as server:
        yield server


@pytest.fixture
def placed_call(session: Any) -> str:
    """A call Reach placed: AT answered `/call` with this sessionId, recorded on the Call row."""
    contact = Contact(phone=CUSTOMER, status=ContactStatus.INACTIVE)
    session.add(contact)
    session.flush()
    session_id = wire.new_session_id()
    session.add(Call(contact_id=contact.id, phone=CUSTOMER, session_id=session_id, message=MESSAGE, send_state="sent"))
    session.commit()
    return session_id


def live(client: Any, session_id: str, **extra: str) -> Any:
    body = wire.voice_active(session_id, CUSTOMER, AT_NUMBER, **extra)
    return client.post(f"/voice?token={WEBHOOK_TOKEN}", data=body)


def said(response: Any) -> list[str]:
    assert response.status_code == 200, response.get_data(as_text=True)
    root = ET.fromstring(response.get_data())
    return [say.text or "" for say in root.iter("Say")]


def test_a_live_call_with_redis_down_hears_its_message_from_postgres(
    make_app: Any, own_redis: RedisServer, placed_call: str
) -> None:
    client = make_app(redis_url=own_redis.url).test_client()
    own_redis.kill()
    assert said(live(client, placed_call))[0] == MESSAGE
    # The key press that follows is answered too (nothing to look up).
    assert said(live(client, placed_call, dtmf_digits="1")) == [voice_script.THANKS]


def test_a_swahili_recording_with_redis_down_is_played_from_postgres(
    make_app: Any, own_redis: RedisServer, session: Any
) -> None:
    """The call row keeps the call's language and recording (issue 14): Postgres answers as Redis would."""
    from shared import prompts

    audio = "https://media.example.org/bill-sw.mp3"
    session_id = wire.new_session_id()
    session.add(Contact(phone=CUSTOMER, status=ContactStatus.INACTIVE, language="sw"))
    session.add(
        Call(phone=CUSTOMER, session_id=session_id, message="Bili", language="sw", audio_url=audio, send_state="sent")
    )
    session.commit()
    client = make_app(redis_url=own_redis.url).test_client()
    own_redis.kill()
    answer = live(client, session_id)
    assert [play.get("url") for play in ET.fromstring(answer.get_data()).iter("Play")] == [audio]
    assert said(answer) == [prompts.voice("sw").confirm]
    assert said(live(client, session_id, dtmf_digits="1")) == [prompts.voice("sw").thanks]


def test_a_session_reach_did_not_place_gets_the_neutral_answer(
    make_app: Any, own_redis: RedisServer, placed_call: str
) -> None:
    client = make_app(redis_url=own_redis.url).test_client()
    own_redis.kill()
    # Same customer, a session that is not ours: never the message of another call to this number.
    assert said(live(client, wire.new_session_id())) == [load_settings().voice_greeting]


def test_a_placed_session_from_another_number_or_inbound_gets_the_neutral_answer(
    make_app: Any, own_redis: RedisServer, placed_call: str
) -> None:
    """Reach placed this session to CUSTOMER: posted with another callerNumber, or as an inbound leg, it is
    not that customer's call."""
    client = make_app(redis_url=own_redis.url).test_client()
    own_redis.kill()
    other = wire.voice_active(placed_call, "+254711000002", AT_NUMBER)
    assert said(client.post(f"/voice?token={WEBHOOK_TOKEN}", data=other)) == [load_settings().voice_greeting]
    assert said(live(client, placed_call, direction="Inbound")) == [load_settings().voice_greeting]


def test_with_redis_up_the_live_path_opens_no_database_connection(
    make_app: Any, own_redis: RedisServer, placed_call: str
) -> None:
    import redis

    app = make_app(redis_url=own_redis.url)
    voice_script.remember(redis.Redis.from_url(own_redis.url), MESSAGE, phone=CUSTOMER, session_id=placed_call)
    checkouts: list[object] = []
    event.listen(app.extensions["reach"].engine, "checkout", lambda *args: checkouts.append(args))
    assert said(live(app.test_client(), placed_call))[0] == MESSAGE
    assert checkouts == []
