"""USSD steps: the session's longest input and first effect; a menu choice changes the contact's preferences."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import case, func
from sqlalchemy.orm import Session

from shared import last_message, reachability, ussd
from shared.callbacks import (
    UssdStep,
    phone_or_raw,
)
from shared.consent import BY_USSD, opt_in, opt_out
from shared.db import greatest, insert_for
from shared.models import (
    Channel,
    UssdSession,
)

log = logging.getLogger(__name__)


def apply_ussd_step(session: Session, received_at: datetime, step: UssdStep) -> None:
    phone = phone_or_raw(step.phone_number) or step.phone_number
    screen = ussd.step(step.text)
    text = step.text or ""
    outcome = screen.effect.value if screen.effect not in ussd.READ_ONLY else None
    stmt = insert_for(session, UssdSession).values(
        session_id=step.session_id,
        phone=phone,
        service_code=step.service_code,
        network_code=step.network_code,
        last_text=text,
        outcome=outcome,
        started_at=received_at,
        updated_at=received_at,
    )
    # Steps may arrive out of order: keep the longest input and the first effect.
    table = UssdSession.__table__
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=["session_id"],
            set_={
                "last_text": case(
                    (func.length(stmt.excluded.last_text) > func.length(table.c.last_text), stmt.excluded.last_text),
                    else_=table.c.last_text,
                ),
                "outcome": func.coalesce(table.c.outcome, stmt.excluded.outcome),
                "updated_at": greatest(session, table.c.updated_at, stmt.excluded.updated_at),
            },
        )
    )
    reachability.mark_reached(session, phone, received_at, reachability.ReachedBy.USSD)
    match screen.effect:
        case ussd.Effect.PREFER_SMS:
            opt_in(session, phone, received_at, Channel.SMS, by=BY_USSD)
        case ussd.Effect.PREFER_VOICE:
            opt_in(session, phone, received_at, Channel.VOICE, by=BY_USSD)
        case ussd.Effect.OPT_OUT:
            opt_out(session, phone, received_at, by=BY_USSD)
        case ussd.Effect.CONFIRM_READ:
            last_message.confirm_read(session, phone, received_at)
