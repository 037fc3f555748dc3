"""Progress of long work on stderr, in rows and rows per second.

On a terminal this is a live rich progress line; in a pod (no terminal) it is a
plain log line every few seconds, so `kubectl logs` shows the step moving.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

LOG_EVERY_SECONDS = 5.0


class RowProgress:
    """`with RowProgress("reading events", total) as p: p.advance(rows)`."""

    def __init__(self, description: str, total: int | None = None, console: Console | None = None) -> None:
        self.description = description
        self.total = total
        self.console = console or Console(stderr=True, soft_wrap=True)
        self.rows = 0
        self._start = time.perf_counter()
        self._last_log = self._start
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> RowProgress:
        self._start = self._last_log = time.perf_counter()
        if self.console.is_terminal:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed:,.0f} rows"),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=self.total, rate="")
        return self

    @property
    def rate(self) -> float:
        elapsed = time.perf_counter() - self._start
        return self.rows / elapsed if elapsed > 0 else 0.0

    def advance(self, rows: int) -> None:
        self.rows += rows
        now = time.perf_counter()
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=rows, rate=f"{self.rate:,.0f} rows/s")
        elif now - self._last_log >= LOG_EVERY_SECONDS:
            self._last_log = now
            self.console.print(f"{self.description}: {self.rows:,} rows, {self.rate:,.0f} rows/s", highlight=False)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
        if exc_type is None:
            elapsed = time.perf_counter() - self._start
            self.console.print(
                f"{self.description}: {self.rows:,} rows in {elapsed:.1f}s ({self.rate:,.0f} rows/s)", highlight=False
            )


def log(message: str) -> None:
    """One progress line on stderr."""
    print(message, file=sys.stderr, flush=True)
