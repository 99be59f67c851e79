"""Calibrators (estimators over probability matrices), calibration metrics, and the
ensemble's average of calibrated distributions.

A calibrator is fitted on out-of-fold probabilities of golden items and their gold
labels, then transforms every prediction of the same model version. Everything here works
on ``(n_items, n_labels)`` matrices (see :mod:`duolabel.core.probs`); the calibration stage
(:mod:`duolabel.stages.calibrate`) reads them from the store and writes the results back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, cast

import numpy as np
from scipy.optimize import minimize_scalar

from duolabel.core.probs import signals
from duolabel.core.registry import Registry

__all__ = [
    "CALIBRATORS",
    "Calibrator",
    "HistogramBinning",
    "Identity",
    "IsotonicCalibration",
    "TemperatureScaling",
    "VectorScaling",
    "calibration_metrics",
    "calibrator_params",
    "confidence_signals",
    "contextual_correction",
    "cross_validated",
    "ensemble_average",
    "ensemble_disagreement",
    "error_detection_auroc",
    "expected_calibration_error",
    "reliability_diagram",
    "select_calibrator",
]


class Calibrator(Protocol):
    """The calibrator interface: ``fit`` on probabilities and gold label indices, then
    ``transform`` probabilities into calibrated ones (rows still sum to one)."""

    def fit(self, probs: np.ndarray, gold: np.ndarray) -> Calibrator: ...

    def transform(self, probs: np.ndarray) -> np.ndarray: ...


#: Calibrators by the name ``calibration.method`` uses; each entry is called with no
#: arguments to make an unfitted calibrator. Plug-ins add theirs through the
#: ``duolabel.calibrators`` entry-point group.
CALIBRATORS: Registry[Callable[[], Calibrator]] = Registry("calibrator", group="duolabel.calibrators")

_EPS = 1e-12


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


@CALIBRATORS.register("temperature")
class TemperatureScaling:
    """Divide log-probabilities by one learned temperature ``T`` (Guo et al., 2017).

    One parameter cannot overfit a small golden set and never changes which label is
    most probable, so accuracy is untouched while confidence becomes honest.

    Examples
    --------
    >>> import numpy as np
    >>> probs = np.array([[0.99, 0.01], [0.98, 0.02], [0.97, 0.03], [0.96, 0.04]])
    >>> cal = TemperatureScaling().fit(probs, np.array([0, 1, 0, 1]))
    >>> bool(cal.transform(probs)[:, 0].max() < 0.9)
    True
    """

    def __init__(self, *, bounds: tuple[float, float] = (0.05, 20.0)) -> None:
        self.bounds = bounds

    def fit(self, probs: np.ndarray, gold: np.ndarray) -> TemperatureScaling:
        logp = np.log(np.clip(probs, _EPS, 1.0))
        rows = np.arange(len(gold))

        def nll(log_t: float) -> float:
            scaled = _softmax(logp / np.exp(log_t))
            return float(-np.log(np.clip(scaled[rows, gold], _EPS, 1.0)).mean())

        lo, hi = np.log(self.bounds[0]), np.log(self.bounds[1])
        result = minimize_scalar(nll, bounds=(lo, hi), method="bounded")
        self.temperature_ = float(np.exp(result.x))
        return self

    def transform(self, probs: np.ndarray) -> np.ndarray:
        logp = np.log(np.clip(probs, _EPS, 1.0))
        return _softmax(logp / self.temperature_)


@CALIBRATORS.register("none")
class Identity:
    """No calibration (``calibration.method: none``)."""

    def fit(self, probs: np.ndarray, gold: np.ndarray) -> Identity:
        return self

    def transform(self, probs: np.ndarray) -> np.ndarray:
        return probs


@CALIBRATORS.register("vector")
class VectorScaling:
    """A learned scale and bias per label on log-probabilities (Platt scaling for two
    labels, its multi-class generalisation otherwise; Guo et al., 2017).

    A small L2 penalty pulls the parameters towards the identity map, so a small
    golden set shrinks towards plain probabilities instead of overfitting.
    """

    def __init__(self, *, penalty: float = 1e-2) -> None:
        self.penalty = penalty

    def fit(self, probs: np.ndarray, gold: np.ndarray) -> VectorScaling:
        from scipy.optimize import minimize

        logp = np.log(np.clip(probs, _EPS, 1.0))
        n, k = logp.shape
        onehot = np.eye(k)[gold]

        def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
            scale, bias = theta[:k], theta[k:]
            p = _softmax(logp * scale + bias)
            nll = -np.sum(onehot * np.log(np.clip(p, _EPS, 1.0))) / n
            diff = (p - onehot) / n
            grad = np.concatenate([(diff * logp).sum(axis=0), diff.sum(axis=0)])
            reg = self.penalty * (np.sum((scale - 1.0) ** 2) + np.sum(bias**2))
            grad += 2 * self.penalty * np.concatenate([scale - 1.0, bias])
            return nll + reg, grad

        start = np.concatenate([np.ones(k), np.zeros(k)])
        result = minimize(loss, start, jac=True, method="L-BFGS-B")
        self.scale_, self.bias_ = result.x[:k], result.x[k:]
        return self

    def transform(self, probs: np.ndarray) -> np.ndarray:
        logp = np.log(np.clip(probs, _EPS, 1.0))
        return _softmax(logp * self.scale_ + self.bias_)


class _OneVsRest:
    """Calibrate each label's probability on its own, then renormalise the row
    (Zadrozny & Elkan, 2002): the shape isotonic regression and histogram binning share."""

    def _fit_one(self, score: np.ndarray, target: np.ndarray) -> object:
        raise NotImplementedError

    def _apply_one(self, model: object, score: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def fit(self, probs: np.ndarray, gold: np.ndarray) -> _OneVsRest:
        self.models_ = [self._fit_one(probs[:, j], (gold == j).astype(float)) for j in range(probs.shape[1])]
        return self

    def transform(self, probs: np.ndarray) -> np.ndarray:
        out = np.column_stack([self._apply_one(m, probs[:, j]) for j, m in enumerate(self.models_)])
        out = np.clip(out, 1e-6, None)
        return out / out.sum(axis=1, keepdims=True)


@CALIBRATORS.register("isotonic")
class IsotonicCalibration(_OneVsRest):
    """Monotone, non-parametric per-label calibration (isotonic regression)."""

    def _fit_one(self, score: np.ndarray, target: np.ndarray) -> object:
        from sklearn.isotonic import IsotonicRegression

        return IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(score, target)

    def _apply_one(self, model: object, score: np.ndarray) -> np.ndarray:
        return model.predict(score)  # type: ignore[attr-defined]


@CALIBRATORS.register("histogram")
class HistogramBinning(_OneVsRest):
    """Per-label equal-mass bins; each bin predicts its observed frequency (Zadrozny & Elkan, 2001).

    Bin frequencies are smoothed towards the label's base rate (one pseudo-observation),
    so an empty or tiny bin does not predict a hard 0 or 1.
    """

    def __init__(self, *, n_bins: int = 10) -> None:
        self.n_bins = n_bins

    def _fit_one(self, score: np.ndarray, target: np.ndarray) -> object:
        edges = np.unique(np.quantile(score, np.linspace(0, 1, self.n_bins + 1)[1:-1]))
        bins = np.searchsorted(edges, score, side="right")
        base = target.mean()
        freq = np.array(
            [(target[bins == b].sum() + base) / ((bins == b).sum() + 1.0) for b in range(len(edges) + 1)]
        )
        return edges, freq

    def _apply_one(self, model: object, score: np.ndarray) -> np.ndarray:
        edges, freq = cast("tuple[np.ndarray, np.ndarray]", model)  # what _fit_one returns
        return freq[np.searchsorted(edges, score, side="right")]


def contextual_correction(probs: np.ndarray, content_free: np.ndarray) -> np.ndarray:
    """Contextual calibration (Zhao et al., 2021): ``probs`` times ``diag(content_free)^-1``,
    each row renormalised.

    ``content_free`` is the distribution the same prompt gives to content-free inputs
    (``N/A``, an empty text, ``[MASK]``), averaged: the prompt's own lean towards some
    labels. Dividing it out makes the content-free input itself uniform and leaves a
    prompt without bias unchanged. It needs no gold label, so it can differ per prompt;
    a label the content-free inputs give (almost) no probability is floored at 1e-12.
    NaN rows (abstentions) stay NaN.

    Examples
    --------
    >>> import numpy as np
    >>> cf = np.array([0.8, 0.2])
    >>> contextual_correction(cf, cf).tolist()
    [0.5, 0.5]
    >>> contextual_correction(np.array([[0.8, 0.2], [0.5, 0.5]]), cf).round(2).tolist()
    [[0.5, 0.5], [0.2, 0.8]]
    """
    weights = 1.0 / np.clip(np.asarray(content_free, dtype=float), _EPS, None)
    scaled = np.asarray(probs, dtype=float) * weights
    return scaled / scaled.sum(axis=-1, keepdims=True)


def cross_validated(
    name: str, probs: np.ndarray, gold: np.ndarray, *, folds: int = 5, random_state: int = 0
) -> np.ndarray:
    """Out-of-fold calibrated probabilities: each golden item calibrated by a calibrator
    that never saw it, so metrics after calibration are not in-sample."""
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(gold, minlength=probs.shape[1])
    n_splits = int(min(folds, counts[counts > 0].min()))
    if n_splits < 2:
        return CALIBRATORS.get(name)().fit(probs, gold).transform(probs)
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    out = np.zeros_like(probs)
    for train, test in splitter.split(probs, gold):
        out[test] = CALIBRATORS.get(name)().fit(probs[train], gold[train]).transform(probs[test])
    return out


def select_calibrator(
    probs: np.ndarray,
    gold: np.ndarray,
    *,
    candidates: Sequence[str] = ("temperature", "vector", "isotonic", "histogram"),
    folds: int = 5,
) -> tuple[str, dict[str, float]]:
    """The calibrator with the lowest cross-validated log-loss (``calibration.method: auto``).

    Returns the chosen name and every candidate's out-of-fold NLL.
    """
    rows = np.arange(len(gold))
    scores = {
        name: float(
            -np.log(np.clip(cross_validated(name, probs, gold, folds=folds)[rows, gold], _EPS, 1.0)).mean()
        )
        for name in candidates
    }
    return min(scores, key=scores.__getitem__), scores


def expected_calibration_error(probs: np.ndarray, gold: np.ndarray, *, n_bins: int = 10) -> float:
    """ECE of the top-label confidence over equal-mass bins (``n_bins`` of them)."""
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == gold).astype(float)
    order = np.argsort(confidence, kind="stable")
    total = 0.0
    for chunk in np.array_split(order, min(n_bins, len(order))):
        if len(chunk):
            total += len(chunk) * abs(confidence[chunk].mean() - correct[chunk].mean())
    return total / max(len(order), 1)


def confidence_signals(row: np.ndarray) -> dict[str, float]:
    """One item's confidence signals (:func:`duolabel.core.probs.signals`), kept with its
    prediction as provenance; routing computes the same signals from the distribution."""
    return {name: float(values[0]) for name, values in signals(np.asarray(row)[None, :]).items()}


def error_detection_auroc(probs: np.ndarray, gold: np.ndarray) -> float:
    """AUROC of (1 - confidence) for telling the model's wrong labels from its right ones.

    0.5 is chance; NaN when the model is always right or always wrong.
    """
    from sklearn.metrics import roc_auc_score

    wrong = probs.argmax(axis=1) != gold
    if wrong.all() or not wrong.any():
        return float("nan")
    return float(roc_auc_score(wrong, -probs.max(axis=1)))


def reliability_diagram(probs: np.ndarray, gold: np.ndarray, *, n_bins: int = 10) -> list[dict[str, float]]:
    """Equal-mass bins of top-label confidence: mean confidence, accuracy and count of each."""
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == gold).astype(float)
    order = np.argsort(confidence, kind="stable")
    return [
        {"confidence": float(confidence[c].mean()), "accuracy": float(correct[c].mean()), "count": len(c)}
        for c in np.array_split(order, min(n_bins, len(order)))
        if len(c)
    ]


def calibration_metrics(probs: np.ndarray, gold: np.ndarray, *, n_bins: int = 10) -> dict[str, float]:
    """Accuracy, ECE (equal-mass bins), Brier score, NLL and error-detection AUROC."""
    rows = np.arange(len(gold))
    onehot = np.zeros_like(probs)
    onehot[rows, gold] = 1.0
    return {
        "accuracy": float((probs.argmax(axis=1) == gold).mean()),
        "ece": float(expected_calibration_error(probs, gold, n_bins=n_bins)),
        "ece_bins": float(min(n_bins, len(gold))),
        "brier": float(((probs - onehot) ** 2).sum(axis=1).mean()),
        "nll": float(-np.log(np.clip(probs[rows, gold], _EPS, 1.0)).mean()),
        "auroc": error_detection_auroc(probs, gold),
    }


def calibrator_params(calibrator: object) -> dict[str, float]:
    """A fitted calibrator's learned parameters as flat numbers, for the runs ledger
    (empty for the non-parametric ones)."""
    if isinstance(calibrator, TemperatureScaling):
        return {"temperature": calibrator.temperature_}
    if isinstance(calibrator, VectorScaling):
        return {
            **{f"scale_{i}": float(v) for i, v in enumerate(calibrator.scale_)},
            **{f"bias_{i}": float(v) for i, v in enumerate(calibrator.bias_)},
        }
    return {}


def ensemble_average(dists: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The weighted average of the members' distributions (one member per row of ``dists``).

    Examples
    --------
    >>> ensemble_average(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([3.0, 1.0])).tolist()
    [0.75, 0.25]
    """
    return (weights[:, None] * dists).sum(axis=0) / weights.sum()


def ensemble_disagreement(dists: np.ndarray, weights: np.ndarray, average: np.ndarray) -> float:
    """How much the members disagree: their weighted mean total-variation distance from
    ``average`` (0 when all agree, at most 1); the router keeps it as a feature.

    Examples
    --------
    >>> dists, weights = np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([1.0, 1.0])
    >>> ensemble_disagreement(dists, weights, ensemble_average(dists, weights))
    0.5
    """
    return float((weights * 0.5 * np.abs(dists - average).sum(axis=1)).sum() / weights.sum())
