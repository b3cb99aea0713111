"""`reach cycle run` and `reach schedule add` with a voice per language (issue 14): `--voice-message-lang
LANG=TEXT` and `--voice-audio-url [LANG=]URL`, through the same checks as the operator API."""

from __future__ import annotations

from typing import Any

import pytest
import redis as redis_lib
from click.testing import CliRunner
from sqlalchemy import select

from reach_cli.main import EXIT_USAGE
from shared.models import Cycle, Schedule
from tests.cli_support import error_of, invoke

AUDIO = "https://media.example.org/bill-sw.mp3"


def test_run_takes_a_voice_message_and_a_recording_per_language(
    runner: CliRunner, session: Any, task_lists: redis_lib.Redis
) -> None:
    result = invoke(
        runner, "cycle", "run", "--message", "Bill due",
        "--voice-message-lang", "sw=Bili yako iko tayari", "--voice-message-lang", "en=Your bill is ready",
        "--voice-audio-url", f"sw={AUDIO}",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    cycle = session.scalars(select(Cycle)).one()
    assert cycle.voice_message is None
    assert cycle.voice_languages == {
        "voice_message": {"sw": "Bili yako iko tayari", "en": "Your bill is ready"},
        "voice_audio_url": {"sw": AUDIO},
    }


def test_run_takes_one_recording_for_everyone(runner: CliRunner, session: Any, task_lists: redis_lib.Redis) -> None:
    result = invoke(runner, "cycle", "run", "--message", "Bill due", "--voice-audio-url", AUDIO)
    assert result.exit_code == 0, result.stderr
    assert session.scalars(select(Cycle)).one().voice_languages == {"voice_audio_url": AUDIO}


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--voice-message-lang", "Bili yako"], "--voice-message-lang"),  # no LANG=
        (["--voice-message-lang", "xyzw=Bili"], "--voice-message-lang"),
        (["--voice-message-lang", "sw="], "--voice-message-lang.sw"),
        (["--voice-message", "Hi", "--voice-message-lang", "sw=Bili"], "--voice-message-lang"),
        (["--voice-audio-url", "sw=https://media.example.org/bill.ogg"], "--voice-audio-url.sw"),
        (["--voice-audio-url", "ftp://media.example.org/bill.mp3"], "--voice-audio-url"),
        (["--voice-audio-url", AUDIO, "--voice-audio-url", f"sw={AUDIO}"], "--voice-audio-url"),
    ],
)
def test_run_refuses_a_bad_voice_option(
    runner: CliRunner, session: Any, task_lists: redis_lib.Redis, args: list[str], named: str
) -> None:
    result = invoke(runner, "cycle", "run", "--message", "Bill due", *args)
    assert result.exit_code == EXIT_USAGE
    assert named in error_of(result)
    assert session.scalars(select(Cycle)).first() is None


def test_schedule_add_takes_a_voice_per_language(runner: CliRunner, session: Any) -> None:
    result = invoke(
        runner, "schedule", "add", "weekly", "--cron", "0 9 * * 1", "--message", "Bill due",
        "--voice-message-lang", "sw=Bili yako iko tayari", "--voice-audio-url", AUDIO,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    schedule = session.scalars(select(Schedule)).one()
    assert schedule.voice_languages == {"voice_message": {"sw": "Bili yako iko tayari"}, "voice_audio_url": AUDIO}
