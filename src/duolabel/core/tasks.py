"""Task types: what differs between kinds of labeling.

A task type owns the shape of an answer and its validation (on import and in the web app), how
a model's prediction is read from its distribution, how agreement is measured, which aggregator
a project gets by default, the answer widget the web page shows, and the extra export columns.
Everything else in duolabel asks the project's task type instead of assuming one label per item.

Built-ins: ``single_label`` (one of the labels, unordered) and ``ordinal`` (one of the labels,
which are ordered: the scale's order is the order the project lists them in). Another kind of
task is one class with the members of :class:`TaskType`, registered in :data:`TASK_TYPES` (or
through the ``duolabel.task_types`` entry point group), plus its widget template.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from duolabel.core.registry import Registry

__all__ = ["TASK_TYPES", "Ordinal", "SingleLabel", "TaskType", "task_type"]


@runtime_checkable
class TaskType(Protocol):
    """What a kind of labeling task defines (one instance per project's task)."""

    name: ClassVar[str]
    widget: ClassVar[str]  # web template (under web/templates/widgets/) that asks for an answer
    default_aggregator: ClassVar[str]  # the aggregation.method used when the project sets none

    def check_answer(self, value: Any, labels: Sequence[str]) -> str:
        """The canonical answer for ``value``; ``ValueError`` with a one-line reason if invalid."""
        ...

    def predicted(self, probs: np.ndarray) -> np.ndarray:
        """The model's answer per row of an ``(n, n_labels)`` distribution matrix (label indices)."""
        ...

    def agreement(self, answers: pd.DataFrame, labels: Sequence[str]) -> dict[str, float]:
        """Agreement figures (name -> value) over ``task, worker, label`` answers."""
        ...

    def export_columns(self, label: str | None, labels: Sequence[str]) -> dict[str, Any]:
        """Extra export columns for one final ``label`` (None while pending)."""
        ...


TASK_TYPES: Registry[type[TaskType]] = Registry("task type", group="duolabel.task_types")


def task_type(name: str) -> TaskType:
    """The task type registered as ``name``, ready to use.

    Examples
    --------
    >>> task_type("ordinal").default_aggregator
    'median'
    """
    return TASK_TYPES.get(name)()


def _agreement(answers: pd.DataFrame, labels: Sequence[str], level: str) -> dict[str, float]:
    # Imported here: the quality statistics import the answers' validation from the
    # aggregation module, which registers aggregators that task types name.
    from duolabel.core.quality import fleiss_kappa, krippendorff_alpha

    return {
        f"Krippendorff's alpha ({level})": krippendorff_alpha(answers, labels, level=level),
        "Fleiss' kappa": fleiss_kappa(answers, labels),
    }


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
    ValueError: 'eggs' is not one of 'spam', 'ham'
    """

    name: ClassVar[str] = "single_label"
    widget: ClassVar[str] = "widgets/single_label.html"
    default_aggregator: ClassVar[str] = "majority_vote"
    level: ClassVar[str] = "nominal"

    def check_answer(self, value: Any, labels: Sequence[str]) -> str:
        text = "" if value is None else str(value).strip()
        if text not in labels:
            raise ValueError(f"{text!r} is not one of {', '.join(repr(label) for label in labels)}")
        return text

    def predicted(self, probs: np.ndarray) -> np.ndarray:
        return np.asarray(probs).argmax(axis=1)

    def agreement(self, answers: pd.DataFrame, labels: Sequence[str]) -> dict[str, float]:
        return _agreement(answers, labels, self.level)

    def export_columns(self, label: str | None, labels: Sequence[str]) -> dict[str, Any]:
        return {}


@TASK_TYPES.register("ordinal")
class Ordinal(SingleLabel):
    """One label per item on an ordered scale (the labels' order in the project file).

    Answers and predictions are labels as for ``single_label``; what differs is that a near miss
    counts as nearer than a far one: agreement is Krippendorff's ordinal alpha, the default
    aggregation is the median answer (:class:`duolabel.core.aggregation.MedianVote`), the web
    page shows the labels as a scale, and exports carry the label's ``rank`` on the scale.

    Examples
    --------
    >>> Ordinal().export_columns("mid", ["low", "mid", "high"])
    {'rank': 1}
    """

    name: ClassVar[str] = "ordinal"
    widget: ClassVar[str] = "widgets/ordinal.html"
    default_aggregator: ClassVar[str] = "median"
    level: ClassVar[str] = "ordinal"

    def export_columns(self, label: str | None, labels: Sequence[str]) -> dict[str, Any]:
        return {"rank": None if label is None else list(labels).index(label)}
