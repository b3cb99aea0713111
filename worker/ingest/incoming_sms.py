"""Two-way SMS from customers: stored once by AT's id; STOP and START change the contact's consent."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.orm import Session

from shared import reachability
from shared.callbacks import (
    IncomingSms,
    phone_or_raw,
)
from shared.db import insert_for
from shared.models import (
    IncomingSms as IncomingSmsRow,
)
from worker.ingest.contacts import find_contact_id, opt_in, opt_out

log = logging.getLogger(__name__)

OPT_OUT_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "END", "CANCEL"})
OPT_IN_WORDS = frozenset({"START"})


def keyword_of(text: str) -> str | None:
    """The keyword Reach acts on (`STOP`, `START`, ...) when it is the text's first word."""
    words = text.split()
    word = words[0].upper().strip(".!") if words else ""
    return word if word in OPT_OUT_WORDS | OPT_IN_WORDS else None


def apply_incoming_sms(session: Session, received_at: datetime, sms: IncomingSms) -> None:
    phone = phone_or_raw(sms.from_) or sms.from_
    text = sms.text or ""
    keyword = keyword_of(text)
    stmt = (
        insert_for(session, IncomingSmsRow)
        .values(
            at_id=sms.id,
            from_phone=phone,
            to=sms.to,
            text=text,
            link_id=sms.link_id,
            network_code=sms.network_code,
            sent_date=sms.date,
            keyword=keyword,
            contact_id=find_contact_id(session, phone),
            received_at=received_at,
        )
        .on_conflict_do_nothing(index_elements=["at_id"])
        .returning(IncomingSmsRow.id)
    )
    if session.scalar(stmt) is None:
        return  # AT posted it twice
    reachability.mark_reached(session, phone, received_at, reachability.ReachedBy.SMS)
    if keyword in OPT_OUT_WORDS:
        opt_out(session, phone, received_at)
        log.info("contact %s opted out by SMS (%s)", phone, keyword)
    elif keyword in OPT_IN_WORDS and find_contact_id(session, phone) is not None:
        opt_in(session, phone, received_at)
        log.info("contact %s opted back in by SMS", phone)
