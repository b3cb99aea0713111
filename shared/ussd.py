"""The USSD menu: a pure function of the inputs so far, shared by the receiver (to answer) and the
drain task (to apply the customer's choice).

AT sends every input of the session joined by `*` (`""`, `"4"`, `"4*1"`); a screen starts `CON ` to
continue or `END ` to finish, and must stay under 182 characters (at-api.md §6).
"""

from __future__ import annotations

import enum
import textwrap
from dataclasses import dataclass

from shared import prompts

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


MAIN_MENU = prompts.USSD[prompts.FALLBACK].main_menu
#: "My last message": each screen is a page of it, then these choices (`1` on every page, `2` while more follow).
GOT_IT, MORE = "1", "2"


def page_choices(texts: prompts.UssdTexts, more: bool) -> str:
    return f"\n{GOT_IT}. {texts.got_it}" + (f"\n{MORE}. {texts.more}" if more else "")


#: Room for the text on one page: a screen less `CON `, the widest `(NN/NN) ` page mark and the widest choices
#: of any language (so a message is paged the same whoever reads it).
PAGE_ROOM = MAX_SCREEN - len("CON ") - len("(99/99) ") - max(len(page_choices(t, True)) for t in prompts.USSD.values())


def step(text: str | None, language: str | None = None) -> Screen:
    """The screen for the inputs so far (AT's `text`), in the contact's `language` (`shared.prompts`)."""
    texts = prompts.ussd(language)
    inputs = [part.strip() for part in (text or "").split("*")] if text else []
    match inputs:
        case []:
            return Screen(texts.main_menu)
        case ["1"]:
            return Screen("END ", Effect.SHOW_STATUS)  # the receiver fills in the status
        case ["2"]:
            return Screen(texts.prefer_sms, Effect.PREFER_SMS)
        case ["3"]:
            return Screen(texts.prefer_voice, Effect.PREFER_VOICE)
        case ["4"]:
            return Screen(texts.confirm_stop)
        case ["4", "1"]:
            return Screen(texts.stopped, Effect.OPT_OUT)
        case ["4", "2"]:
            return Screen(texts.kept)
        case ["5", *more] if all(choice == MORE for choice in more):
            return Screen("CON ", Effect.SHOW_LAST_MESSAGE, page=len(more))
        case ["5", *more, last] if last == GOT_IT and all(choice == MORE for choice in more):
            return Screen(texts.read_confirmed, Effect.CONFIRM_READ)
        case _:
            return Screen(texts.not_an_option)


def status_screen(phone: str, status: str | None, preference: str | None, language: str | None = None) -> str:
    """The `END` text of "My status"; `status` None means we do not know the number."""
    texts = prompts.ussd(language)
    if status is None:
        return texts.unknown_number.format(phone=phone)
    words = texts.status_words.get(status, status)
    text = f"END {phone}: {words}."
    if preference in texts.channel_words and status not in {"opted_out", "invalid"}:
        text += texts.you_chose.format(channel=texts.channel_words[preference])
    return text[:MAX_SCREEN]


def message_pages(text: str) -> list[str]:
    """The message in pages of at most PAGE_ROOM characters, split between words (a word longer than a page
    is split); runs of white space become one space, as a USSD screen shows them anyway."""
    return textwrap.wrap(" ".join(text.split()), width=PAGE_ROOM) or [""]


def last_message_screen(text: str | None, page: int, language: str | None = None) -> str:
    """The screen of "My last message" for `page` (past the end: the last page); `text` None: nothing sent."""
    texts = prompts.ussd(language)
    if text is None:
        return texts.nothing_sent
    pages = message_pages(text)
    index = min(page, len(pages) - 1)
    mark = f"({index + 1}/{len(pages)}) " if len(pages) > 1 else ""
    choices = page_choices(texts, more=index < len(pages) - 1)
    return f"CON {mark}{pages[index]}{choices}"
