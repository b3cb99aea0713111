"""Erasing a contact (`DELETE /api/contacts/<phone>`, `reach contacts delete`), as Kenya's Data Protection
Act 2019 expects of personal data a customer asks to have deleted.

What goes: the contact row (name, tags, language, statuses); the number and the text of its messages and
calls (the rendered text may hold the name) and a call's recording link; the number in delivery reports;
its incoming SMS and USSD sessions; the raw callbacks about it; its voice scripts in the store (Redis, or the
database in the embedded mode). Work not yet sent is cancelled.

What stays, anonymised: the message and call rows themselves (number `erased`, no text, no contact) and the
cycle items, so a cycle's counts and what AT charged still add up to AT's invoice.

What is kept instead of the number: a keyed hash (HMAC-SHA256) in `erased_numbers`. The drain drops every
later callback whose number hashes to one of them (worker/ingest/erased.py), except a change of consent: a
STOP (or a START) after the erasure is recorded on the hash, so an opt-out outlives the erasure. When the
operator adds the number again (an import, a one-off send), the opt-out comes back on the new contact and
the hash goes (`restore_consent`).

The key: ERASURE_KEY when set (a comma-separated list; the first hashes new erasures, all are checked), so
the database alone cannot tell which numbers were erased; otherwise a random key Reach makes once and keeps
in `erasure_keys`, which hides the numbers from anyone reading the table but not from anyone holding the
whole database (Kenyan mobile numbers are few enough to try them all). The database's key is checked too,
so setting ERASURE_KEY later loses no erasure.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
import secrets
import time
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any

import phonenumbers
from psycopg.errors import LockNotAvailable
from sqlalchemy import delete, event, func, or_, select, text, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from shared import erasure_guard, voice_script
from shared.consent import newer_than_consent
from shared.cycle_items import of_contacts, pending_of_contacts
from shared.db import insert_for, is_postgres
from shared.models import (
    Call,
    Contact,
    ContactStatus,
    CycleItem,
    DlrEvent,
    IncomingSms,
    ItemState,
    Message,
    RawCallback,
    UssdSession,
)
from shared.operator_models import ErasedNumber, ErasureKey
from shared.settings import get_settings
from shared.store import STORE_ERRORS, Store

log = logging.getLogger(__name__)

#: What an erased contact's messages and calls keep in place of the number.
ERASED = "erased"
WHY = "the contact was erased"
#: How long an erasure holding the contact waits for one of its rows, and how long it keeps trying
#: (erase_contact).
ROW_WAIT = "200ms"
ERASURE_PATIENCE_SECONDS = 30
#: The payload fields of AT's callbacks that carry a customer's number (at-api.md §3 to §6).
PHONE_FIELDS = ("phoneNumber", "from", "callerNumber", "destinationNumber")

_erased = ErasedNumber.__table__
#: Where a session keeps the voice-script keys of the contacts it erased until it commits.
_SCRIPTS = "reach.erased_scripts"


def hash_keys(session: Session, configured: Sequence[str] | None = None, create: bool = False) -> list[bytes]:
    """The keys numbers are hashed with, the one for new erasures first: ERASURE_KEY's (`configured`, by
    default from the settings), then the database's own (made here when `create` and no ERASURE_KEY is set).
    Empty when nothing was ever erased without ERASURE_KEY."""
    configured = get_settings().erasure_keys if configured is None else configured
    own = session.scalar(select(ErasureKey.key).where(ErasureKey.id == 1))
    if own is None and create and not configured:
        session.execute(
            insert_for(session, ErasureKey).values(id=1, key=secrets.token_urlsafe(32)).on_conflict_do_nothing()
        )
        own = session.scalar(select(ErasureKey.key).where(ErasureKey.id == 1))
    return [key.encode() for key in [*configured, *([own] if own else [])]]


def phone_hash(key: bytes, phone: str) -> str:
    return hmac.new(key, phone.encode(), hashlib.sha256).hexdigest()


def erased_among(
    session: Session,
    phones: Collection[str],
    configured: Sequence[str] | None = None,
    keys: Sequence[bytes] | None = None,
) -> dict[str, str]:
    """Which of `phones` (E.164) were erased: {phone: its hash in `erased_numbers`}. One query, and one
    more for the keys unless they are given (`hash_keys`)."""
    keys = hash_keys(session, configured) if keys is None else keys
    if not keys or not phones:
        return {}
    by_hash = {phone_hash(key, phone): phone for phone in set(phones) for key in keys}
    found = session.scalars(select(ErasedNumber.phone_hash).where(ErasedNumber.phone_hash.in_(by_hash)))
    return {by_hash[digest]: digest for digest in found}


class ErasureBusy(Exception):
    """The contact's rows stayed in use by other work for ERASURE_PATIENCE_SECONDS: nothing was erased."""


