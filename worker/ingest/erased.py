"""Callbacks about an erased number (shared/erasure.py): dropped before anything of them is stored, the
number included, except a change of consent, which is kept on the number's hash so it outlives the erasure."""

from __future__ import annotations

import logging

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from shared import erasure, ussd
from shared.callbacks import phone_or_raw
from shared.consent import BY_SMS_START, BY_SMS_STOP, BY_USSD
from shared.inbox import InboxItem
from shared.operator_models import ErasedNumber
from worker.ingest.batch_sql import fetch, is_postgres
from worker.ingest.incoming_sms import OPT_OUT_WORDS, keyword_of

log = logging.getLogger(__name__)

#: The fields of each callback kind that may carry the customer's number (at-api.md §3 to §6).
NUMBER_FIELDS = {
    "dlr": ("phoneNumber",),
    "sms": ("from",),
    "voice": ("callerNumber", "destinationNumber"),
    "ussd": ("phoneNumber",),
}
#: A USSD choice that is a change of consent.
USSD_CONSENT = {ussd.Effect.OPT_OUT: True, ussd.Effect.PREFER_SMS: False, ussd.Effect.PREFER_VOICE: False}


def numbers_of(item: InboxItem) -> list[str]:
    found = (e164(item.data.get(name)) for name in NUMBER_FIELDS.get(item.kind, ()))
    return [phone for phone in found if phone]


def e164(raw: str | None) -> str | None:
    """The number as the erasure hashed it. AT sends E.164, taken as it is: parsing every number of a
    batch cost ~30 µs each (phonenumbers), 15 ms a batch of 500."""
    if raw and raw.startswith("+") and raw[1:].isdigit():
        return raw
    return phone_or_raw(raw)


def drop_erased(session: Session, items: list[InboxItem]) -> list[InboxItem]:
    """The items not about an erased number; a STOP or START among the others is recorded on its hash.
    Nothing is hashed until a number was erased: one cheap look a batch (`anything_erased`)."""
    if not items or not anything_erased(session):
        return items
    keys = erasure.hash_keys(session)
    if not keys:
        return items
    erased = erasure.erased_among(session, {p for item in items for p in numbers_of(item)}, keys=keys)
    if not erased:
        return items
    kept = []
    for item in items:
        digest = next((erased[p] for p in numbers_of(item) if p in erased), None)
        if digest is None:
            kept.append(item)
            continue
        change = consent_change(item)
        if change is not None:
            opted_out, by = change
            erasure.record_consent(session, digest, opted_out, item.received_at, by)
        log.info("dropped %s callback %s: its number was erased", item.kind, item.id)
    return kept


#: On Postgres on the driver's cursor, which prepares it: this runs for every drained batch, and through the ORM
#: the keys' look it replaces was a tenth of the drain's time per batch (py-spy, bench/RESULTS.md "drain batches
#: end to end").
ANYTHING_ERASED = "SELECT EXISTS (SELECT 1 FROM erased_numbers)"


def anything_erased(session: Session) -> bool:
    """Whether any number was ever erased (an erasure always leaves its hash in `erased_numbers`)."""
    if is_postgres(session):
        return bool(fetch(session, ANYTHING_ERASED, {})[0][0])
    return bool(session.scalar(select(exists().select_from(ErasedNumber))))


def consent_change(item: InboxItem) -> tuple[bool, str] | None:
    """(opted out?, by whom) when the callback is the customer's STOP or START, by SMS or USSD."""
    if item.kind == "sms":
        keyword = keyword_of(item.data.get("text") or "")
        if keyword is not None:
            return (True, BY_SMS_STOP) if keyword in OPT_OUT_WORDS else (False, BY_SMS_START)
    if item.kind == "ussd":
        effect = ussd.step(item.data.get("text")).effect
        if effect in USSD_CONSENT:
            return USSD_CONSENT[effect], BY_USSD
    return None
