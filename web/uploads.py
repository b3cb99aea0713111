"""Operator uploads (contact imports) read as streams, never as one bytes object.

The body is copied to a temporary file first (kept in memory up to SPOOL_IN_MEMORY), so a slow upload holds
no database connection or transaction while it trickles in, and a 32 MB upload costs no 32 MB of memory.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, TextIO

from flask import Request

SPOOL_IN_MEMORY = 256 * 1024
COPY_CHUNK = 64 * 1024


@contextmanager
def spooled_body(request: Request) -> Iterator[IO[bytes]]:
    """The request's body in a temporary file, rewound; removed afterwards. Reading a body larger than the
    request's `max_content_length` raises werkzeug's 413."""
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
        shutil.copyfileobj(request.stream, spool, COPY_CHUNK)
        spool.seek(0)
        yield spool


def csv_text(body: IO[bytes]) -> TextIO:
    """A CSV upload as text: UTF-8 with or without a BOM (a bad byte becomes U+FFFD and, in a number, a
    refused row), any line ends."""
    return io.TextIOWrapper(body, encoding="utf-8-sig", errors="replace", newline=None)
