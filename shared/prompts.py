"""What Reach itself says to a customer, per language: the call's prompts and the USSD menu (issue 14).

Data, not code: one table per language, English first. A language with no table here gets English (AT
publishes no Swahili text-to-speech voice, at-api.md §13, so a `<Say>` in Swahili is read by whatever voice
AT has; an operator who needs it spoken well records it and gives `voice_audio_url`). The Swahili is plain
and short on purpose: USSD screens hold 182 characters, and a prompt is heard once.

Each table has the same keys as English; tests/test_voice_languages.py checks every screen still fits.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The language whose texts are the fallback for any other; the texts as they were before languages.
FALLBACK = "en"


@dataclass(frozen=True)
class VoicePrompts:
    confirm: str  # after the message, inside `<GetDigits>`
    thanks: str  # after the customer pressed a key


@dataclass(frozen=True)
class UssdTexts:
    main_menu: str
    prefer_sms: str
    prefer_voice: str
    confirm_stop: str
    stopped: str
    kept: str
    not_an_option: str
    nothing_sent: str
    read_confirmed: str
    got_it: str
    more: str
    unknown_number: str  # `{phone}` is filled in
    you_chose: str  # `{channel}` is filled in
    status_unavailable: str
    messages_unavailable: str
    status_words: dict[str, str]
    channel_words: dict[str, str]


VOICE = {
    "en": VoicePrompts(confirm="To confirm you got this message, press 1.", thanks="Thank you. Goodbye."),
    "sw": VoicePrompts(confirm="Bonyeza 1 kuthibitisha kwamba umepata ujumbe huu.", thanks="Asante. Kwaheri."),
}

USSD = {
    "en": UssdTexts(
        main_menu="CON Welcome. Choose:\n1. My status\n2. Get messages by SMS\n3. Get messages by voice call"
        "\n4. Stop messages\n5. My last message",
        prefer_sms="END Done. We will send you our messages by SMS.",
        prefer_voice="END Done. We will call you with our messages.",
        confirm_stop="CON Stop all our messages?\n1. Yes, stop them\n2. No, keep them",
        stopped="END You will get no more messages from us. Dial again and choose 2 or 3 to come back.",
        kept="END OK, you will keep getting our messages.",
        not_an_option="END Sorry, that is not an option. Please dial again.",
        nothing_sent="END We have not sent you a message yet.",
        read_confirmed="END Thank you for confirming you got our message.",
        got_it="Got it",
        more="More",
        unknown_number="END {phone} is not on our list. Dial again and choose 2 or 3 to join.",
        you_chose=" You chose {channel}.",
        status_unavailable="END Sorry, we cannot look up your status right now. Please try again later.",
        messages_unavailable="END Sorry, we cannot look up your messages right now. Please try again later.",
        status_words={
            "new": "registered; your first message is on its way",
            "pending": "registered; our last SMS is on its way",
            "active": "active; our SMS reach you",
            "inactive": "registered; our SMS did not reach you, so we will call you",
            "opted_out": "unsubscribed; you get no messages",
            "invalid": "not reachable",
        },
        channel_words={"sms": "SMS", "voice": "voice call"},
    ),
    "sw": UssdTexts(
        main_menu="CON Karibu. Chagua:\n1. Hali yangu\n2. Pata ujumbe kwa SMS\n3. Pata ujumbe kwa simu"
        "\n4. Acha ujumbe\n5. Ujumbe wangu wa mwisho",
        prefer_sms="END Sawa. Tutakutumia ujumbe wetu kwa SMS.",
        prefer_voice="END Sawa. Tutakupigia simu na ujumbe wetu.",
        confirm_stop="CON Acha ujumbe wetu wote?\n1. Ndiyo, acha\n2. Hapana, endelea",
        stopped="END Hutapata ujumbe zaidi kutoka kwetu. Piga tena uchague 2 au 3 kurudi.",
        kept="END Sawa, utaendelea kupata ujumbe wetu.",
        not_an_option="END Samahani, hilo si chaguo. Tafadhali piga tena.",
        nothing_sent="END Bado hatujakutumia ujumbe.",
        read_confirmed="END Asante kwa kuthibitisha kwamba umepata ujumbe wetu.",
        got_it="Nimepata",
        more="Zaidi",
        unknown_number="END {phone} haiko kwenye orodha yetu. Piga tena uchague 2 au 3 kujiunga.",
        you_chose=" Ulichagua {channel}.",
        status_unavailable="END Samahani, hatuwezi kuona hali yako sasa. Tafadhali jaribu tena baadaye.",
        messages_unavailable="END Samahani, hatuwezi kuona ujumbe wako sasa. Tafadhali jaribu tena baadaye.",
        status_words={
            "new": "umesajiliwa; ujumbe wako wa kwanza unakuja",
            "pending": "umesajiliwa; SMS yetu ya mwisho inakuja",
            "active": "hai; SMS zetu zinakufikia",
            "inactive": "umesajiliwa; SMS zetu hazikukufikia, kwa hiyo tutakupigia simu",
            "opted_out": "umejiondoa; hupati ujumbe wowote",
            "invalid": "haipatikani",
        },
        channel_words={"sms": "SMS", "voice": "simu"},
    ),
}


def table_language(*candidates: str | None) -> str:
    """The first of `candidates` (language codes as contacts store them, `sw-KE` counting as `sw`) that has
    texts here, else FALLBACK."""
    for candidate in candidates:
        base = (candidate or "").split("-")[0].lower()
        if base in VOICE:
            return base
    return FALLBACK


def voice(language: str | None) -> VoicePrompts:
    return VOICE[table_language(language)]


def ussd(language: str | None) -> UssdTexts:
    return USSD[table_language(language)]


def longest(what: str) -> int:
    """The longest voice prompt `what` (`confirm`, `thanks`) in any language: a call's length is bounded by it."""
    return max(len(getattr(prompts, what)) for prompts in VOICE.values())
