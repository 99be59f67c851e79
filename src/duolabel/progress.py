"""Progress reporting for long stages: Rich bars in the CLI, silence in the library."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Reporter", "active_stage", "quiet", "rich_reporter"]

Advance = Callable[[int], None]


@dataclass
class _Stage:
    description: str
    total: int | None
    done: int = 0


# The bars drawing now, innermost last (what Ctrl-C reports).
_ACTIVE: list[_Stage] = []


def active_stage() -> tuple[str, int, int | None] | None:
    """The innermost stage a :func:`rich_reporter` bar is drawing now: its description, how
    many steps it has done and its total (None when none is drawing).

    Examples
    --------
    >>> active_stage() is None
    True
    """
    return (_ACTIVE[-1].description, _ACTIVE[-1].done, _ACTIVE[-1].total) if _ACTIVE else None


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
        state = _Stage(description, total)

        def advance(n: int) -> None:
            state.done += n
            bar.advance(task, n)

        with Progress(*columns, console=con, transient=False) as bar:
            task = bar.add_task(description, total=total)
            _ACTIVE.append(state)
            try:
                yield advance
            finally:
                _ACTIVE.remove(state)

    return report
