"""Task types: what differs between kinds of labeling.

A task type owns the shape of an answer and its validation (on import and in the web app), how
a model's prediction is read from its distribution, how agreement is measured, which aggregator
a project gets by default, the answer widget the web page shows, and the extra export columns.
Everything else in duolabel asks the project's task type (``task_type(config.task.type)``)
instead of assuming one label per item.

Built-ins: ``single_label`` (one of the labels, unordered), ``ordinal`` (one of the labels,
which are ordered: the scale's order is the order the project lists them in) and
``multi_label`` (any number of the labels, stored as a JSON list). Another kind of
task is one class with the members of :class:`TaskType`, registered in :data:`TASK_TYPES` (or
through the ``duolabel.task_types`` entry point group), plus its widget template under
``web/templates/widgets/``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from duolabel.core.aggregation import Aggregator, make_aggregator
from duolabel.core.multilabel import NO, YES, BinaryRelevance, answer_sets, per_label
from duolabel.core.quality import fleiss_kappa, krippendorff_alpha
from duolabel.core.registry import Registry
from duolabel.errors import DuolabelError

__all__ = [
    "TASK_TYPES",
    "AnswerError",
    "MultiLabel",
    "Ordinal",
    "SingleLabel",
    "TaskType",
    "check_item_answer",
    "task_type",
]


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
    list_valued: ClassVar[bool]  # an answer is a list: importers pass list cells through as lists

    def check_answer(self, value: Any, labels: Sequence[str]) -> str:
        """The answer as stored for ``value``; :class:`AnswerError` if it is not a valid answer."""
        ...

    def aggregator(self, method: str, *, labels: Sequence[str], **params: Any) -> Aggregator:
        """The aggregator for ``aggregation.method`` over this type's answers."""
        ...

    def predicted(self, probs: np.ndarray) -> np.ndarray:
        """The model's answer per row of an ``(n, n_labels)`` distribution matrix (label indices)."""
        ...

    def model_answer(self, probs: Sequence[float], labels: Sequence[str]) -> str:
        """The model's answer as stored, from one row of its probabilities."""
        ...

    def model_confidence(self, probs: Sequence[float]) -> float:
        """The model's own chance that :meth:`model_answer` is right (before calibration)."""
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


def check_item_answer(kind: TaskType, value: Any, labels: Sequence[str], text: str) -> str:
    """``kind.check_answer``, then, for a type whose answers point into the item's ``text``
    (``spans``: its ``check_against_text``), the answer against that text.

    Examples
    --------
    >>> check_item_answer(task_type("single_label"), "spam", ["spam", "ham"], "any text")
    'spam'
    """
    answer = kind.check_answer(value, labels)
    against_text = getattr(kind, "check_against_text", None)
    if against_text is not None:
        against_text(answer, text)
    return answer


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
    list_valued: ClassVar[bool] = False

    def check_answer(self, value: Any, labels: Sequence[str]) -> str:
        # Exactly a label: callers strip what their format pads (the importer strips cells),
        # and the web app compares what the browser sent.
        if not isinstance(value, str) or value not in labels:
            raise AnswerError(value, f"one of {', '.join(repr(label) for label in labels)}")
        return value

    def aggregator(self, method: str, *, labels: Sequence[str], **params: Any) -> Aggregator:
        return make_aggregator(method, labels=labels, **params)

    def predicted(self, probs: np.ndarray) -> np.ndarray:
        return np.asarray(probs).argmax(axis=1)

    def model_answer(self, probs: Sequence[float], labels: Sequence[str]) -> str:
        return labels[int(np.argmax(probs))]

    def model_confidence(self, probs: Sequence[float]) -> float:
        return float(np.max(probs))

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


