"""An operator's change to one contact (`PATCH /api/contacts/<phone>`, `reach contacts set`): name, tags,
language, and an opt-out or opt-in recorded with who and when.

One reading of the change for both surfaces (`read_changes`), one way to apply it (`apply_changes`). An
opt-out or opt-in goes through `shared.consent`, like the customer's own STOP and START, so whichever was
made later wins, whatever order they are applied in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from shared import consent
from shared.models import Contact, ContactStatus
from shared.tags import BadTags, json_type, normalise_tags
from shared.text_rules import control_character, too_long

MAX_NAME = 200
FIELDS = ("name", "tags", "language", "status")
#: What an operator may set `status` to: an opt-out, or an opt-in (back to `new`).
CONSENT_STATUSES = {ContactStatus.OPTED_OUT.value, ContactStatus.NEW.value}
#: An ISO 639 language code (`sw`; a three-letter one such as `luo` or `kln`), with an optional region
#: (`en-KE`) or UN M.49 area (`es-419`).
_LANGUAGE = re.compile(r"(?P<language>[A-Za-z]{2,3})(?:-(?P<region>[A-Za-z]{2}|[0-9]{3}))?")
#: Two-letter codes are checked against ISO 639-1 (three-letter codes, ISO 639-2/3, by their shape only).
_ISO_639_1_CODES = (
    "aa ab ae af ak am an ar as av ay az ba be bg bi bm bn bo br bs ca ce ch co cr cs cu cv cy da de dv dz ee "
    "el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz ia id ie ig ii ik io "
    "is it iu ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn "
    "mr ms mt my na nb nd ne ng nl nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se "
    "sg si sk sl sm sn so sq sr ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo "
    "wa wo xh yi yo za zh zu"
)
ISO_639_1 = frozenset(_ISO_639_1_CODES.split())


class BadChange(ValueError):
    """A change that cannot be made; the message names the field."""


@dataclass(frozen=True)
class Changes:
    """The fields an operator asked to change, already checked; `given` says which were given."""

    given: frozenset[str]
    name: str | None = None
    tags: list[str] = field(default_factory=list)
    language: str | None = None
    status: ContactStatus | None = None


def read_changes(doc: Any) -> Changes:
    """Check a `PATCH` body: only known fields, each of the right type and shape; `BadChange` otherwise."""
    if not isinstance(doc, dict):
        raise BadChange("body must be a JSON object")
    unknown = [key for key in doc if key not in FIELDS]
    if unknown:
        raise BadChange(f"unknown field: {unknown[0]} (a contact's fields that can change: {', '.join(FIELDS)})")
    if not doc:
        raise BadChange(f"nothing to change: give one or more of {', '.join(FIELDS)}")
    try:
        tags = normalise_tags(doc["tags"]) if "tags" in doc else []
    except BadTags as exc:
        raise BadChange(str(exc)) from None
    return Changes(
        given=frozenset(doc),
        name=read_name(doc.get("name")),
        tags=tags,
        language=read_language(doc.get("language")),
        status=read_status(doc["status"]) if "status" in doc else None,
    )


def read_name(value: Any) -> str | None:
    """A name: text of at most MAX_NAME characters on one line, trimmed; None or blank clears it."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadChange(f"field name must be text or null, not {json_type(value)}")
    name = value.strip()
    if problem := too_long(name, MAX_NAME):
        raise BadChange(f"field name {problem}")
    found = control_character(name)
    if found:
        raise BadChange(f"field name has {found}")
    return name or None


def read_language(value: Any) -> str | None:
    """An ISO 639 code, case normalised (`SW` → `sw`, `en-ke` → `en-KE`); None clears it."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadChange(f"field language must be text or null, not {json_type(value)}")
    match = _LANGUAGE.fullmatch(value.strip())
    language = match.group("language").lower() if match else ""
    if not match or (len(language) == 2 and language not in ISO_639_1):
        raise BadChange(f"field language must be a language code such as sw or en (ISO 639), not {value[:20]!r}")
    region = match.group("region")
    return f"{language}-{region.upper()}" if region else language


def read_status(value: Any) -> ContactStatus:
    if not isinstance(value, str) or value not in CONSENT_STATUSES:
        raise BadChange(
            "field status may only be set to opted_out or new (an opt-out, or an opt-in); the others follow"
            " what happens to the contact's messages and calls"
        )
    return ContactStatus(value)


def apply_changes(session: Session, contact: Contact, changes: Changes, by: str, at: datetime) -> bool:
    """Make the changes on `contact` (locked by the caller); an opt-out or opt-in is recorded as made by `by`
    at `at`. Returns False, changing nothing, when the contact's consent last changed after `at`."""
    if changes.status is not None:
        change = consent.opt_out if changes.status is ContactStatus.OPTED_OUT else consent.opt_in
        if not change(session, contact.phone, at, by=by):
            return False
        session.refresh(contact)
    if "name" in changes.given:
        contact.name = changes.name
    if "tags" in changes.given:
        contact.tags = changes.tags
    if "language" in changes.given:
        contact.language = changes.language
    contact.updated_at = at
    return True


def operator_label(what: str, where: str | None = None) -> str:
    """`consent_by` of an operator's change: `operator: API token sha256:1a2b3c4d from 10.0.0.5`."""
    return f"operator: {what}" + (f" from {where}" if where else "")
