"""Contact tags: the one rule for what a tag is, how tags are stored, and "carries any of these tags" as SQL.

Tags are case-insensitive labels (`VIP` and `vip` are one tag, kept lower-case), so a filter never misses a
contact because of how a spreadsheet spelled it. A contact carries at most MAX_TAGS of them.

Stored as a Postgres `text[]` with a GIN index, so "carries any of" (`tags && ARRAY[...]`) is one indexed
set-based predicate a cycle's planning statement can use; the embedded SQLite database stores a JSON list
and answers the same question with `json_each`. An empty list is stored as NULL: one spelling of "none".
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import JSON, Text, cast, exists, func, select, type_coerce
from sqlalchemy.dialects.postgresql import ARRAY, array
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator

from shared.text_rules import control_character, too_long

MAX_TAG = 50
MAX_TAGS = 50
#: The separators of tag lists elsewhere: CSV imports (`vip;nairobi`) and query strings.
SEPARATORS = (";", ",")


class BadTags(ValueError):
    """Tags that cannot be stored; the message names the field and the position."""


def normalise_tags(value: Any, field: str = "tags") -> list[str]:
    """The tags to store for `value` (a list of strings), lower-cased, trimmed and without repeats, in the
    order given; `BadTags` naming `field[i]` otherwise. An empty list is allowed: it clears the tags."""
    if not isinstance(value, list):
        raise BadTags(f"field {field} must be a list of strings, not {json_type(value)}")
    if len(value) > MAX_TAGS:
        raise BadTags(f"field {field} has {len(value)} tags; at most {MAX_TAGS}")
    tags: list[str] = []
    for position, raw in enumerate(value):
        tag = normalise_tag(raw, f"{field}[{position}]")
        if tag not in tags:
            tags.append(tag)
    return tags


def audience_tags(value: Any, field: str = "tags") -> list[str]:
    """The tags of a cycle's or a schedule's audience: as `normalise_tags`, and at least one (an empty list
    would read as "nobody" to some and "everybody" to others; leaving the field out is everybody)."""
    tags = normalise_tags(value, field)
    if not tags:
        raise BadTags(f"field {field} must list at least one tag (leave it out for every contact)")
    return tags


def normalise_tag(raw: Any, field: str = "tag") -> str:
    """One tag, checked and lower-cased; `BadTags` naming `field` otherwise."""
    if not isinstance(raw, str):
        raise BadTags(f"field {field} must be a string, not {json_type(raw)}")
    tag = raw.strip()
    if not tag:
        raise BadTags(f"field {field} is empty")
    if problem := too_long(tag, MAX_TAG):
        raise BadTags(f"field {field} {problem}")
    found = control_character(tag)
    if found:
        raise BadTags(f"field {field} has {found}")
    if any(separator in tag for separator in SEPARATORS):
        raise BadTags(f"field {field} must not contain ';' or ','")
    return tag.lower()


def json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    if value is None:
        return "null"
    names = {bool: "a boolean", str: "a string", int: "a number", float: "a number", list: "an array"}
    return names.get(type(value), "an object")


class TagList(TypeDecorator[list[str]]):
    """A list of tags: `text[]` on Postgres, a JSON list elsewhere; NULL for none, read back as []."""

    impl = JSON(none_as_null=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(ARRAY(Text()))
        return dialect.type_descriptor(JSON(none_as_null=True))

    def process_bind_param(self, value: Collection[str] | None, dialect: Dialect) -> list[str] | None:
        return list(value) if value else None

    def process_result_value(self, value: list[str] | None, dialect: Dialect) -> list[str]:
        return list(value or [])


def has_any_tag(session: Session, tags: Collection[str]) -> ColumnElement[bool]:
    """SQL: the contact carries at least one of `tags` (already normalised). Postgres: `tags && ARRAY[...]`,
    served by the GIN index `ix_contacts_tags`; SQLite: an EXISTS over `json_each(tags)`."""
    from shared.models import Contact

    wanted = sorted(set(tags))
    if session.get_bind().dialect.name == "postgresql":
        stored = type_coerce(Contact.tags, ARRAY(Text()))
        return stored.overlap(cast(array(wanted), ARRAY(Text())))
    each = func.json_each(Contact.tags).table_valued("value")
    return exists(select(1).select_from(each).where(each.c.value.in_(wanted)))