@TASK_TYPES.register("multi_label")
class MultiLabel:
    """Any number of the labels per item (topics, emotions, content flags), none included.

    An answer is stored canonically as a JSON list in the project's label order
    (``["joy", "love"]``; ``[]`` when no label applies), so equal answers are equal strings and a
    CSV cell reads the same as a JSONL value. :meth:`check_answer` takes a list, its JSON form or
    a comma-separated cell (``joy, love``). Each label is a yes/no question of its own (binary
    relevance): people's answers are aggregated per label (:class:`duolabel.core.multilabel.
    BinaryRelevance`, majority vote by default), agreement is kappa and alpha on each label's
    yes/no answers and their mean over labels, and exports carry an ``is_<label>`` column (1 or
    0) per label.

    Examples
    --------
    >>> t = MultiLabel()
    >>> t.check_answer(["love", "joy"], ["joy", "love", "fear"])
    '["joy", "love"]'
    >>> t.check_answer("fear, joy", ["joy", "love", "fear"])
    '["joy", "fear"]'
    >>> t.check_answer("[]", ["joy", "love", "fear"])
    '[]'
    >>> t.check_answer('["joy", "anger"]', ["joy", "love", "fear"])
    Traceback (most recent call last):
    ...
    duolabel.core.tasks.AnswerError: got 'anger', expected a list of labels, each one of 'joy', 'love', 'fear'
    >>> t.export_columns('["fear"]', ["joy", "fear"])
    {'is_joy': 0, 'is_fear': 1}
    """

    name: ClassVar[str] = "multi_label"
    widget: ClassVar[str] = "widgets/multi_label.html"
    default_aggregator: ClassVar[str] = "majority_vote"  # per label (binary relevance)
    list_valued: ClassVar[bool] = True  # importers pass list cells (JSONL, Parquet) as they are

    def check_answer(self, value: Any, labels: Sequence[str]) -> str:
        expected = f"a list of labels, each one of {', '.join(repr(label) for label in labels)}"
        given: Any = value
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    given = json.loads(text)
                except json.JSONDecodeError:
                    raise AnswerError(
                        value, f"{expected} (as JSON: {text[:1]}...] is not valid JSON)"
                    ) from None
            elif text:
                given = [part.strip() for part in text.split(",")]
            else:
                raise AnswerError(value, f"{expected} ([] for none)")
        elif hasattr(value, "tolist") and getattr(value, "ndim", 0) == 1:  # a Parquet list cell
            given = value.tolist()
        if not isinstance(given, (list, tuple)):
            raise AnswerError(value, expected)
        seen: set[str] = set()
        for label in given:
            if not isinstance(label, str) or label not in labels:
                raise AnswerError(label, expected)
            if label in seen:
                raise AnswerError(value, f"{expected}, each at most once ({label!r} is twice)")
            seen.add(label)
        return json.dumps([label for label in labels if label in seen], ensure_ascii=False)

    def aggregator(self, method: str, *, labels: Sequence[str], **params: Any) -> Aggregator:
        return BinaryRelevance(method, labels=labels, **params)

    def predicted(self, probs: np.ndarray) -> np.ndarray:
        # The most probable label: what the single-label code paths that still ask for one
        # index get; the set itself is :meth:`model_answer`.
        return np.asarray(probs).argmax(axis=1)

    def model_answer(self, probs: Sequence[float], labels: Sequence[str], threshold: float = 0.5) -> str:
        """The model's answer from per-label probabilities: every label at ``threshold`` or above.

        Examples
        --------
        >>> MultiLabel().model_answer([0.9, 0.2, 0.5], ["joy", "love", "fear"])
        '["joy", "fear"]'
        """
        return json.dumps(
            [label for label, p in zip(labels, probs, strict=True) if p >= threshold], ensure_ascii=False
        )

    def model_confidence(self, probs: Sequence[float], threshold: float = 0.5) -> float:
        """The chance the whole list is right, labels taken as independent: the product over
        labels of the probability of the side :meth:`model_answer` chose.

        Examples
        --------
        >>> round(MultiLabel().model_confidence([0.9, 0.2]), 2)  # joy in (0.9), love out (0.8)
        0.72
        """
        p = np.asarray(probs, dtype=float)
        return float(np.prod(np.where(p >= threshold, p, 1.0 - p)))

    def agreement(self, answers: pd.DataFrame, labels: Sequence[str]) -> dict[str, float]:
        # Each label's yes/no answers as a binary task. A label everyone answered the same way
        # everywhere (typically: nobody chose it) has chance agreement 1, so kappa and alpha
        # are undefined there (NaN), not a perfect 1 that would lift the mean over labels.
        figures: dict[str, float] = {}
        alphas, kappas = [], []
        for label, frame in per_label(answers, labels).items():
            varied = frame["label"].nunique() > 1
            alpha = _figure(krippendorff_alpha, frame, [NO, YES], level="nominal") if varied else math.nan
            kappa = _figure(fleiss_kappa, frame, [NO, YES]) if varied else math.nan
            alphas.append(alpha)
            kappas.append(kappa)
            figures[f"Fleiss' kappa: {label}"] = kappa
        with np.errstate(all="ignore"):
            mean = {
                "Krippendorff's alpha (mean over labels)": _mean(alphas),
                "Fleiss' kappa (mean over labels)": _mean(kappas),
            }
        return {**mean, **figures}

    def export_columns(self, label: str | None, labels: Sequence[str]) -> dict[str, Any]:
        chosen = set(answer_sets([label])[0]) if label is not None else None
        return {f"is_{name}": None if chosen is None else int(name in chosen) for name in labels}


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan
