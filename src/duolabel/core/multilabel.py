"""Multi-label answers as one yes/no task per label (binary relevance).

A multi-label answer is stored as a JSON list of labels (``["joy", "love"]``, see
:class:`duolabel.core.tasks.MultiLabel`). Aggregation and agreement treat each label as a binary
question, "does this label apply?", answered ``yes`` by everyone who chose it and ``no`` by
everyone else who answered the item: the binary relevance reduction (Tsoumakas & Katakis 2007),
as crowd-kit's ``BinaryRelevance`` does. It ignores correlations between labels, and in return
every single-label aggregator (majority vote, Dawid-Skene, GLAD, ...) works per label unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from duolabel.core.aggregation import make_aggregator

__all__ = [
    "NO",
    "YES",
    "BinaryRelevance",
    "OneVsRestHead",
    "LabelThresholds",
    "PerLabelCalibrator",
    "answer_sets",
    "flat_binary",
    "per_label",
    "whole_answer_chances",
]

NO, YES = "no", "yes"


def answer_sets(values: Iterable[str]) -> list[list[str]]:
    """Stored answers (JSON lists) as lists; a bare label (an answer written by hand) is its own list.

    Examples
    --------
    >>> answer_sets(['["joy", "love"]', "[]", "fear"])
    [['joy', 'love'], [], ['fear']]
    """
    return [json.loads(v) if v.lstrip().startswith("[") else [v] for v in values]


def per_label(answers: pd.DataFrame, labels: Sequence[str]) -> dict[str, pd.DataFrame]:
    """For each label, the ``task, worker, label`` answers to "does it apply?" (``yes``/``no``).

    Examples
    --------
    >>> df = pd.DataFrame({"task": ["a", "a"], "worker": [1, 2], "label": ['["x"]', '["x", "y"]']})
    >>> per_label(df, ["x", "y"])["y"]["label"].tolist()
    ['no', 'yes']
    """
    sets = [set(s) for s in answer_sets(answers["label"].astype(str))]
    base = answers[["task", "worker"]].reset_index(drop=True)
    return {label: base.assign(label=[YES if label in s else NO for s in sets]) for label in labels}


class BinaryRelevance:
    """Aggregates multi-label answers with one single-label aggregator per label.

    ``method`` names the aggregator run on each label's yes/no answers (any of
    :data:`duolabel.core.aggregation.AGGREGATORS`, with ``params``). After ``fit``:
    ``labels_`` (task -> the JSON list of the labels voted in), ``probas_`` (tasks x labels:
    the posterior that each label applies; rows need not sum to 1) and ``confidence_``
    (task -> the posterior that the whole list is right, the product over labels of the
    chosen side's posterior, as if labels were independent). ``known`` lists (JSON) anchor every
    label's estimate; ``model_probas`` (task -> label -> the model's probability that it
    applies) breaks ties per label and, with ``fuse_model``, votes per label.

    Examples
    --------
    >>> df = pd.DataFrame({"task": ["a"] * 3, "worker": [1, 2, 3],
    ...                    "label": ['["x", "y"]', '["x"]', '["x", "y"]']})
    >>> agg = BinaryRelevance("majority_vote", labels=["x", "y"]).fit(df)
    >>> agg.labels_.to_dict(), round(float(agg.confidence_["a"]), 3)
    ({'a': '["x", "y"]'}, 0.667)
    """

    def __init__(self, method: str, *, labels: Sequence[str], **params: Any) -> None:
        self.method = method
        self.labels = list(labels)
        self.params = params

    def fit(
        self,
        answers: pd.DataFrame,
        *,
        known: Mapping[Any, str] | None = None,
        model_probas: pd.DataFrame | Mapping[Any, Mapping[str, float]] | None = None,
    ) -> BinaryRelevance:
        known_sets = {
            task: set(s) for task, s in zip(known or {}, answer_sets((known or {}).values()), strict=True)
        }
        model = _per_label_model(model_probas)
        chosen: dict[str, pd.Series] = {}
        yes: dict[str, pd.Series] = {}
        sure: dict[str, pd.Series] = {}
        self.fitted_: dict[str, Any] = {}
        for label, frame in per_label(answers, self.labels).items():
            given = {task: YES if label in s else NO for task, s in known_sets.items()}
            priors = {
                task: {NO: 1.0 - float(p[label]), YES: float(p[label])}
                for task, p in model.items()
                if p.get(label) is not None and np.isfinite(p[label])
            }
            agg = make_aggregator(self.method, labels=[NO, YES], **self.params)
            agg.fit(frame, known=given, model_probas=priors or None)
            self.fitted_[label] = agg
            chosen[label] = agg.labels_
            yes[label] = agg.probas_[YES]
            picked = agg.labels_.to_numpy()
            sure[label] = pd.Series(
                np.where(picked == YES, agg.probas_[YES], agg.probas_[NO]), index=agg.labels_.index
            )
        picks = pd.DataFrame(chosen)
        self.probas_ = pd.DataFrame(yes).reindex(columns=self.labels)
        self.probas_.columns.name = "label"
        self.labels_ = pd.Series(
            [
                json.dumps([lab for lab in self.labels if row[lab] == YES], ensure_ascii=False)
                for _, row in picks.iterrows()
            ],
            index=picks.index,
            name="agg_label",
            dtype=object,
        )
        self.confidence_ = pd.DataFrame(sure).prod(axis=1)
        fused = [getattr(agg, "model_used_", None) for agg in self.fitted_.values()]
        if any(f is not None for f in fused):
            # The model voted on the item when it voted on any of its labels.
            self.model_used_ = {
                task: any(bool(f.get(task, False)) for f in fused if f is not None)
                for task in self.labels_.index
            }
        return self


def _per_label_model(model_probas: Any) -> dict[Any, Mapping[str, float]]:
    if model_probas is None:
        return {}
    if isinstance(model_probas, pd.DataFrame):
        return {task: row.to_dict() for task, row in model_probas.iterrows()}
    return dict(model_probas)


class OneVsRestHead:
    """One binary classifier per label over shared features: per-label probabilities.

    ``make_head()`` builds a fresh scikit-learn classifier (``fit``, ``predict_proba``) for each
    label's yes/no column of ``Y`` (items x labels, 0/1). A label whose column is constant in
    the training data (every item has it, or none) gets that constant as its probability: there
    is nothing to separate. ``predict_proba`` returns items x labels, each entry the probability
    that the label applies (rows need not sum to 1); ``classes_`` numbers the labels, so code
    written for a single-label head's ``(predict_proba, classes_)`` pair reads it unchanged.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> X = np.array([[0.0], [1.0], [2.0], [3.0]])
    >>> Y = np.array([[0, 1], [0, 1], [1, 1], [1, 1]])
    >>> head = OneVsRestHead(LogisticRegression).fit(X, Y)
    >>> p = head.predict_proba(np.array([[0.0], [3.0]]))
    >>> bool(p[0, 0] < 0.5 < p[1, 0]), p[:, 1].tolist()
    (True, [1.0, 1.0])
    """

    def __init__(self, make_head: Any) -> None:
        self.make_head = make_head

    def fit(self, X: np.ndarray, Y: np.ndarray, **fit_params: Any) -> OneVsRestHead:
        Y = np.asarray(Y)
        self.heads_: list[Any] = []
        for j in range(Y.shape[1]):
            column = Y[:, j]
            if column.min() == column.max():
                self.heads_.append(float(column[0]))
            else:
                self.heads_.append(self.make_head().fit(X, column, **fit_params))
        self.classes_ = np.arange(Y.shape[1])
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        columns = [
            np.full(len(X), head) if isinstance(head, float) else head.predict_proba(X)[:, 1]
            for head in self.heads_
        ]
        return np.column_stack(columns) if columns else np.zeros((len(X), 0))


def _binary(p: np.ndarray) -> np.ndarray:
    """One label's probabilities as a two-column distribution (no, yes)."""
    p = np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    return np.column_stack([1.0 - p, p])


