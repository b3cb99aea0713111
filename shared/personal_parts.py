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
part does, `ceil(units / 152)` (66): never fewer parts than AT bills, and at most one more, only for a
text whose pairs happen to miss every part boundary (for texts up to 23,000 units, far over the 10-part cap).

Names are stored stripped, blank as NULL (`shared.imports`, `shared.contact_changes`), as `render` sees them.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, Integer, Select, case, func, literal, select
from sqlalchemy.orm import Session

from shared import cost_estimate, placeholders, segments
from shared.models import Contact

#: Stand-ins for the name and the number while the template is rendered: control characters no message
#: may hold (`shared.cycles.check_message`) and that `render` neither strips nor capitalises.
_NAME, _PHONE = "\x03", "\x02"
_GSM7_ALL = "".join(sorted(segments.GSM7_BASIC | segments.GSM7_EXTENSION))
_GSM7_EXTENSION = "".join(sorted(segments.GSM7_EXTENSION))
#: Characters outside the BMP, two UTF-16 units each; Postgres and Python's `re` (SQLite, shared.db) read it alike.
_ASTRAL = r"[\U00010000-\U0010FFFF]"


@dataclass(frozen=True)
class Shape:
    """A template rendered with stand-ins: its fixed text and how often the name and the number fill it."""

    fixed: str
    names: int
    phones: int

    @classmethod
    def of(cls, template: str, *, named: bool) -> Shape:
        text = placeholders.render(template, name=_NAME if named else None, phone=_PHONE)
        return cls(text.replace(_NAME, "").replace(_PHONE, ""), text.count(_NAME), text.count(_PHONE))

    def units(self, encoding: str) -> int:
        return segments.units(self.fixed, encoding)

    def pairs(self, encoding: str) -> int:
        return segments.units(self.fixed, encoding) - len(self.fixed)


def per_contact_select(template: str, where: ColumnElement[bool]) -> Select[tuple[int, str, int, int]]:
    """Per contact matching `where`: id, phone prefix (`cost_estimate.prefix_expr`), 1 for UCS-2, SMS parts."""
    named, nameless = Shape.of(template, named=True), Shape.of(template, named=False)
    name = func.coalesce(Contact.name, "")
    length = func.length(name)
    extension = length - func.length(func.translate(name, _GSM7_EXTENSION, ""))
    astral = length - func.length(func.regexp_replace(name, _ASTRAL, "", "g"))
    phone = func.length(Contact.phone)
    has_name = length > 0 if named.names else literal(True)
    if segments.encoding_of(named.fixed) == segments.UCS2:
        name_ucs2: ColumnElement[bool] = literal(True)
    else:
        name_ucs2 = func.length(func.translate(name, _GSM7_ALL, "")) > 0 if named.names else literal(False)
    nameless_ucs2 = int(segments.encoding_of(nameless.fixed) == segments.UCS2)

    def filled(encoding: str, wide: ColumnElement[int]) -> tuple[ColumnElement[int], ColumnElement[int]]:
        units = named.units(encoding) + named.names * (length + wide) + named.phones * phone
        return units, named.pairs(encoding) + named.names * wide

    gsm_units, gsm_pairs = filled(segments.GSM7, extension)
    ucs2_units, ucs2_pairs = filled(segments.UCS2, astral)
    nameless_encoding = segments.UCS2 if nameless_ucs2 else segments.GSM7
    nameless_units = nameless.units(nameless_encoding) + nameless.phones * phone
    measured = select(
        Contact.id.label("contact_id"),
        cost_estimate.prefix_expr(Contact.phone).label("prefix"),
        case((~has_name, nameless_ucs2), (name_ucs2, 1), else_=0).label("ucs2"),
        case((~has_name, nameless_units), (name_ucs2, ucs2_units), else_=gsm_units).label("units"),
        case((~has_name, nameless.pairs(nameless_encoding)), (name_ucs2, ucs2_pairs), else_=gsm_pairs).label("pairs"),
    ).where(where)
    sub = measured.subquery()
    return select(sub.c.contact_id, sub.c.prefix, sub.c.ucs2, _parts(sub.c.units, sub.c.pairs, sub.c.ucs2))


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
