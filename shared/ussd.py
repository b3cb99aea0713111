"""The USSD menu: a pure function of the inputs so far, shared by the receiver (to answer) and the
drain task (to apply the customer's choice).

AT sends every input of the session joined by `*` (`""`, `"4"`, `"4*1"`); a screen starts `CON ` to
continue or `END ` to finish, and must stay under 182 characters (at-api.md §6).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

MAX_SCREEN = 182


class Effect(enum.StrEnum):
    NONE = "none"
    SHOW_STATUS = "show_status"  # read-only
    PREFER_SMS = "preference:sms"
    PREFER_VOICE = "preference:voice"
    OPT_OUT = "opt_out"


@dataclass(frozen=True)
class Screen:
    text: str  # the full body, `CON ...` or `END ...`
    effect: Effect = Effect.NONE


MAIN_MENU = (
    "CON Welcome. Choose:\n1. My status\n2. Get messages by SMS\n3. Get messages by voice call\n4. Stop messages"
)
CONFIRM_STOP = "CON Stop all our messages?\n1. Yes, stop them\n2. No, keep them"

#: How the customer's status reads on the status screen.
STATUS_WORDS = {
    "new": "registered; your first message is on its way",
    "pending": "registered; our last SMS is on its way",
    "active": "active; our SMS reach you",
    "inactive": "registered; our SMS did not reach you, so we will call you",
    "opted_out": "unsubscribed; you get no messages",
    "invalid": "not reachable",
}
CHANNEL_WORDS = {"sms": "SMS", "voice": "voice call"}


def step(text: str | None) -> Screen:
    """The screen for the inputs so far (AT's `text`)."""
    inputs = [part.strip() for part in (text or "").split("*")] if text else []
    match inputs:
        case []:
            return Screen(MAIN_MENU)
        case ["1"]:
            return Screen("END ", Effect.SHOW_STATUS)  # the receiver fills in the status
        case ["2"]:
            return Screen("END Done. We will send you our messages by SMS.", Effect.PREFER_SMS)
        case ["3"]:
            return Screen("END Done. We will call you with our messages.", Effect.PREFER_VOICE)
        case ["4"]:
            return Screen(CONFIRM_STOP)
        case ["4", "1"]:
            return Screen(
                "END You will get no more messages from us. Dial again and choose 2 or 3 to come back.",
                Effect.OPT_OUT,
            )
        case ["4", "2"]:
            return Screen("END OK, you will keep getting our messages.")
        case _:
            return Screen("END Sorry, that is not an option. Please dial again.")


def status_screen(phone: str, status: str | None, preference: str | None) -> str:
    """The `END` text of "My status"; `status` None means we do not know the number."""
    if status is None:
        return f"END {phone} is not on our list. Dial again and choose 2 or 3 to join."
    words = STATUS_WORDS.get(status, status)
    text = f"END {phone}: {words}."
    if preference in CHANNEL_WORDS and status not in {"opted_out", "invalid"}:
        text += f" You chose {CHANNEL_WORDS[preference]}."
    return text[:MAX_SCREEN]
