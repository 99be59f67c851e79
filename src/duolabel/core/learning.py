"""The learning loop's arithmetic: the learning curve, how stable successive models are, and
whether one more golden label is worth its price.

The stopping rule has two halves, both readable by the user. *Stable predictions*
(Bloodgood & Vijay-Shanker 2009): successive models agree on a fixed unlabelled stop set at
Cohen's kappa >= 0.99, after which the F-score moves by about 0.04 at most. *Expected gain
per label*: the slope of the learning curve (accuracy gained by one more training label)
times the items the model will still label is the number of extra items it gets right; each
saves what people would have been paid for it. More golden items pay off while that saving
exceeds the price of one expert label and the predictions still move.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from duolabel.core.calibration import error_detection_auroc
from duolabel.core.quality import binomial_interval
from duolabel.core.strategies import stable_predictions

__all__ = [
    "CurvePoint",
    "PayOff",
    "accuracy_slope",
    "learning_curve",
    "label_payoff",
    "successive_kappas",
]

#: Nested shares of the training labels the curve is measured at.
CURVE_FRACTIONS = (0.5, 0.7, 0.85, 1.0)


@dataclass(frozen=True)
class CurvePoint:
    """Out-of-fold accuracy and error-detection AUROC when training on ``labels`` items,
    each with its interval (accuracy: Wilson; AUROC: bootstrap percentile; NaN when undefined)."""

    labels: int
    accuracy: float
    accuracy_low: float
    accuracy_high: float
    auroc: float
    auroc_low: float
    auroc_high: float


def _bootstrap_auroc(
    probs: np.ndarray, gold: np.ndarray, confidence: float, rng: np.random.Generator, n_boot: int
) -> tuple[float, float]:
    values = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(gold), len(gold))
        value = error_detection_auroc(probs[pick], gold[pick])
        if not np.isnan(value):
            values.append(value)
    if len(values) < n_boot // 2:  # mostly all-right or all-wrong resamples: no interval
        return float("nan"), float("nan")
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def learning_curve(
    vectors: np.ndarray,
    gold: np.ndarray,
    *,
    n_labels: int,
    fractions: Sequence[float] = CURVE_FRACTIONS,
    regularization: float = 1.0,
    folds: int = 5,
    confidence: float = 0.9,
    seed: int = 0,
    n_boot: int = 200,
) -> list[CurvePoint]:
    """Refit a logistic head on nested subsamples of the training labels (``fractions`` of
    them, each containing the smaller ones) and measure it out of fold.

    ``vectors`` are the items' embeddings, ``gold`` their label indices in ``range(n_labels)``.
    A subsample with fewer than two labels, or a label seen once, is skipped (no fold split).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> gold = np.repeat([0, 1], 40)
    >>> vectors = rng.normal(size=(80, 4)) + gold[:, None] * 1.5
    >>> points = learning_curve(vectors, gold, n_labels=2, n_boot=20)
    >>> [p.labels for p in points], all(0.5 < p.accuracy <= 1 for p in points)
    ([40, 56, 68, 80], True)
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    vectors = np.asarray(vectors, dtype=float)
    gold = np.asarray(gold, dtype=int)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(gold))
    points = []
    for fraction in fractions:
        pick = order[: int(round(fraction * len(gold)))]
        y = gold[pick]
        present, counts = np.unique(y, return_counts=True)
        if len(present) < 2 or counts.min() < 2:
            continue
        cv = StratifiedKFold(n_splits=min(folds, int(counts.min())), shuffle=True, random_state=seed)
        head = LogisticRegression(C=regularization, max_iter=1000)
        part = cross_val_predict(head, vectors[pick], y, cv=cv, method="predict_proba")
        probs = np.zeros((len(pick), n_labels))
        probs[:, present] = part  # labels absent from the subsample get probability 0
        right = int((probs.argmax(axis=1) == y).sum())
        low, high = binomial_interval(right, len(y), confidence, "wilson")
        auroc = error_detection_auroc(probs, y)
        auroc_low, auroc_high = _bootstrap_auroc(probs, y, confidence, rng, n_boot)
        points.append(CurvePoint(len(y), right / len(y), low, high, auroc, auroc_low, auroc_high))
    return points


