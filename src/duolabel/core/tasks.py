"""Task types: what differs between kinds of labeling.

A task type owns the shape of an answer and its validation (on import and in the web app), how
a model's prediction is read from its distribution, how agreement is measured, which aggregator
a project gets by default, the answer widget the web page shows, and the extra export columns.
Everything else in duolabel asks the project's task type (``task_type(config.task.type)``)
instead of assuming one label per item.

Built-ins: ``single_label`` (one of the labels, unordered), ``ordinal`` (one of the labels,
which are ordered: the scale's order is the order the project lists them in) and
``multi_label`` (any number of the labels, stored as a JSON list) and ``pairwise`` (which of
two responses to a prompt is better: ``A``, ``B`` or ``tie``). Another kind of
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
from duolabel.core.multilabel import NO, YES, BinaryRelevance, answer_sets, per_label, whole_answer_chances
from duolabel.core.pairwise import PAIR_FIELDS, check_pair_labels
from duolabel.core.quality import fleiss_kappa, krippendorff_alpha
from duolabel.core.registry import Registry
from duolabel.errors import DuolabelError, shown

__all__ = [
    "TASK_TYPES",
    "AnswerError",
    "MultiLabel",
    "Ordinal",
    "Pairwise",
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
        super().__init__(f"got {shown(got)}, expected {expected}")
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

    def routing_probs(self, probs: np.ndarray, answers: Sequence[str], labels: Sequence[str]) -> np.ndarray:
        """What routing scores, from the ``(n, n_labels)`` calibrated model output and the model's
        stored ``answers``: rows over the item's likeliest answers whose largest entry is the
        chance the model's answer is right (the policies read a row's top entry and margin)."""
        ...

    def routing_gold(self, answers: Sequence[str], gold: Sequence[str], labels: Sequence[str]) -> np.ndarray:
        """Per golden item, the column of :meth:`routing_probs` that holds its ``gold`` answer
        (``answers``: the model's stored answers); -1 where none does."""
        ...

    def answer_score(self, answer: str, gold: str) -> float:
        """How right a person's stored ``answer`` is against the ``gold`` answer, from 0 to 1: what
        one control or exam question counts towards their accuracy."""
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

    def routing_probs(self, probs: np.ndarray, answers: Sequence[str], labels: Sequence[str]) -> np.ndarray:
        return probs  # the distribution over the labels: its top entry is the answer's chance

    def answer_score(self, answer: str, gold: str) -> float:
        return float(answer == gold)

    def routing_gold(self, answers: Sequence[str], gold: Sequence[str], labels: Sequence[str]) -> np.ndarray:
        return np.array([list(labels).index(g) for g in gold])

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

    def __init__(self, *, thresholds: Sequence[float] | None = None) -> None:
        # Per-label decision thresholds (calibration.label_thresholds: tuned); None: 0.5 for all.
        self.thresholds = None if thresholds is None else [float(t) for t in thresholds]

    def _limits(self, threshold: float | Sequence[float] | None) -> float | Sequence[float]:
        if threshold is not None:
            return threshold
        return 0.5 if self.thresholds is None else self.thresholds

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

    def model_answer(
        self, probs: Sequence[float], labels: Sequence[str], threshold: float | Sequence[float] | None = None
    ) -> str:
        """The model's answer from per-label probabilities: every label at its ``threshold`` (one
        for all, or one per label; None: the type's ``thresholds``, else 0.5) or above.

        Examples
        --------
        >>> MultiLabel().model_answer([0.9, 0.2, 0.5], ["joy", "love", "fear"])
        '["joy", "fear"]'
        >>> MultiLabel(thresholds=[0.5, 0.15, 0.6]).model_answer([0.9, 0.2, 0.5], ["joy", "love", "fear"])
        '["joy", "love"]'
        """
        limits = np.broadcast_to(np.asarray(self._limits(threshold), dtype=float), (len(labels),))
        return json.dumps(
            [label for label, p, t in zip(labels, probs, limits, strict=True) if p >= t], ensure_ascii=False
        )

    def model_confidence(
        self, probs: Sequence[float], threshold: float | Sequence[float] | None = None
    ) -> float:
        """The chance the whole list is right, labels taken as independent: the product over
        labels of the probability of the side :meth:`model_answer` chose.

        Examples
        --------
        >>> round(MultiLabel().model_confidence([0.9, 0.2]), 2)  # joy in (0.9), love out (0.8)
        0.72
        """
        p = np.asarray(probs, dtype=float)
        return float(np.prod(np.where(p >= np.asarray(self._limits(threshold), dtype=float), p, 1.0 - p)))

    def routing_probs(self, probs: np.ndarray, answers: Sequence[str], labels: Sequence[str]) -> np.ndarray:
        """Per item, the chance the model's whole list (as stored: ``answers``, whatever the
        thresholds that chose it) is right and that of the likeliest other list
        (:func:`duolabel.core.multilabel.whole_answer_chances`): an item is accepted or routed
        on its chance of being entirely right.

        Examples
        --------
        >>> MultiLabel().routing_probs(np.array([[0.9, 0.2]]), ['["a"]'], ["a", "b"]).round(2).tolist()
        [[0.72, 0.18]]
        """
        chosen = [set(s) for s in answer_sets(answers)]
        return whole_answer_chances(
            probs,
            np.array([[label in s for label in labels] for s in chosen], dtype=bool).reshape(probs.shape),
        )

    def answer_score(self, answer: str, gold: str) -> float:
        """Partial credit: the Jaccard index of the two lists (labels in both over labels in
        either; 1 when both are empty), so a control answered with one of two gold labels
        counts half, not wrong.

        Examples
        --------
        >>> MultiLabel().answer_score('["joy"]', '["joy", "love"]'), MultiLabel().answer_score("[]", "[]")
        (0.5, 1.0)
        """
        given, truth = (set(s) for s in answer_sets([answer, gold]))
        either = given | truth
        return len(given & truth) / len(either) if either else 1.0

    def routing_gold(self, answers: Sequence[str], gold: Sequence[str], labels: Sequence[str]) -> np.ndarray:
        """0 where the model's whole list equals the gold list (column 0 of
        :meth:`routing_probs` is the model's answer), -1 otherwise.

        Examples
        --------
        >>> MultiLabel().routing_gold(['["a"]', '["a", "b"]'], ['["a"]', '["a"]'], ["a", "b"])
        array([ 0, -1])
        """
        return np.array([0 if a == g else -1 for a, g in zip(answers, gold, strict=True)], dtype=int)

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


# -- pairwise preference ------------------------------------------------------------------
# Optional members a task type may have beyond the protocol (callers use getattr):
# ``item_fields`` (item fields every row must carry, checked on import), ``check_labels``
# (ValueError unless the project's labels suit the type) and ``item_view`` (what the labeling
# page shows of an item's fields).


@TASK_TYPES.register("pairwise")
class Pairwise(SingleLabel):
    """Which of two responses to a prompt is better: ``A``, ``B`` or, if listed, ``tie``.

    An item is a prompt (its text) and two responses, the fields ``response_a`` and
    ``response_b`` (rename a file's columns with the data source's ``columns``). The labels are
    fixed: ``A`` and ``B``, plus ``tie`` when ties are allowed. Answers are single labels, so
    aggregation (majority vote by default, Dawid-Skene, ...) and agreement (kappa, nominal
    alpha) are the single-label ones; an answer is read case-insensitively (``a`` is ``A``).
    The labeling page shows the prompt with the two responses side by side.

    Examples
    --------
    >>> t = Pairwise()
    >>> t.check_answer("b", ["A", "B", "tie"])
    'B'
    >>> t.check_answer("tie", ["A", "B"])
    Traceback (most recent call last):
    ...
    duolabel.core.tasks.AnswerError: got 'tie', expected one of 'A', 'B'
    >>> t.item_view({"response_a": "yes", "response_b": "no", "source": "x"})
    {'response_a': 'yes', 'response_b': 'no'}
    """

    name: ClassVar[str] = "pairwise"
    widget: ClassVar[str] = "widgets/pairwise.html"
    item_fields: ClassVar[tuple[str, ...]] = PAIR_FIELDS

    def check_answer(self, value: Any, labels: Sequence[str]) -> str:
        if isinstance(value, str):
            value = {label.lower(): label for label in labels}.get(value.strip().lower(), value)
        return super().check_answer(value, labels)

    def check_labels(self, labels: Sequence[str]) -> None:
        check_pair_labels(labels)

    def item_view(self, fields: dict[str, Any]) -> dict[str, Any]:
        return {name: str(fields.get(name) or "") for name in self.item_fields}
