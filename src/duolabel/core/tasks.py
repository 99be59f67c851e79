"""Task types: what differs between kinds of labeling.

A task type owns the shape of an answer and its validation (on import and in the web app), how
a model's prediction is read from its distribution, how agreement is measured, which aggregator
a project gets by default, the answer widget the web page shows, and the extra export columns.
Everything else in duolabel asks the project's task type (``task_type(config.task.type)``)
instead of assuming one label per item.

Built-ins: ``single_label`` (one of the labels, unordered) and ``ordinal`` (one of the labels,
which are ordered: the scale's order is the order the project lists them in). Another kind of
task is one class with the members of :class:`TaskType`, registered in :data:`TASK_TYPES` (or
through the ``duolabel.task_types`` entry point group), plus its widget template under
``web/templates/widgets/``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from duolabel.core.quality import fleiss_kappa, krippendorff_alpha
from duolabel.core.registry import Registry
from duolabel.errors import DuolabelError

__all__ = ["TASK_TYPES", "AnswerError", "Ordinal", "SingleLabel", "TaskType", "task_type"]


class AnswerError(ValueError):
    """An answer that is not valid for the task: what was ``got`` and what was ``expected``.

    Never reaches a user as is: each boundary frames it in its own words (the importer as
    ``file, row, column: got ..., expected ...``, the web app as ``label ... is not ...``).

    Examples
    --------
    >>> str(AnswerError("eggs", "one of 'spam', 'ham'"))
    "got 'eggs', expected one of 'spam', 'ham'"
    """

    def __init__(self, got: Any, expected: str) -> None:
        super().__init__(f"got {got!r}, expected {expected}")
        self.got = got
        self.expected = expected


@runtime_checkable
class TaskType(Protocol):
    """What a kind of labeling task defines (one instance per project's task)."""

    name: ClassVar[str]
    widget: ClassVar[str]  # web template (under web/templates/) that asks for an answer
    default_aggregator: ClassVar[str]  # the aggregation.method used when the project sets none

    def check_answer(self, value: Any, labels: Sequence[str]) -> str:
        """The answer as stored for ``value``; :class:`AnswerError` if it is not a valid answer."""
        ...

    def predicted(self, probs: np.ndarray) -> np.ndarray:
        """The model's answer per row of an ``(n, n_labels)`` distribution matrix (label indices)."""
        ...

    def agreement(self, answers: pd.DataFrame, labels: Sequence[str]) -> dict[str, float]:
        """Agreement figures (name -> value, NaN where the answers cannot give one) over
        ``task, worker, label`` answers."""
        ...

    def export_columns(self, label: str | None, labels: Sequence[str]) -> dict[str, Any]:
        """Extra export columns for one final ``label`` (None while pending); the same keys always."""
        ...


TASK_TYPES: Registry[type[TaskType]] = Registry("task type", group="duolabel.task_types")


def task_type(name: str) -> TaskType:
    """The task type registered as ``name`` (``task.type`` in the project file), ready to use.

    Examples
    --------
    >>> task_type("ordinal").default_aggregator
    'median'
    >>> task_type("single_label").widget
    'widgets/single_label.html'
    """
    return TASK_TYPES.get(name)()


def _figure(function: Any, *args: Any, **kwargs: Any) -> float:
    # A figure the answers cannot give (no item with two answers yet) is NaN, not an error:
    # the dashboard shows it blank while the others still show.
    try:
        return float(function(*args, **kwargs))
    except DuolabelError:
        return math.nan


@TASK_TYPES.register("single_label")
class SingleLabel:
    """One label per item out of an unordered set.

    Examples
    --------
    >>> t = SingleLabel()
    >>> t.check_answer("spam", ["spam", "ham"])
    'spam'
    >>> t.check_answer("eggs", ["spam", "ham"])
    Traceback (most recent call last):
    ...
    duolabel.core.tasks.AnswerError: got 'eggs', expected one of 'spam', 'ham'
    >>> t.predicted(np.array([[0.2, 0.8]])).tolist()
    [1]
    """

    name: ClassVar[str] = "single_label"
    widget: ClassVar[str] = "widgets/single_label.html"
    default_aggregator: ClassVar[str] = "majority_vote"
    level: ClassVar[str] = "nominal"  # Krippendorff's level of measurement

    def check_answer(self, value: Any, labels: Sequence[str]) -> str:
        # Exactly a label: callers strip what their format pads (the importer strips cells),
        # and the web app compares what the browser sent.
        if not isinstance(value, str) or value not in labels:
            raise AnswerError(value, f"one of {', '.join(repr(label) for label in labels)}")
        return value

    def predicted(self, probs: np.ndarray) -> np.ndarray:
        return np.asarray(probs).argmax(axis=1)

    def agreement(self, answers: pd.DataFrame, labels: Sequence[str]) -> dict[str, float]:
        return {
            f"Krippendorff's alpha ({self.level})": _figure(
                krippendorff_alpha, answers, labels, level=self.level
            ),
            "Fleiss' kappa": _figure(fleiss_kappa, answers, labels),
        }

    def export_columns(self, label: str | None, labels: Sequence[str]) -> dict[str, Any]:
        return {}


@TASK_TYPES.register("ordinal")
class Ordinal(SingleLabel):
    """One label per item on an ordered scale (the labels' order in the project file, low to high).

    Answers and predictions are labels as for ``single_label``; what differs is that a near miss
    counts as nearer than a far one: agreement is Krippendorff's ordinal alpha, the default
    aggregation is the median answer (:class:`duolabel.core.aggregation.MedianVote`), the web
    page shows the labels as a scale, and exports carry the label's ``rank`` on the scale
    (0 for the first label).

    Examples
    --------
    >>> Ordinal().export_columns("mid", ["low", "mid", "high"])
    {'rank': 1}
    >>> Ordinal().export_columns(None, ["low", "mid", "high"])
    {'rank': None}
    """

    name: ClassVar[str] = "ordinal"
    widget: ClassVar[str] = "widgets/ordinal.html"
    default_aggregator: ClassVar[str] = "median"
    level: ClassVar[str] = "ordinal"

    def export_columns(self, label: str | None, labels: Sequence[str]) -> dict[str, Any]:
        # A label the project no longer lists has no place on today's scale.
        return {"rank": list(labels).index(label) if label is not None and label in labels else None}