class PerLabelCalibrator:
    """Calibrates each label's probability on its own: one binary calibrator per label.

    ``method`` names a calibrator of :data:`duolabel.core.calibration.CALIBRATORS` (or
    ``"auto"``: each label gets the one with the lowest cross-validated log loss on its own
    yes/no answers). ``fit(probs, Y)`` takes items x labels probabilities and the 0/1 truth;
    ``transform`` calibrates new rows; ``cross_validated`` gives each fitted row's calibration by
    calibrators that never saw it (honest figures for golden items). ``methods_`` lists the
    method each label got.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> Y = rng.integers(0, 2, size=(200, 2))
    >>> probs = np.clip(0.5 + 0.2 * (2 * Y - 1) + rng.normal(0, 0.1, Y.shape), 0, 1)  # underconfident
    >>> cal = PerLabelCalibrator("temperature").fit(probs, Y)
    >>> bool((np.abs(cal.transform(probs) - 0.5) > np.abs(probs - 0.5)).mean() > 0.9)
    True
    """

    def __init__(self, method: str = "temperature") -> None:
        self.method = method

    def fit(self, probs: np.ndarray, Y: np.ndarray) -> PerLabelCalibrator:
        from duolabel.core.calibration import CALIBRATORS, select_calibrator

        self.methods_: list[str] = []
        self.calibrators_: list[Any] = []
        for j in range(np.asarray(Y).shape[1]):
            P, y = _binary(probs[:, j]), np.asarray(Y)[:, j].astype(int)
            name = select_calibrator(P, y)[0] if self.method == "auto" else self.method
            self.methods_.append(name)
            self.calibrators_.append(CALIBRATORS.get(name)().fit(P, y))
        return self

    def transform(self, probs: np.ndarray) -> np.ndarray:
        columns = [cal.transform(_binary(probs[:, j]))[:, 1] for j, cal in enumerate(self.calibrators_)]
        return np.column_stack(columns) if columns else np.zeros((len(probs), 0))

    def cross_validated(self, probs: np.ndarray, Y: np.ndarray) -> np.ndarray:
        from duolabel.core.calibration import cross_validated

        columns = [
            cross_validated(name, _binary(probs[:, j]), np.asarray(Y)[:, j].astype(int))[:, 1]
            for j, name in enumerate(self.methods_)
        ]
        return np.column_stack(columns) if columns else np.zeros((len(probs), 0))


