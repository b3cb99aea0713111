"""SMS parts of a text with placeholders, for each contact, counted in SQL (design §4.1, issue 13).

`{name}` and `{phone}` make each contact's text its own: a long name can make it one part more, and one
character outside GSM-7 in a name (an emoji, `ж`, a curly quote) sends that contact's whole text in UCS-2.
Rendering a million texts in Python to count them is not an option, so the count is one SQL expression:

- The template is rendered once here with stand-ins for the name and the number, which leaves its fixed text
  and how many times each placeholder is in it; once more without a name (`shared.placeholders` tidies the
  text around a missing name), for contacts without one.
- Per contact, SQL measures the name: its length, its extension-table characters (two septets in GSM-7),
  its characters outside the BMP (two UTF-16 units in UCS-2), and whether any character is outside GSM-7.
  A number is E.164 (`+` and digits): one septet or unit per character, GSM-7 always.
- The contact's encoding is UCS-2 if the fixed text or the name needs it; its units are the fixed text's, the
  name's times its count, the number's times its count, all in that encoding.

Parts from units: one part up to 160 septets (70 units), else `ceil(units / 153)` (67). That is exact for a
text without two-unit characters. With them (an escape pair, a surrogate pair) it depends on where they fall:
a pair is never split, so a part may hold one unit less (`shared.segments`). The count then assumes every
part does, `ceil(units / 152)` (66): never fewer parts than AT bills, and at most one more (for any text
under 23,000 units, far over the 10-part cap), which happens only to a text within a unit per part of a
part boundary whose pairs do not fall on the boundaries.

Names are stored stripped, blank as NULL (`shared.imports`, `shared.contact_changes`), as `render` sees them.
Cost: one pass over the audience; a million contacts took 1.2 s on the test Postgres (0.5 s for a text
without placeholders, which is counted once in Python and needs no per-contact measure).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, Integer, Select, Subquery, case, func, literal, select
from sqlalchemy.orm import Session

from shared import cost_estimate, placeholders, segments
from shared.models import Contact

#: Stand-ins for the name and the number while the template is rendered: control characters no message
#: may hold (`shared.cycles.check_message`) and that `render` neither strips nor capitalises.
_NAME, _PHONE = "\x03", "\x02"


def _char_class(chars: frozenset[str], *, negated: bool = False) -> str:
    """A regex bracket expression of `chars` that Postgres (AREs) and Python's `re` (SQLite's REGEXP) read alike."""
    escaped = "".join("\\" + c if c in "\\[]^-" else c for c in sorted(chars))
    return f"[{'^' if negated else ''}{escaped}]"


#: A character outside GSM-7 (basic and extension tables): the text goes in UCS-2.
_NOT_GSM7 = _char_class(segments.GSM7_BASIC | segments.GSM7_EXTENSION, negated=True)
#: An extension-table character: two septets in GSM-7.
_EXTENSION = _char_class(segments.GSM7_EXTENSION)
#: A character outside GSM-7's basic table: an extension-table one, or one outside GSM-7.
_NOT_BASIC = _char_class(segments.GSM7_BASIC, negated=True)
#: A character outside the BMP: two UTF-16 units in UCS-2.
_ASTRAL = r"[\U00010000-\U0010FFFF]"


@dataclass(frozen=True)
class Shape:
    """A template rendered with stand-ins: its fixed text and how often the name and the number fill it."""

    fixed: str
    names: int
    phones: int

    @classmethod
    def of(cls, template: str, *, named: bool, suffix: str = "") -> Shape:
        text = placeholders.render(template, name=_NAME if named else None, phone=_PHONE) + suffix
        return cls(text.replace(_NAME, "").replace(_PHONE, ""), text.count(_NAME), text.count(_PHONE))

    def units(self, encoding: str) -> int:
        return segments.units(self.fixed, encoding)

    def pairs(self, encoding: str) -> int:
        return segments.units(self.fixed, encoding) - len(self.fixed)


def per_contact_select(
    template: str, where: ColumnElement[bool], suffix: str = ""
) -> Select[tuple[int, str, int, int]]:
    """Per contact matching `where`: id, phone prefix (`cost_estimate.prefix_expr`), 1 for UCS-2, SMS parts;
    the text followed by `suffix` (a promotional sender id's opt-out, shared/sender_rules.py)."""
    named = Shape.of(template, named=True, suffix=suffix)
    nameless = Shape.of(template, named=False, suffix=suffix)
    m = _measured_names(where)
    has_name = m.c.length > 0 if named.names else literal(True)
    if segments.encoding_of(named.fixed) == segments.UCS2:
        name_ucs2: ColumnElement[bool] = literal(True)
    else:
        name_ucs2 = m.c.not_gsm7 > 0 if named.names else literal(False)
    nameless_encoding = segments.encoding_of(nameless.fixed)

    def filled(encoding: str, wide: ColumnElement[int]) -> tuple[ColumnElement[int], ColumnElement[int]]:
        units = named.units(encoding) + named.names * (m.c.length + wide) + named.phones * m.c.phone
        return units, named.pairs(encoding) + named.names * wide

    gsm_units, gsm_pairs = filled(segments.GSM7, m.c.extension)
    ucs2_units, ucs2_pairs = filled(segments.UCS2, m.c.astral)
    nameless_units = nameless.units(nameless_encoding) + nameless.phones * m.c.phone
    ucs2 = case((~has_name, int(nameless_encoding == segments.UCS2)), (name_ucs2, 1), else_=0)
    units = case((~has_name, nameless_units), (name_ucs2, ucs2_units), else_=gsm_units)
    pairs = case((~has_name, nameless.pairs(nameless_encoding)), (name_ucs2, ucs2_pairs), else_=gsm_pairs)
    return select(m.c.contact_id, m.c.prefix, ucs2.label("ucs2"), _parts(units, pairs, ucs2))


def _measured_names(where: ColumnElement[bool]) -> Subquery:
    """Each contact's name measured once: its length, its extension-table and astral characters (counted only
    in names that have any: a regex test is cheap, a replace less so) and whether it has one outside GSM-7.

    A name of GSM-7's basic table only (most names) has none of the three, so one test sorts it out first
    and the three are looked for only in the others: three regex tests of every name were a third of the bill
    at a million contacts (1.01 s of backend CPU against 0.71, issue 15).

    `OFFSET 0` keeps the database from merging these into the statement around them, which would measure a
    name once for each place the outer expressions use the measure."""
    named = (
        select(
            Contact.id.label("contact_id"),
            cost_estimate.prefix_expr(Contact.phone).label("prefix"),
            func.coalesce(Contact.name, "").label("name"),
            func.coalesce(Contact.name, "").regexp_match(_NOT_BASIC).label("special"),
            func.length(Contact.phone).label("phone"),
        )
        .where(where)
        .offset(0)
        .subquery()
    )
    name, length = named.c.name, func.length(named.c.name)

    def count_of(pattern: str) -> ColumnElement[int]:
        removed = length - func.length(func.regexp_replace(name, pattern, "", "g"))
        return case((~named.c.special, 0), (name.regexp_match(pattern), removed), else_=0)

    return (
        select(
            named.c.contact_id,
            named.c.prefix,
            length.label("length"),
            count_of(_EXTENSION).label("extension"),
            count_of(_ASTRAL).label("astral"),
            case((~named.c.special, 0), (name.regexp_match(_NOT_GSM7), 1), else_=0).label("not_gsm7"),
            named.c.phone,
        )
        .offset(0)
        .subquery()
    )


def _parts(units: ColumnElement[int], pairs: ColumnElement[int], ucs2: ColumnElement[int]) -> ColumnElement[int]:
    """SQL: parts for `units`, assuming a pair wastes a unit in every part when there is any (module doc)."""
    (gsm_single, gsm_part), (ucs2_single, ucs2_part) = segments.LIMITS[segments.GSM7], segments.LIMITS[segments.UCS2]
    single = case((ucs2 == 1, ucs2_single), else_=gsm_single)
    per_part = case((ucs2 == 1, ucs2_part), else_=gsm_part) - case((pairs > 0, 1), else_=0)
    return case((units <= single, 1), else_=(units + per_part - 1) // per_part).cast(Integer).label("parts")


def per_contact(session: Session, template: str, where: ColumnElement[bool]) -> dict[int, tuple[str, int]]:
    """Each contact's encoding and parts, by id: for tests and one-off looks, not for a whole audience."""
    rows = session.execute(per_contact_select(template, where)).all()
    return {cid: (segments.UCS2 if ucs2 else segments.GSM7, int(parts)) for cid, _p, ucs2, parts in rows}
