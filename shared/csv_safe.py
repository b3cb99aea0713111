"""Every CSV Reach writes goes through here, so no cell runs as a formula in the spreadsheet that opens it.

Cells hold what customers' files and AT's callbacks sent (a refused "phone" may be `=HYPERLINK(...)`). As
OWASP advises against CSV injection: a cell that starts with `=`, `+`, `-`, `@`, a tab or a line end gets a
leading `'`, and every cell is quoted, so a `;` inside a cell cannot start a new one in a spreadsheet set
to split on semicolons. A cell that is nothing but a number (`+254711000001`, `-5`) is left as it is: it
runs nothing, and the E.164 numbers in a refused list stay what a program reading the file expects.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

#: A spreadsheet evaluates a cell starting with one of these (a tab or line end before `=` too).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")
_PLAIN_NUMBER = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?")


class _Writable(Protocol):
    def write(self, text: str, /) -> Any: ...


def safe_cell(value: object) -> str:
    """The cell's text, with a `'` in front when a spreadsheet would take it for a formula; None is empty."""
    text = "" if value is None else str(value)
    if text.startswith(FORMULA_STARTS) and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


class SafeWriter:
    """`csv.writer` with every cell through `safe_cell` and quoted."""

    def __init__(self, handle: _Writable) -> None:
        self._writer = csv.writer(handle, quoting=csv.QUOTE_ALL)

    def writerow(self, row: Sequence[object]) -> None:
        self._writer.writerow([safe_cell(value) for value in row])

    def writerows(self, rows: Iterable[Sequence[object]]) -> None:
        for row in rows:
            self.writerow(row)


def stream_pages(
    header: Sequence[object],
    fetch_page: Callable[[Any], Sequence[Any]],
    cells: Callable[[Any], Sequence[object]],
    key: Callable[[Any], Any],
    page_size: int,
    first: Any = 0,
) -> Iterator[str]:
    """A downloadable CSV as text chunks, a page at a time (keyset paging): `fetch_page(after)` returns up to
    `page_size` rows after the key `after`, `cells(row)` the row's cells, `key(row)` its key. Memory holds
    one page, whatever the list's length."""
    buffer = io.StringIO()
    writer = SafeWriter(buffer)
    writer.writerow(header)
    after = first
    while True:
        page = fetch_page(after)
        writer.writerows(cells(row) for row in page)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        if len(page) < page_size:
            return
        after = key(page[-1])
