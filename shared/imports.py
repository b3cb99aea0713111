"""Contact imports (`POST /api/contacts`, `reach contacts import FILE`) in memory that does not grow with the file.

Rows are read as a stream (`rows_from_csv` over a text stream; a JSON body is a list already), checked and
written IMPORT_CHUNK at a time (one statement each), and every refused row goes to a sink the caller gives
(the API stores them, the CLI writes FILE.refused.csv); the report keeps the counts and the first
REFUSED_SHOWN refused rows. Duplicates across batches are found in a temporary table, not in a set of every
number of the file.

A row is read into a `ContactRow` by `read_row`: a new column is a field there and a column in
`shared.import_writes.upsert_contacts`. Tags (JSON `"tags": [...]`, CSV `vip;nairobi`) follow the PATCH rules
(`shared.tags`); a row with tags replaces the contact's tags, one without keeps them (as a name).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from sqlalchemy.orm import Session

from shared.import_writes import SeenPhones, upsert_contacts
from shared.phone import InvalidPhone, normalise_phone
from shared.tags import BadTags, json_type, normalise_tags

MAX_NAME = 200
#: Rows checked and written per batch: one upsert statement, one look-up of earlier duplicates.
IMPORT_CHUNK = 2000
#: Refused rows listed in the answer; the rest are counted (and stored or written by the sink).
REFUSED_SHOWN = 100
#: A refused value is echoed back cut to this many characters (it may be a megabyte of junk).
MAX_ECHO = 200


class BadImport(ValueError):
    """The upload as a whole cannot be read (not a list, no `phone` column, broken CSV quoting, ...)."""


@dataclass(frozen=True)
class ContactRow:
    """One good row, as Reach stores it."""

    phone: str  # E.164
    name: str | None
    tags: list[str] | None = None  # None (or []) keeps the contact's tags


@dataclass(frozen=True)
class Refusal:
    row: int  # 1-based, counting data rows (a CSV's header is not one)
    phone: Any  # as given (cut to MAX_ECHO): JSON may send a number, a list or nothing
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "phone": self.phone, "reason": self.reason}


class RefusedSink(Protocol):
    """Where refused rows go, a batch at a time, in row order."""

    def add(self, refusals: Sequence[Refusal]) -> None: ...


@dataclass
class ImportReport:
    received: int = 0
    created: int = 0
    updated: int = 0
    refused_count: int = 0
    #: The first REFUSED_SHOWN refused rows, as the answer lists them.
    refused: list[dict[str, Any]] = field(default_factory=list)
    #: Where the whole refused list can be downloaded (API imports that refused rows).
    refused_url: str | None = None

    def refuse(self, refusal: Refusal) -> None:
        self.refused_count += 1
        if len(self.refused) < REFUSED_SHOWN:
            self.refused.append(refusal.as_dict())

    def as_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "received": self.received,
            "created": self.created,
            "updated": self.updated,
            "refused_count": self.refused_count,
            "refused": self.refused,
        }
        if self.refused_url:
            doc["refused_url"] = self.refused_url
        return doc


# -- reading ------------------------------------------------------------------------------------------------


def rows_from_json(doc: Any) -> list[Mapping[str, Any]]:
    rows = doc.get("contacts") if isinstance(doc, dict) else doc
    if not isinstance(rows, list):
        raise BadImport('expected a JSON list of {"phone", "name"} or {"contacts": [...]}')
    return rows


def rows_from_csv(stream: TextIO) -> Iterator[Mapping[str, Any]]:
    """The rows of a CSV with a `phone` column, read as they are needed.

    The header is read (and checked) at once; a row the csv module cannot read raises `BadImport` naming
    its line when the iteration reaches it. Open the stream with `newline=None`: `\\n`, `\\r\\n` and a lone
    `\\r` (old spreadsheet exports) are all line ends.
    """
    reader = csv.DictReader(stream, strict=True)
    try:
        headers = [h.strip().lower().lstrip("\ufeff") for h in reader.fieldnames or []]
    except csv.Error as exc:
        raise BadImport(f"not readable as CSV (line {reader.reader.line_num}): {exc}") from None
    if "phone" not in headers:
        raise BadImport("CSV needs a header row with a 'phone' column (and optionally 'name')")
    reader.fieldnames = headers
    return _csv_rows(reader)


def _csv_rows(reader: csv.DictReader[str]) -> Iterator[Mapping[str, Any]]:
    try:
        for row in reader:
            cell = row.get("tags")
            if isinstance(cell, str):  # `vip; nairobi`: the list a JSON row would send
                row["tags"] = [part for part in cell.split(";") if part.strip()]  # type: ignore[assignment]
            yield row
    except csv.Error as exc:
        raise BadImport(f"not readable as CSV (line {reader.reader.line_num}): {exc}") from None


def read_row(row: Any, default_country: str) -> ContactRow:
    """A row as given, checked and normalised; `InvalidPhone` says why it is refused."""
    if not isinstance(row, Mapping):
        raise InvalidPhone('each contact must be an object like {"phone": "+254711000001"}')
    raw_phone = row.get("phone")
    if raw_phone is None:
        raise InvalidPhone("missing phone")
    if isinstance(raw_phone, bool | float) or not isinstance(raw_phone, str | int):  # True is an int to Python
        given = "a decimal number" if isinstance(raw_phone, float) else json_type(raw_phone)
        raise InvalidPhone(f"phone must be text or a whole number, not {given}")
    name = row.get("name")
    if name is not None and not isinstance(name, str):
        raise InvalidPhone("name must be text")
    if name and "\x00" in name:  # Postgres text cannot hold NUL
        raise InvalidPhone("name must not contain NUL characters")
    if name and not name.isascii() and not _encodes(name):  # a JSON "\ud800": no database can store it
        raise InvalidPhone("name must be Unicode text (it has a lone surrogate)")
    name = (name or "").strip()[:MAX_NAME] or None
    return ContactRow(phone=normalise_phone(str(raw_phone), default_country), name=name, tags=_tags(row.get("tags")))


def _tags(value: Any) -> list[str] | None:
    """A row's tags (a CSV cell is split by `_csv_rows`); None when it has none; `InvalidPhone` (the row's
    refusal) if they break the tag rules."""
    if value is None:
        return None
    try:
        return normalise_tags(value) or None
    except BadTags as exc:
        raise InvalidPhone(str(exc)) from None


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def given_phone(row: Any) -> Any:
    """The phone of a refused row as the upload gave it, cut to MAX_ECHO characters."""
    value = row.get("phone") if isinstance(row, Mapping) else row
    if value is None or isinstance(value, bool | int | float):
        return value
    if not isinstance(value, str):
        value = json.dumps(value)
        if len(value) <= MAX_ECHO:
            return json.loads(value)
    return value if len(value) <= MAX_ECHO else value[: MAX_ECHO - 1] + "…"


# -- importing ----------------------------------------------------------------------------------------------


def import_contacts(
    session: Session,
    rows: Iterable[Any],
    default_country: str,
    *,
    refused: RefusedSink | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Add new contacts and update names of known ones; statuses are never reset by an import.

    Rows are checked and written IMPORT_CHUNK at a time; `progress(n)` is called after each batch with how
    many rows it held. The first of repeated numbers wins; the others are refused as duplicates of its row.
    """
    report = ImportReport()
    seen = SeenPhones(session)
    batch: list[tuple[int, ContactRow | Refusal]] = []
    for number, row in enumerate(rows, start=1):
        try:
            batch.append((number, read_row(row, default_country)))
        except InvalidPhone as exc:
            batch.append((number, Refusal(number, given_phone(row), str(exc))))
        if len(batch) == IMPORT_CHUNK:
            _write_batch(session, batch, seen, report, refused)
            if progress:
                progress(len(batch))
            batch = []
    if batch:
        _write_batch(session, batch, seen, report, refused)
        if progress:
            progress(len(batch))
    return report


