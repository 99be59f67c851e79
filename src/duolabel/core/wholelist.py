"""The chance that a whole list answer is right, calibrated on the golden items themselves.

Multi-label routing scores an item by its list's chance of being entirely right. The product
over labels of the calibrated per-label chances (:func:`duolabel.core.multilabel.
whole_answer_chances`) assumes labels independent, and they are not: on GoEmotions every comment
has at least one gold label, so the empty list is never right, yet the product of many
calibrated "no"s gives it about 0.3. :class:`WholeListCalibrator` calibrates that product as a
single-label project calibrates its top probability: on the golden items, against "the stored
list equals gold", with isotonic regression (monotone in the product), and separately for empty
and non-empty lists, so that the empty list gets its measured rate of being right. The stage
keeps the calibrated chance in a prediction's features under :data:`LIST_CHANCE`, and routing
reads it there (:func:`with_list_chance`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "LIST_CHANCE",
    "ListScores",
    "WholeListCalibrator",
    "chance_bins",
    "chance_calibration_error",
    "list_scores",
    "with_list_chance",
]

#: The features key under which the calibrate stage stores the calibrated whole-list chance.
LIST_CHANCE = "list_chance"


def _isotonic(score: np.ndarray, right: np.ndarray) -> Any:
    from sklearn.isotonic import IsotonicRegression

    return IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(score, right)


class WholeListCalibrator:
    """Calibrates the whole-list chance (the per-label product) against "the list equals gold".

    ``fit(chances, right, empty)`` takes, per golden item, the uncalibrated chance that its
    stored list is right, whether it is (0/1) and whether the list is empty. Empty and non-empty
    lists get isotonic regressions of their own when each group has at least ``min_group``
    golden items (a group with fewer uses the regression over all items): labels that never
    co-occur, or an item that always carries some label, are then measured, not assumed
    away. ``transform`` calibrates new chances; ``cross_validated`` gives each fitted item's
    chance from calibrators fitted on the other folds only (honest figures for golden items and
    the routing threshold chosen on them).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> empty = rng.random(400) < 0.3
    >>> chances = np.where(empty, 0.3, rng.uniform(0.2, 1.0, 400))
    >>> right = np.where(empty, 0, rng.random(400) < chances).astype(int)  # [] is never right
    >>> cal = WholeListCalibrator().fit(chances, right, empty)
    >>> got = cal.transform(np.array([0.3, 0.6]), np.array([True, False]))
    >>> float(got[0]), bool(abs(got[1] - 0.6) < 0.1)
    (0.0, True)
    """

    def __init__(self, *, min_group: int = 20, folds: int = 5, random_state: int = 0) -> None:
        self.min_group = min_group
        self.folds = folds
        self.random_state = random_state

    def fit(self, chances: np.ndarray, right: np.ndarray, empty: np.ndarray) -> WholeListCalibrator:
        chances, right = np.asarray(chances, dtype=float), np.asarray(right, dtype=float)
        empty = np.asarray(empty, dtype=bool)
        self.pooled_ = _isotonic(chances, right)
        self.groups_: dict[bool, Any] = {}
        for group in (True, False):
            mine = empty == group
            if mine.sum() >= self.min_group:
                self.groups_[group] = _isotonic(chances[mine], right[mine])
        return self

    def transform(self, chances: np.ndarray, empty: np.ndarray) -> np.ndarray:
        chances, empty = np.asarray(chances, dtype=float), np.asarray(empty, dtype=bool)
        out = np.asarray(self.pooled_.predict(chances), dtype=float) if len(chances) else np.zeros(0)
        for group, model in self.groups_.items():
            mine = empty == group
            if mine.any():
                out[mine] = model.predict(chances[mine])
        return out

    def cross_validated(self, chances: np.ndarray, right: np.ndarray, empty: np.ndarray) -> np.ndarray:
        """Each item's calibrated chance from a calibrator fitted without its fold."""
        from sklearn.model_selection import KFold, StratifiedKFold

        chances, right = np.asarray(chances, dtype=float), np.asarray(right).astype(int)
        empty = np.asarray(empty, dtype=bool)
        # Stratify on (empty, right) so each fold sees both groups and outcomes where it can.
        strata = 2 * empty.astype(int) + right
        counts = np.bincount(strata)
        n_splits = int(min(self.folds, counts[counts > 0].min())) if len(strata) else 0
        splitter: Any
        if n_splits >= 2:
            splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=self.random_state)
        elif len(strata) >= 2 * self.folds:
            splitter = KFold(n_splits=self.folds, shuffle=True, random_state=self.random_state)
        else:  # too few items to hold any out: in-sample, as the single-label path does
            fitted = self.__class__(min_group=self.min_group).fit(chances, right, empty)
            return fitted.transform(chances, empty)
        out = np.zeros(len(chances))
        for train, test in splitter.split(chances.reshape(-1, 1), strata):
            fitted = self.__class__(min_group=self.min_group).fit(chances[train], right[train], empty[train])
            out[test] = fitted.transform(chances[test], empty[test])
        return out


