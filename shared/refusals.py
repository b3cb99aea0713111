"""Where an import's refused rows go: stored for the API's download, or written to FILE.refused.csv by the CLI.

Both write the same CSV (`row,phone,reason`, through `shared.csv_safe`), a batch at a time, so a file
with a million bad rows never has them all in memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from shared.csv_safe import SafeWriter, stream_pages
from shared.imports import ImportReport, Refusal
from shared.operator_models import ContactImport, ImportRefusal

HEADER = ("row", "phone", "reason")
#: Refused rows read per query when the stored list is downloaded.
PAGE = 5000


def stored_text(value: Any) -> str:
    """A refused value as text the database takes: JSON for what is not a string, NUL and lone surrogates
    (which Postgres refuses) spelled out."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value)
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


class StoredRefusals:
    """A sink that keeps an API import's refused rows in `import_refusals`, under a `contact_imports` row made
    at the first refusal (an import that refuses nothing stores nothing)."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self.import_id: int | None = None

    def add(self, refusals: Sequence[Refusal]) -> None:
        if self.import_id is None:
            self.import_id = self._session.scalars(insert(ContactImport).returning(ContactImport.id)).one()
        rows = [
            {"import_id": self.import_id, "row_number": r.row, "phone": stored_text(r.phone), "reason": r.reason}
            for r in refusals
        ]
        self._session.execute(insert(ImportRefusal), rows)

    def finish(self, report: ImportReport) -> None:
        """Record the import's counts beside its refused rows."""
        if self.import_id is None:
            return
        counts = {
            "received": report.received,
            "created": report.created,
            "updated": report.updated,
            "refused": report.refused_count,
        }
        self._session.execute(update(ContactImport).where(ContactImport.id == self.import_id).values(**counts))


def import_exists(session: Session, import_id: int) -> bool:
    return session.get(ContactImport, import_id) is not None


def refused_csv(sessions: sessionmaker[Session], import_id: int) -> Iterator[str]:
    """The stored refused rows of an import as CSV text, PAGE rows (one short query) at a time."""

    def fetch(after: int) -> Sequence[Any]:
        with sessions() as session:
            return session.execute(
                select(ImportRefusal.row_number, ImportRefusal.phone, ImportRefusal.reason)
                .where(ImportRefusal.import_id == import_id, ImportRefusal.row_number > after)
                .order_by(ImportRefusal.row_number)
                .limit(PAGE)
            ).all()

    return stream_pages(HEADER, fetch, tuple, key=lambda row: row.row_number, page_size=PAGE)


class RefusedCsvFile:
    """A sink that writes refused rows to a CSV file as they come (`reach contacts import`); the file is
    created at the first refusal only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: TextIO | None = None
        self._writer: SafeWriter | None = None

    @property
    def written(self) -> bool:
        return self._handle is not None

    def add(self, refusals: Sequence[Refusal]) -> None:
        if self._writer is None:
            self._handle = self.path.open("w", newline="", encoding="utf-8")
            self._writer = SafeWriter(self._handle)
            self._writer.writerow(HEADER)
        self._writer.writerows((r.row, r.phone, r.reason) for r in refusals)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()

    def discard(self) -> None:
        """Close and remove the file: the import it belongs to did not happen."""
        self.close()
        if self._handle is not None:
            self.path.unlink(missing_ok=True)
            self._handle = None