def _write_batch(
    session: Session,
    batch: list[tuple[int, ContactRow | Refusal]],
    seen: SeenPhones,
    report: ImportReport,
    sink: RefusedSink | None,
) -> None:
    refusals = [checked for _, checked in batch if isinstance(checked, Refusal)]
    firsts: dict[str, tuple[int, ContactRow]] = {}
    repeats: list[tuple[int, str]] = []
    for number, checked in batch:
        if isinstance(checked, ContactRow):
            if checked.phone in firsts:
                repeats.append((number, checked.phone))
            else:
                firsts[checked.phone] = (number, checked)
    earlier = seen.first_rows(list(firsts))
    first_row = {phone: earlier.get(phone, number) for phone, (number, _) in firsts.items()}
    repeats += [(firsts.pop(phone)[0], phone) for phone in earlier]
    refusals += [Refusal(number, phone, f"duplicate of row {first_row[phone]}") for number, phone in repeats]
    seen.remember({phone: number for phone, (number, _) in firsts.items()})

    created = upsert_contacts(session, [row for _, row in firsts.values()])
    report.received += len(batch)
    report.created += created
    report.updated += len(firsts) - created
    refusals.sort(key=lambda refusal: refusal.row)
    for refusal in refusals:
        report.refuse(refusal)
    if sink and refusals:
        sink.add(refusals)
