"""Calibrators (estimators over probability matrices) and calibration metrics.

A calibrator is fitted on out-of-fold probabilities of golden items and their gold
labels, then transforms every prediction of the same model version.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.optimize import minimize_scalar
from sqlalchemy import select

from duolabel.costs import ledger_run
from duolabel.errors import ProjectError
from duolabel.store import Item, Prediction

if TYPE_CHECKING:
    from duolabel.project import Project

__all__ = [
    "CALIBRATORS",
    "CalibrationResult",
    "HistogramBinning",
    "Identity",
    "IsotonicCalibration",
    "TemperatureScaling",
    "VectorScaling",
    "calibrate_project",
    "calibration_metrics",
    "error_detection_auroc",
    "expected_calibration_error",
    "reliability_diagram",
    "select_calibrator",
]

_EPS = 1e-12


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


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


class Identity:
    """No calibration (``calibration.method: none``)."""

    def fit(self, probs: np.ndarray, gold: np.ndarray) -> Identity:
        return self

    def transform(self, probs: np.ndarray) -> np.ndarray:
        return probs


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


class IsotonicCalibration(_OneVsRest):
    """Monotone, non-parametric per-label calibration (isotonic regression)."""

    def _fit_one(self, score: np.ndarray, target: np.ndarray) -> object:
        from sklearn.isotonic import IsotonicRegression

        return IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(score, target)

    def _apply_one(self, model: object, score: np.ndarray) -> np.ndarray:
        return model.predict(score)  # type: ignore[attr-defined]


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
        edges, freq = model  # type: ignore[misc]
        return freq[np.searchsorted(edges, score, side="right")]


CALIBRATORS: dict[str, type] = {
    "none": Identity,
    "temperature": TemperatureScaling,
    "vector": VectorScaling,
    "isotonic": IsotonicCalibration,
    "histogram": HistogramBinning,
}


def cross_validated(
    name: str, probs: np.ndarray, gold: np.ndarray, *, folds: int = 5, random_state: int = 0
) -> np.ndarray:
    """Out-of-fold calibrated probabilities: each golden item calibrated by a calibrator
    that never saw it, so metrics after calibration are not in-sample."""
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(gold, minlength=probs.shape[1])
    n_splits = int(min(folds, counts[counts > 0].min()))
    if n_splits < 2:
        return CALIBRATORS[name]().fit(probs, gold).transform(probs)
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    out = np.zeros_like(probs)
    for train, test in splitter.split(probs, gold):
        out[test] = CALIBRATORS[name]().fit(probs[train], gold[train]).transform(probs[test])
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


# ---------------------------------------------------------------------------
# The calibration stage


@dataclass
class CalibrationResult:
    """What the calibration stage did; ``after`` is cross-validated on the golden items."""

    model_version: str
    method: str
    params: dict[str, float]
    before: dict[str, float]
    after: dict[str, float]
    updated: int


def _params(calibrator: object) -> dict[str, float]:
    if isinstance(calibrator, TemperatureScaling):
        return {"temperature": calibrator.temperature_}
    if isinstance(calibrator, VectorScaling):
        return {
            **{f"scale_{i}": float(v) for i, v in enumerate(calibrator.scale_)},
            **{f"bias_{i}": float(v) for i, v in enumerate(calibrator.bias_)},
        }
    return {}


def _finite(metrics: dict[str, float]) -> dict[str, float | None]:
    """JSON has no NaN: an undefined metric is stored as null."""
    return {k: (None if v != v else v) for k, v in metrics.items()}


def calibrate_project(project: Project) -> CalibrationResult:
    """Fit the calibrator on the golden items' out-of-fold probabilities and apply it to
    every prediction of the current model version."""
    from duolabel.labelers import current_model_version, golden_items

    version = current_model_version(project)
    if version is None:
        raise ProjectError("nothing to calibrate yet: run 'duolabel label' first")
    golden_items(project)  # refuses when a label has too few golden items
    labels = project.config.task.label_names
    method = project.config.calibration.method
    store = project.store
    with store.read() as session:
        rows = session.execute(
            select(Prediction.probs, Item.gold_label)
            .join(Item, Item.id == Prediction.item_id)
            .where(
                Prediction.model_version == version,
                Prediction.out_of_fold.is_(True),
                Item.gold_label.is_not(None),
            )
        ).all()
    probs = np.array([[r.probs[label] for label in labels] for r in rows])
    gold = np.array([labels.index(r.gold_label) for r in rows])
    scores: dict[str, float] = {}
    if method == "auto":
        method, scores = select_calibrator(probs, gold)
    calibrator = CALIBRATORS[method]().fit(probs, gold)
    params = _params(calibrator)
    before = calibration_metrics(probs, gold)
    after = calibration_metrics(cross_validated(method, probs, gold), gold)
    updated = 0
    run_config = {"model_version": version, "method": method, "params": params, "cv_nll": scores}
    with ledger_run(store, "calibrate", run_config) as run:
        with store.read() as session:
            ids = list(session.scalars(select(Prediction.id).where(Prediction.model_version == version)))
        for start in range(0, len(ids), 2000):
            with store.write() as session:
                preds = session.scalars(
                    select(Prediction).where(Prediction.id.in_(ids[start : start + 2000]))
                )
                batch = list(preds)
                raw = np.array([[p.probs[label] for label in labels] for p in batch])
                cal = calibrator.transform(raw)
                for pred, row in zip(batch, cal, strict=True):
                    pred.calibrated = {label: float(v) for label, v in zip(labels, row, strict=True)}
                    pred.confidence = float(row.max())
                updated += len(batch)
        with store.write() as session:
            usage = {
                "items": updated,
                "golden": len(gold),
                "before": _finite(before),
                "after": _finite(after),
            }
            run.record(session, usage, 0.0)
    return CalibrationResult(version, method, params, before, after, updated)
