"""The USSD menu: a pure function of the inputs so far, shared by the receiver (to answer) and the
drain task (to apply the customer's choice).

AT sends every input of the session joined by `*` (`""`, `"4"`, `"4*1"`); a screen starts `CON ` to
continue or `END ` to finish, and must stay under 182 characters (at-api.md §6).
"""

from __future__ import annotations

import enum
import textwrap
from dataclasses import dataclass

MAX_SCREEN = 182


class Effect(enum.StrEnum):
    NONE = "none"
    SHOW_STATUS = "show_status"  # read-only
    PREFER_SMS = "preference:sms"
    PREFER_VOICE = "preference:voice"
    OPT_OUT = "opt_out"
    SHOW_LAST_MESSAGE = "show_last_message"  # read-only: the receiver fills in the page (`Screen.page`)
    CONFIRM_READ = "read_confirmed"  # the customer read their last message: reached in its cycle


#: Effects that change nothing on the contact (not kept as the session's outcome).
READ_ONLY = frozenset({Effect.NONE, Effect.SHOW_STATUS, Effect.SHOW_LAST_MESSAGE})


@dataclass(frozen=True)
class Screen:
    text: str  # the full body, `CON ...` or `END ...`
    effect: Effect = Effect.NONE
    #: Which page of the last message to show (SHOW_LAST_MESSAGE): how many times "more" was chosen.
    page: int = 0


MAIN_MENU = (
    "CON Welcome. Choose:\n1. My status\n2. Get messages by SMS\n3. Get messages by voice call\n4. Stop messages"
    "\n5. My last message"
)
#: "My last message": each screen is a page of it, then these choices (`1` on every page, `2` while more follow).
GOT_IT, MORE = "1", "2"
PAGE_CHOICES = f"\n{GOT_IT}. Got it\n{MORE}. More"
#: Room for the text on one page: a screen less `CON `, the widest `(NN/NN) ` page mark and the choices.
PAGE_ROOM = MAX_SCREEN - len("CON ") - len("(99/99) ") - len(PAGE_CHOICES)
NOTHING_SENT = "END We have not sent you a message yet."
READ_CONFIRMED = "END Thank you for confirming you got our message."
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
        case ["5", *more] if all(choice == MORE for choice in more):
            return Screen("CON ", Effect.SHOW_LAST_MESSAGE, page=len(more))
        case ["5", *more, last] if last == GOT_IT and all(choice == MORE for choice in more):
            return Screen(READ_CONFIRMED, Effect.CONFIRM_READ)
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


def message_pages(text: str) -> list[str]:
    """The message in pages of at most PAGE_ROOM characters, split between words (a word longer than a page
    is split); runs of white space become one space, as a USSD screen shows them anyway."""
    return textwrap.wrap(" ".join(text.split()), width=PAGE_ROOM) or [""]


def last_message_screen(text: str | None, page: int) -> str:
    """The screen of "My last message" for `page` (past the end: the last page); `text` None: nothing sent."""
    if text is None:
        return NOTHING_SENT
    pages = message_pages(text)
    index = min(page, len(pages) - 1)
    mark = f"({index + 1}/{len(pages)}) " if len(pages) > 1 else ""
    choices = PAGE_CHOICES if index < len(pages) - 1 else f"\n{GOT_IT}. Got it"
    return f"CON {mark}{pages[index]}{choices}"