def erase_contact(session: Session, store: Store, phone: str, configured: Sequence[str] | None = None) -> bool:
    """Erase the contact with this E.164 number and its personal data (see the module); False if there is
    no such contact. The caller commits; its voice scripts leave the store once that commit is done (the
    embedded store writes to the same SQLite file, which the erasure holds locked until then).

    On Postgres the erasure gives way rather than deadlock. After any plan under way (shared/erasure_guard.py) it
    locks the contact (FOR UPDATE: it will be deleted), then rows that other work locks before the contact: a
    dispatcher its cycle items (then the contact, through its messages' foreign key), a drain the messages its
    reports move (then the contacts that follow them). Waiting for such a row while holding the contact closes a
    cycle, and Postgres kills whichever side looks first, the drain's batch or the operator's request. So once it
    holds the contact the erasure waits at most ROW_WAIT for any row, below Postgres' deadlock_timeout (1 s): then
    it lets go of all it took (a savepoint), and starts again a moment later, until ERASURE_PATIENCE_SECONDS
    (then ErasureBusy)."""
    if not is_postgres(session):
        return _erase(session, store, phone, configured)
    give_up = time.monotonic() + ERASURE_PATIENCE_SECONDS
    while True:
        try:
            with session.begin_nested():
                return _erase(session, store, phone, configured)
        except OperationalError as exc:
            if not isinstance(exc.orig, LockNotAvailable):
                raise
            if time.monotonic() > give_up:
                busy = f"its rows stayed in use for {ERASURE_PATIENCE_SECONDS} s"
                raise ErasureBusy(f"{phone} not erased: {busy}; try again") from exc
            log.info("an erasure gave way to work holding the contact's rows; trying again")
            time.sleep(random.uniform(0.05, 0.25))


def _erase(session: Session, store: Store, phone: str, configured: Sequence[str] | None) -> bool:
    erasure_guard.erasure_waits_for_plans(session)  # a plan under way finishes first (shared/erasure_guard.py)
    contact = session.scalars(select(Contact).where(Contact.phone == phone).with_for_update()).one_or_none()
    if contact is None:
        return False
    previous = _set_lock_timeout(session, ROW_WAIT)
    at = datetime.now(UTC)
    _remember(session, contact, configured, at)
    at_ids = list(
        session.scalars(
            select(Message.at_message_id).where(Message.contact_id == contact.id, Message.at_message_id.is_not(None))
        )
    )
    session_ids = list(session.scalars(select(Call.session_id).where(_calls_of(contact), Call.session_id.is_not(None))))
    _cancel_work(session, contact.id, at)
    _anonymise(session, contact, at_ids)
    scrubbed = session.execute(
        update(RawCallback)
        .where(_raw_about(phone, at_ids, session_ids))
        .values(payload={"erased": at.isoformat()})
        .execution_options(synchronize_session=False)
    ).rowcount
    session.delete(contact)
    session.flush()
    scripts = [voice_script.placing_key(phone), *(voice_script.placed_key(sid, phone) for sid in session_ids)]
    session.info.setdefault(_SCRIPTS, []).append((store, scripts))
    _set_lock_timeout(session, previous)
    log.info("contact %s erased: %d raw callbacks scrubbed", contact.id, scrubbed)
    return True


def _set_lock_timeout(session: Session, wait: str | None) -> str | None:
    """Postgres' lock_timeout for the rest of this transaction (undone with a savepoint rolled back to); the one
    before. Nothing on SQLite."""
    if wait is None or not is_postgres(session):
        return None
    set_it = "SELECT current_setting('lock_timeout'), set_config('lock_timeout', :wait, true)"
    return session.execute(text(set_it), {"wait": wait}).one()[0]


@event.listens_for(Session, "after_commit")
def _forget_scripts(session: Session) -> None:
    for store, keys in session.info.pop(_SCRIPTS, []):
        try:
            for key in keys:
                store.unmark(key)
        except STORE_ERRORS as exc:  # a cache: what is left expires within SCRIPT_TTL_SECONDS
            log.warning("a contact was erased, but its voice scripts could not be removed now: %s", exc)


@event.listens_for(Session, "after_soft_rollback")
def _keep_scripts(session: Session, previous_transaction: Any) -> None:
    if previous_transaction.parent is None:  # the erasure did not happen
        session.info.pop(_SCRIPTS, None)


def _calls_of(contact: Contact) -> ColumnElement[bool]:
    """The contact's calls, and calls from its number made before it was a contact (both indexed). A
    message always has its contact (messages.phone has no index to scan)."""
    return or_(Call.contact_id == contact.id, Call.phone == contact.phone)


