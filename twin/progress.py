"""Progress reporting: a bar on a terminal, quiet in libraries unless asked.

Long-running functions take ``progress: Progress | None``. ``None`` means silent.
The CLI passes :func:`terminal` so a person sees steps and bars; scripts and
notebooks can pass their own (anything with ``step(name, total)``).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator

log = logging.getLogger("twin")


class Progress:
    """Silent base: records step timings (seconds) so callers can report them."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, name: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        t0 = time.perf_counter()
        try:
            yield lambda n=1: None
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0
            log.info("%s: %.2f s", name, time.perf_counter() - t0)


class RichProgress(Progress):
    """Shows each step with a spinner or a bar (rich) and its time when done."""

    def __init__(self, console=None) -> None:
        super().__init__()
        from rich.console import Console

        self.console = console or Console(stderr=True)

    @contextlib.contextmanager
    def step(self, name: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.progress import Progress as _P

        columns = [SpinnerColumn(), TextColumn("{task.description}")]
        if total:
            columns += [BarColumn(), MofNCompleteColumn()]
        columns.append(TimeElapsedColumn())
        t0 = time.perf_counter()
        with _P(*columns, console=self.console, transient=True) as bar:
            task = bar.add_task(name, total=total)
            try:
                yield lambda n=1: bar.advance(task, n)
            finally:
                dt = time.perf_counter() - t0
                self.timings[name] = self.timings.get(name, 0.0) + dt
        self.console.print(f"[green]✓[/green] {name} [dim]({dt:.1f} s)[/dim]")


class LineProgress(Progress):
    """One line per finished step on stderr: for logs and CI, where bars would garble."""

    @contextlib.contextmanager
    def step(self, name: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        t0 = time.perf_counter()
        with super().step(name, total) as advance:
            yield advance
        print(f"  done: {name} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)


def terminal() -> Progress:
    """Bars on a terminal (rich), one line per step otherwise."""
    return RichProgress() if sys.stderr.isatty() else LineProgress()


def ensure(progress: Progress | None) -> Progress:
    return progress if progress is not None else Progress()