def flat_binary(probs: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (item, label) as one binary prediction: the input of single-label metrics.

    Examples
    --------
    >>> P, y = flat_binary(np.array([[0.9, 0.2]]), np.array([[1, 0]]))
    >>> P.tolist(), y.tolist()
    ([[0.09999999999999998, 0.9], [0.8, 0.2]], [1, 0])
    """
    return _binary(np.asarray(probs).ravel()), np.asarray(Y).ravel().astype(int)


def whole_answer_chances(probs: np.ndarray, chosen: np.ndarray | None = None) -> np.ndarray:
    """Per item, the chance that the model's whole list is right and that of the likeliest other list.

    ``probs`` is items x labels, each the calibrated probability that the label applies;
    ``chosen`` (items x labels, true where the model's list has the label) defaults to every
    label at 0.5 or above. Labels taken as independent, the list is right with the product over
    labels of the probability of the side it chose (the answer's chance of being *entirely*
    right, what routing scores), and the likeliest other list flips the least certain label.
    Column 0 is the first chance, column 1 the second capped at the first, so that the largest
    entry of a row is always the model's own answer: routing policies read a row's top entry
    and its margin over the runner-up, as they do for a single-label distribution.

    Examples
    --------
    >>> whole_answer_chances(np.array([[0.9, 0.2], [0.6, 0.5]])).round(2).tolist()
    [[0.72, 0.18], [0.3, 0.3]]
    >>> whole_answer_chances(np.array([[0.9, 0.4]]), np.array([[True, True]])).round(2).tolist()
    [[0.36, 0.36]]
    """
    p = np.asarray(probs, dtype=float)
    if p.size == 0:
        return np.zeros((len(p), 2))
    picked = p >= 0.5 if chosen is None else np.asarray(chosen, dtype=bool)
    side = np.where(picked, p, 1.0 - p)
    whole = side.prod(axis=1)
    # Flipping label j turns its factor side_j into 1 - side_j; the least certain label
    # (side nearest 1/2, or below it where a tuned threshold took the less likely side)
    # gives the runner-up.
    with np.errstate(divide="ignore", invalid="ignore"):
        flips = np.where(side > 0, whole[:, None] * (1.0 - side) / side, 0.0)
    return np.column_stack([whole, np.minimum(flips.max(axis=1), whole)])


class LabelThresholds:
    """Per-label decision thresholds chosen by cross-validation on the golden items.

    A label joins the model's list when its probability reaches its threshold. At 0.5 every
    label's yes/no decision is as often right as calibrated probabilities allow; a rare label
    is then seldom chosen, and a lower threshold finds more of it at the price of false alarms.
    ``fit(probs, Y)`` picks, for each label, the point of ``grid`` with the best mean F1 of
    that label over the held-out folds of ``folds``-fold cross-validation (ties go to the
    point nearest 0.5; a label with fewer than two golden items carrying it keeps 0.5).
    ``thresholds_`` is the choice per label; ``f1_`` (fixed 0.5) and ``tuned_f1_`` (tuned),
    each label's held-out F1 with its threshold chosen on the other folds only (honest).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> Y = (rng.random((400, 1)) < 0.1).astype(int)  # a rare label, underpredicted
    >>> probs = np.clip(0.35 * Y + rng.normal(0.1, 0.08, Y.shape), 0, 1)
    >>> tuned = LabelThresholds().fit(probs, Y)
    >>> bool(tuned.thresholds_[0] < 0.5), bool(tuned.tuned_f1_[0] > tuned.f1_[0])
    (True, True)
    """

    def __init__(self, *, folds: int = 5, grid: Sequence[float] | None = None, random_state: int = 0) -> None:
        self.folds = folds
        self.grid = grid
        self.random_state = random_state

    def _points(self) -> np.ndarray:
        points = np.round(np.arange(0.05, 0.951, 0.05), 2) if self.grid is None else np.asarray(self.grid)
        # Nearest 0.5 first, so that argmax breaks ties towards the untuned threshold.
        return points[np.argsort(np.abs(points - 0.5), kind="stable")]

    def fit(self, probs: np.ndarray, Y: np.ndarray) -> LabelThresholds:
        from sklearn.model_selection import StratifiedKFold

        probs, Y = np.asarray(probs, dtype=float), np.asarray(Y).astype(int)
        points = self._points()
        self.thresholds_ = np.full(Y.shape[1], 0.5)
        self.f1_ = np.full(Y.shape[1], np.nan)
        self.tuned_f1_ = np.full(Y.shape[1], np.nan)
        for j in range(Y.shape[1]):
            y, p = Y[:, j], probs[:, j]
            n_splits = min(self.folds, int(y.sum()), int(len(y) - y.sum()))
            if n_splits < 2:
                continue
            splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=self.random_state)
            folds = list(splitter.split(p.reshape(-1, 1), y))
            held = np.array([[_f1(y[test], p[test] >= t) for t in points] for _, test in folds])
            self.thresholds_[j] = points[int(held.mean(axis=0).argmax())]
            # Honest: each fold's threshold is chosen on the other folds.
            tuned, fixed = np.zeros(len(y), dtype=bool), p >= 0.5
            for k, (_, test) in enumerate(folds):
                others = np.delete(held, k, axis=0).mean(axis=0)
                tuned[test] = p[test] >= points[int(others.argmax())]
            self.f1_[j], self.tuned_f1_[j] = _f1(y, fixed), _f1(y, tuned)
        return self


def _f1(y: np.ndarray, picked: np.ndarray) -> float:
    hits = float(np.sum(picked & (y == 1)))
    denominator = float(np.sum(picked) + np.sum(y == 1))
    return 2 * hits / denominator if denominator else 1.0