def _remember(session: Session, contact: Contact, configured: Sequence[str] | None, at: datetime) -> None:
    """The number's hash, with the contact's opt-out if it has one, for callbacks and re-imports to come."""
    digest = phone_hash(hash_keys(session, configured, create=True)[0], contact.phone)
    opted_out = contact.status is ContactStatus.OPTED_OUT
    opted_out_at = (contact.opted_out_at or contact.consent_at or at) if opted_out else None
    values = {
        "erased_at": at,
        "opted_out_at": opted_out_at,
        "consent_at": contact.consent_at or opted_out_at,
        "consent_by": contact.consent_by,
    }
    stmt = insert_for(session, ErasedNumber).values(phone_hash=digest, **values)
    session.execute(stmt.on_conflict_do_update(index_elements=["phone_hash"], set_=values))


def _cancel_work(session: Session, contact_id: int, at: datetime) -> None:
    """Nothing more is sent to the contact: its pending cycle items, its queued one-off SMS and calls."""
    session.execute(
        update(CycleItem)
        .where(pending_of_contacts(session, [contact_id]))
        .values(state=ItemState.CANCELLED, error=WHY, updated_at=at)
    )
    for model in (Message, Call):
        session.execute(
            update(model)
            .where(model.contact_id == contact_id, model.send_state == "queued")
            .values(send_state="failed", send_error=f"not sent: {WHY}")
        )


def _anonymise(session: Session, contact: Contact, at_ids: list[str]) -> None:
    """Rows that count in reports lose the number, the text and the link to the contact; the rest go."""
    session.execute(
        update(Message).where(Message.contact_id == contact.id).values(phone=ERASED, text="", contact_id=None),
        execution_options={"synchronize_session": False},
    )
    session.execute(
        update(Call)
        .where(_calls_of(contact))
        .values(phone=ERASED, message=None, recording_url=None, contact_id=None)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(CycleItem).where(of_contacts(session, [contact.id])).values(contact_id=None),
        execution_options={"synchronize_session": False},
    )
    reports = or_(DlrEvent.phone == contact.phone, DlrEvent.at_message_id.in_(at_ids))
    session.execute(update(DlrEvent).where(reports).values(phone=None))
    session.execute(
        delete(IncomingSms).where(IncomingSms.from_phone == contact.phone)  # its contact_id is the number's
    )
    session.execute(delete(UssdSession).where(UssdSession.phone == contact.phone))


def spellings(phone: str) -> list[str]:
    """How a callback may spell this E.164 number: as is, without `+`, and in national form (`0711000001`)."""
    number = phonenumbers.parse(phone)
    national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    return [phone, phone.lstrip("+"), "".join(ch for ch in national if ch.isdigit())]


def _raw_about(phone: str, at_ids: list[str], session_ids: list[str]) -> ColumnElement[bool]:
    """Raw callbacks about the number: one of its spellings in a number field, or one of its messages' or
    calls' ids. A scan of the table (kept CALLBACK_RETENTION_DAYS): an erasure is rare."""
    forms = spellings(phone)
    payload = RawCallback.payload
    about = [payload[name].as_string().in_(forms) for name in PHONE_FIELDS]
    if at_ids:
        about.append((RawCallback.kind == "dlr") & payload["id"].as_string().in_(at_ids))
    if session_ids:
        about.append((RawCallback.kind == "voice") & payload["sessionId"].as_string().in_(session_ids))
    return or_(*about)


def record_consent(session: Session, digest: str, opted_out: bool, at: datetime, by: str) -> bool:
    """A STOP or START about an erased number, kept on its hash; ordered by time like any consent change."""
    consent = _erased.c.consent_at
    result = session.execute(
        update(ErasedNumber)
        .where(ErasedNumber.phone_hash == digest, or_(consent.is_(None), consent <= at))
        .values(
            opted_out_at=func.coalesce(_erased.c.opted_out_at, at) if opted_out else None,
            consent_at=at,
            consent_by=by,
        )
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


def restore_consent(session: Session, phones: Collection[str], configured: Sequence[str] | None = None) -> int:
    """Numbers the operator just added again: an opt-out kept from before the erasure comes back on the
    contact (unless its consent changed since), and the hash goes. Returns how many were erased numbers."""
    found = erased_among(session, phones, configured)
    if not found:
        return 0
    rows = session.scalars(select(ErasedNumber).where(ErasedNumber.phone_hash.in_(found.values()))).all()
    phone_of = {digest: phone for phone, digest in found.items()}
    for row in rows:
        if row.opted_out_at is not None:
            session.execute(
                update(Contact)
                .where(
                    Contact.phone == phone_of[row.phone_hash], newer_than_consent(row.consent_at or row.opted_out_at)
                )
                .values(
                    status=ContactStatus.OPTED_OUT,
                    opted_out_at=row.opted_out_at,
                    consent_at=row.consent_at,
                    consent_by=row.consent_by,
                )
            )
    every_key = [phone_hash(key, phone) for phone in found for key in hash_keys(session, configured)]
    session.execute(delete(ErasedNumber).where(ErasedNumber.phone_hash.in_(every_key)))
    log.info("%d numbers added again after their erasure", len(found))
    return len(found)
