"""Progress of a long import on a terminal: rows done and how far through the file, redrawn on one line."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from reach_cli.common import visible

#: Redraw at most this often: a million rows must not mean a million writes to the terminal.
REDRAW_SECONDS = 0.2


class RowProgress:
    """`importing FILE: 12,000 rows (34%)` on `stream`, redrawn in place; `finish()` ends the line."""

    def __init__(self, stream: TextIO, label: str, total_bytes: int, position: Callable[[], int]) -> None:
        self._stream = stream
        self._label = visible(label)
        self._total = max(total_bytes, 1)
        self._position = position
        self._rows = 0
        self._drawn_at = 0.0

    @classmethod
    def on_terminal(
        cls, stream: TextIO, label: str, total_bytes: int, position: Callable[[], int]
    ) -> RowProgress | None:
        """A progress line when `stream` is a terminal; None otherwise (a log or a cron mail gets no redraws)."""
        return cls(stream, label, total_bytes, position) if stream.isatty() else None

    def update(self, rows: int) -> None:
        self._rows += rows
        now = time.monotonic()
        if now - self._drawn_at >= REDRAW_SECONDS:
            self._draw()
            self._drawn_at = now

    def finish(self) -> None:
        self._draw()
        self._stream.write("\n")
        self._stream.flush()

    def _draw(self) -> None:
        done = min(100, self._position() * 100 // self._total)
        self._stream.write(f"\r{self._label}: {self._rows:,} rows ({done}%)")
        self._stream.flush()
