"""The operator's changes to one contact (design §4): `PATCH` and `DELETE /api/contacts/<phone>`.

Routes of the operator API's blueprint (`web.operator_api.bp`: its bearer-token check and rate limit apply),
kept here so that module stays about listing, importing and cycles. `web.create_app` imports this module
before it registers the blueprint.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime

from flask import request
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared import erasure
from shared.contact_changes import BadChange, apply_changes, operator_label, read_changes
from shared.contacts import contact_history, contact_json
from shared.models import Contact
from web.errors import ApiError
from web.operator_api import _phone, bp
from web.services import services

log = logging.getLogger(__name__)


def _locked(session: Session, phone: str) -> Contact:
    contact = session.scalars(select(Contact).where(Contact.phone == phone).with_for_update()).one_or_none()
    if contact is None:
        raise ApiError(404, f"no contact {phone}")
    return contact


def operator() -> str:
    """Who is asking, for `consent_by`: which API token (its SHA-256 fingerprint, never the token: the same
    across reorderings of API_TOKEN, and `printf %s "$TOKEN" | sha256sum | cut -c1-8` tells an operator which
    one it is) and the client's address (the proxy's view when TRUSTED_PROXIES is set)."""
    token = request.headers.get("Authorization", "").partition(" ")[2].strip()
    fingerprint = hashlib.sha256(token.encode()).hexdigest()[:8]
    return operator_label(f"API token sha256:{fingerprint}", request.remote_addr)


@bp.patch("/contacts/<path:phone>")
def update_contact(phone: str) -> ResponseReturnValue:
    """Change a contact's name, tags or language, or record an operator's opt-out or opt-in."""
    e164 = _phone(phone)
    try:
        changes = read_changes(request.get_json(force=True, silent=True))
    except BadChange as exc:
        raise ApiError(400, str(exc)) from None
    with services().sessions() as session, session.begin():
        contact = _locked(session, e164)
        if not apply_changes(session, contact, changes, operator(), datetime.now(UTC)):
            raise ApiError(409, f"contact {e164}: its consent changed after this request was made")
        session.flush()
        return {**contact_json(contact), **contact_history(session, contact.id)}


@bp.delete("/contacts/<path:phone>")
def delete_contact(phone: str) -> ResponseReturnValue:
    """Erase a contact and its personal data (shared/erasure.py); 204."""
    e164 = _phone(phone)
    settings = services().settings
    try:
        with services().sessions() as session, session.begin():
            if not erasure.erase_contact(session, services().store, e164, settings.erasure_keys):
                raise ApiError(404, f"no contact {e164}")
    except erasure.ErasureBusy as exc:
        raise ApiError(503, str(exc)) from None
    return "", 204
