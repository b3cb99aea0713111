"""Who answered a call (issue 14): each ended call gets one grade, stored on the call when its final callback
is applied (worker/ingest/voice.py) and counted per cycle (`voice_detail.grades`).

- `acknowledged`: the customer pressed 1 after the message (`voice_script.speak` asks for it);
- `voicemail`: answered, no key pressed, and the call lasted about as long as its script takes to say: the
  whole message was played to something that never answered back. AT has no answering-machine detection
  (at-api.md §13), so this is a likelihood, not a fact; a person who listens to the end without pressing
  anything looks the same;
- `answered`: answered without acknowledging, and not like a voicemail (hung up early, say);
- `not_answered`: every other ending (busy, no answer, rejected, unreachable, bad number); the hang-up
  cause says which (`voice_detail.not_answered`).

A call AT accepted whose final callback never came (`unknown`, worker/cycles/calls.py) has no grade.
"""

from __future__ import annotations

import enum

from sqlalchemy import String, func, select, type_coerce
from sqlalchemy.orm import Session

from shared import prompts, voice_script
from shared.models import Call
from shared.status_policy import Action

#: Ordinary speech, and about what text-to-speech voices do: ~150 words a minute. An estimate, not a bound
#: (worker/cycles/calls.py bounds a call's length with a deliberately slow rate instead).
WORDS_PER_MINUTE = 150
#: A call lasting at least this share of its script's speaking time heard (nearly) all of it.
HEARD_ALL_SHARE = 0.8
#: After the script AT waits `DIGITS_TIMEOUT_SECONDS` for a key, then hangs up; this much more is allowed for
#: the pick-up and AT's own rounding. A call much longer than that is not a machine playing our script.
SLACK_SECONDS = 30


_POLICY_OUTCOMES = frozenset(action.value for action in Action)


class Grade(enum.StrEnum):
    ACKNOWLEDGED = "acknowledged"
    ANSWERED = "answered"
    VOICEMAIL = "voicemail"
    NOT_ANSWERED = "not_answered"


def spoken_seconds(text: str) -> float:
    """How long `text` takes to say, at WORDS_PER_MINUTE."""
    return len(text.split()) * 60 / WORDS_PER_MINUTE


def script_seconds(message: str, language: str | None = None) -> float:
    """How long the script of a call Reach placed takes to say: the message, then the confirm prompt in the
    call's language (`shared.prompts`). A call that played a recording is timed by its text: Reach does not
    know how long the recording is."""
    return spoken_seconds(message) + spoken_seconds(prompts.voice(language).confirm)


def likely_voicemail(duration: int | None, message: str | None, language: str | None = None) -> bool:
    """Answered, nothing pressed: did the call last about as long as its script (the whole of it was played)?"""
    if duration is None or not message:
        return False  # no script of ours (an inbound call) or no duration: nothing to compare with
    expected = script_seconds(message, language)
    longest = expected + voice_script.DIGITS_TIMEOUT_SECONDS + SLACK_SECONDS
    return HEARD_ALL_SHARE * expected <= duration <= longest


def grade(
    outcome: str | None, acknowledged: bool, duration: int | None, message: str | None, language: str | None = None
) -> Grade | None:
    """The grade of an ended call from its policy outcome (`Call.outcome`); None while it has not ended."""
    if acknowledged:
        return Grade.ACKNOWLEDGED
    if outcome is None or outcome not in _POLICY_OUTCOMES:
        return None  # not ended, or `unknown` (no final callback came)
    if outcome != Action.ANSWERED:
        return Grade.NOT_ANSWERED
    return Grade.VOICEMAIL if likely_voicemail(duration, message, language) else Grade.ANSWERED


def grade_call(call: Call) -> None:
    """Set `call.grade` from what the call row holds now (its final callback, and any key press)."""
    found = grade(call.outcome, call.acknowledged, call.duration_seconds, call.message, call.language)
    call.grade = found.value if found else None


def cycle_grades(session: Session, cycle_id: int) -> dict[str, int]:
    """Calls of a cycle per grade, every grade present (0 when none)."""
    column = type_coerce(Call.grade, String)
    counts = dict(
        session.execute(
            select(column, func.count()).where(Call.cycle_id == cycle_id, column.is_not(None)).group_by(column)
        ).all()
    )
    return {g.value: int(counts.get(g.value, 0)) for g in Grade}
