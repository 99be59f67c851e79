"""Calibrators (estimators over probability matrices) and calibration metrics.

A calibrator is fitted on out-of-fold probabilities of golden items and their gold
labels, then transforms every prediction of the same model version.
"""

from __future__ import annotations

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
    "CalibrationResult",
    "Identity",
    "TemperatureScaling",
    "calibrate_project",
    "calibration_metrics",
    "expected_calibration_error",
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


def calibration_metrics(probs: np.ndarray, gold: np.ndarray, *, n_bins: int = 10) -> dict[str, float]:
    """Accuracy, ECE (equal-mass bins), Brier score and NLL of ``probs`` against ``gold``."""
    rows = np.arange(len(gold))
    onehot = np.zeros_like(probs)
    onehot[rows, gold] = 1.0
    return {
        "accuracy": float((probs.argmax(axis=1) == gold).mean()),
        "ece": float(expected_calibration_error(probs, gold, n_bins=n_bins)),
        "ece_bins": float(min(n_bins, len(gold))),
        "brier": float(((probs - onehot) ** 2).sum(axis=1).mean()),
        "nll": float(-np.log(np.clip(probs[rows, gold], _EPS, 1.0)).mean()),
    }


# ---------------------------------------------------------------------------
# The calibration stage


@dataclass
class CalibrationResult:
    model_version: str
    method: str
    params: dict[str, float]
    before: dict[str, float]
    after: dict[str, float]
    updated: int


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
    calibrator: TemperatureScaling | Identity = (
        TemperatureScaling() if method == "temperature" else Identity()
    ).fit(probs, gold)
    params = {"temperature": calibrator.temperature_} if method == "temperature" else {}
    before = calibration_metrics(probs, gold)
    after = calibration_metrics(calibrator.transform(probs), gold)
    updated = 0
    with ledger_run(store, "calibrate", {"model_version": version, "method": method, **params}) as run:
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
            run.record(
                session, {"items": updated, "golden": len(gold), "before": before, "after": after}, 0.0
            )
    return CalibrationResult(version, method, params, before, after, updated)
