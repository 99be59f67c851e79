"""What the integrations share: moving an inner importer's problems to where they are in the
outer source (a task of a Label Studio export, a split of a DatasetDict)."""

from __future__ import annotations

from collections.abc import Callable

from duolabel.errors import DataError, Problem

__all__ = ["relocate", "setup_hint"]


def relocate(
    error: DataError, where: Callable[[Problem], Problem], *, outcome: str = "Nothing was imported."
) -> DataError:
    """``error`` with each problem passed through ``where`` (and ``outcome`` as its last line)."""
    return DataError([where(p) for p in error.problems], more=error.more, outcome=outcome)


def setup_hint(extra: str, package: str) -> str:
    return f"this needs the {package!r} package: pip install 'duolabel[{extra}]'"