def accuracy_slope(points: Sequence[CurvePoint]) -> float:
    """Accuracy gained by one more label at the end of the curve (never below 0).

    Fits ``accuracy = a + b log(labels)`` by least squares, the usual shape of a learning
    curve, and returns its derivative ``b / labels`` at the largest size; 0 with fewer than
    two sizes.

    Examples
    --------
    >>> pts = [CurvePoint(n, 0.5 + 0.1 * np.log(n / 50), 0, 1, 0.5, 0, 1) for n in (50, 100, 200)]
    >>> round(accuracy_slope(pts), 6)
    0.0005
    """
    sizes = np.array([p.labels for p in points], dtype=float)
    if len(np.unique(sizes)) < 2:
        return 0.0
    b, _ = np.polyfit(np.log(sizes), [p.accuracy for p in points], 1)
    return max(float(b) / float(sizes.max()), 0.0)


def successive_kappas(history: Sequence[Sequence[object]]) -> list[float]:
    """Cohen's kappa between each model's predicted labels and the next one's on the stop set.

    Examples
    --------
    >>> successive_kappas([["a", "b", "a"], ["a", "b", "a"], ["a", "a", "a"]])
    [1.0, 0.0]
    """
    from sklearn.metrics import cohen_kappa_score

    kappas = []
    for a, b in zip(history, history[1:], strict=False):
        ya, yb = np.asarray(a), np.asarray(b)
        # Identical predictions agree perfectly; sklearn gives NaN when only one label occurs.
        kappas.append(1.0 if np.array_equal(ya, yb) else float(cohen_kappa_score(ya, yb)))
    return kappas


@dataclass(frozen=True)
class PayOff:
    """Whether more golden items would pay off, with the figures behind the answer."""

    kappas: list[float] = field(default_factory=list)
    stable: bool = False
    slope: float = 0.0
    items_left: int = 0
    saving_per_item: float = 0.0
    price_per_label: float = 0.0
    currency: str = "USD"

    @property
    def extra_correct_per_label(self) -> float:
        """Items the next model is expected to get right thanks to one more label."""
        return self.slope * self.items_left

    @property
    def saving_per_label(self) -> float:
        """What one more label saves on people, in money."""
        return self.extra_correct_per_label * self.saving_per_item

    @property
    def pays_off(self) -> bool:
        return not self.stable and self.saving_per_label > self.price_per_label

    def describe(self) -> str:
        """The verdict in one sentence with its figures.

        Examples
        --------
        >>> PayOff([0.9], False, 0.0005, 1000, 0.12, 1.0).describe()  # doctest: +NORMALIZE_WHITESPACE
        'more golden items would not pay off: one more label makes 0.50 more items right
        (accuracy +0.0005 per label on 1,000 items left), saving 0.06 USD vs 1.00 USD per
        expert label; successive models still change (kappa 0.900)'
        """
        verdict = "would pay off" if self.pays_off else "would not pay off"
        if not self.kappas:
            models = "no two model versions to compare yet"
        else:
            state = "have stabilised" if self.stable else "still change"
            models = f"successive models {state} (kappa {self.kappas[-1]:.3f})"
        why = (
            f"one more label makes {self.extra_correct_per_label:.2f} more items right (accuracy "
            f"+{self.slope:.4f} per label on {self.items_left:,} items left), saving "
            f"{self.saving_per_label:.2f} {self.currency} vs {self.price_per_label:.2f} "
            f"{self.currency} per expert label; {models}"
        )
        return f"more golden items {verdict}: {why}"


def label_payoff(
    history: Sequence[Sequence[object]],
    points: Sequence[CurvePoint],
    *,
    items_left: int,
    saving_per_item: float,
    price_per_label: float,
    kappa: float = 0.99,
    window: int = 3,
    currency: str = "USD",
) -> PayOff:
    """The stopping rule: stable predictions (:func:`~duolabel.core.strategies.stable_predictions`
    over ``history``, each model's labels on the stop set) and the money one more label saves
    (:func:`accuracy_slope` of ``points`` x ``items_left`` x ``saving_per_item``) against
    ``price_per_label``.

    Examples
    --------
    >>> pts = [CurvePoint(n, 0.5 + 0.1 * np.log(n / 50), 0, 1, 0.5, 0, 1) for n in (50, 100, 200)]
    >>> verdict = label_payoff([[0, 1], [1, 1]], pts, items_left=10_000, saving_per_item=0.3,
    ...                        price_per_label=1.0)
    >>> verdict.pays_off, round(verdict.saving_per_label, 2)
    (True, 1.5)
    """
    return PayOff(
        kappas=successive_kappas(history),
        stable=stable_predictions(list(history), kappa=kappa, window=window),
        slope=accuracy_slope(points),
        items_left=items_left,
        saving_per_item=saving_per_item,
        price_per_label=price_per_label,
        currency=currency,
    )
