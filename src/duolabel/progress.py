"""Progress reporting for long stages: Rich bars in the CLI, silence in the library."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

__all__ = ["Reporter", "quiet", "rich_reporter"]

Advance = Callable[[int], None]


class Reporter(Protocol):
    def __call__(self, description: str, total: int | None) -> AbstractContextManager[Advance]: ...


@contextmanager
def quiet(description: str, total: int | None) -> Iterator[Advance]:
    """A reporter that shows nothing."""
    yield lambda n: None


def rich_reporter(console: object | None = None) -> Reporter:
    """A reporter that draws one Rich progress bar per stage."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    con = console if isinstance(console, Console) else Console(stderr=True)

    @contextmanager
    def report(description: str, total: int | None) -> Iterator[Advance]:
        columns = [
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        ]
        with Progress(*columns, console=con, transient=False) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n: bar.advance(task, n)

    return report