def with_list_chance(probs: np.ndarray, chances: Sequence[float | None]) -> np.ndarray:
    """Routing rows (the answer's chance, the runner-up's) with the answer's chance replaced by
    its calibrated whole-list chance where one is given (None: left as it is).

    The runner-up is capped at the new chance, so that a row's top entry stays the model's own
    answer (what routing policies read).

    Examples
    --------
    >>> with_list_chance(np.array([[0.3, 0.2], [0.7, 0.1]]), [0.05, None]).tolist()
    [[0.05, 0.05], [0.7, 0.1]]
    """
    out = np.array(probs, dtype=float, copy=True)
    for i, chance in enumerate(chances):
        if chance is not None and out.shape[1] >= 1:
            out[i, 0] = float(chance)
            out[i, 1:] = np.minimum(out[i, 1:], out[i, 0])
    return out


def chance_bins(
    chances: np.ndarray, right: np.ndarray, *, n_bins: int = 10
) -> list[tuple[int, float, float]]:
    """Equal-mass bins of stated ``chances`` (``n_bins`` of them, fewer with fewer items): each
    bin's item count, mean chance and share ``right``, from the least to the surest. The
    reports' reliability tables and :func:`chance_calibration_error` read the same bins.

    Examples
    --------
    >>> chance_bins(np.array([0.9, 0.2, 0.8, 0.1]), np.array([1, 0, 1, 1]), n_bins=2)
    [(2, 0.15000000000000002, 0.5), (2, 0.8500000000000001, 1.0)]
    """
    chances, right = np.asarray(chances, dtype=float), np.asarray(right, dtype=float)
    order = np.argsort(chances, kind="stable")
    return [
        (len(chunk), float(chances[chunk].mean()), float(right[chunk].mean()))
        for chunk in np.array_split(order, min(n_bins, len(order)))
        if len(chunk)
    ]


def chance_calibration_error(chances: np.ndarray, right: np.ndarray, *, n_bins: int = 10) -> float:
    """How far stated chances are from the measured rate: over ``n_bins`` equal-mass bins of the
    chances, the item-weighted mean of |mean chance - share right| (the expected calibration
    error of the chance itself, not of the likelier side).

    Examples
    --------
    >>> chance_calibration_error(np.array([0.3] * 10), np.zeros(10))
    0.3
    """
    total = sum(
        count * abs(chance - share) for count, chance, share in chance_bins(chances, right, n_bins=n_bins)
    )
    return round(float(total) / max(len(chances), 1), 12)


@dataclass
class ListScores:
    """How well lists match gold lists: ``subset_accuracy`` (the whole list equals gold),
    ``micro_f1`` (over every (item, label) pair) and per label ``precision``, ``recall``,
    ``f1`` and ``support`` (items whose gold list has it)."""

    subset_accuracy: float
    micro_f1: float
    precision: dict[str, float]
    recall: dict[str, float]
    f1: dict[str, float]
    support: dict[str, int]


def list_scores(
    given: Sequence[Sequence[str]], gold: Sequence[Sequence[str]], labels: Sequence[str]
) -> ListScores:
    """Subset accuracy, micro-F1 and per-label figures of ``given`` lists against ``gold`` lists.

    A label never chosen nor in gold has an undefined (NaN) precision, recall and F1.

    Examples
    --------
    >>> s = list_scores([["a"], [], ["a", "b"]], [["a"], ["b"], ["a"]], ["a", "b"])
    >>> round(s.subset_accuracy, 3), s.micro_f1, s.recall["b"], s.precision["a"]
    (0.333, 0.6667, 0.0, 1.0)
    """
    P = np.array([[label in set(g) for label in labels] for g in given], dtype=bool).reshape(-1, len(labels))
    G = np.array([[label in set(g) for label in labels] for g in gold], dtype=bool).reshape(-1, len(labels))
    hits, chosen, truth = (P & G).sum(axis=0), P.sum(axis=0), G.sum(axis=0)

    def ratio(a: float, b: float) -> float:
        return float(a / b) if b else float("nan")

    total = float(chosen.sum() + truth.sum())
    return ListScores(
        subset_accuracy=float((P == G).all(axis=1).mean()) if len(P) else float("nan"),
        micro_f1=round(2 * float(hits.sum()) / total, 4) if total else float("nan"),
        precision={label: ratio(hits[j], chosen[j]) for j, label in enumerate(labels)},
        recall={label: ratio(hits[j], truth[j]) for j, label in enumerate(labels)},
        f1={label: ratio(2 * hits[j], chosen[j] + truth[j]) for j, label in enumerate(labels)},
        support={label: int(truth[j]) for j, label in enumerate(labels)},
    )
