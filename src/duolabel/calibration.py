"""Calibrators (estimators over probability matrices) and calibration metrics.

A calibrator is fitted on out-of-fold probabilities of golden items and their gold
labels, then transforms every prediction of the same model version.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.optimize import minimize_scalar
from sqlalchemy import delete, or_, select, update

from duolabel.costs import ledger_run
from duolabel.errors import ProjectError
from duolabel.store import Item, Prediction, Run

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
    "confidence_signals",
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


def confidence_signals(row: np.ndarray) -> dict[str, float]:
    """Per-item confidence signals kept for routing: top probability, margin, entropy."""
    top2 = np.sort(row)[-2:]
    entropy = float(-(row * np.log(np.clip(row, _EPS, 1.0))).sum())
    return {"max_prob": float(top2[-1]), "margin": float(top2[-1] - top2[0]), "entropy": entropy}


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
    """What calibration did for one labeler (or the ensemble); ``after`` is cross-validated
    on the golden items (for the ensemble: its members' cross-validated outputs)."""

    labeler: str
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


def _matrix(dists: Sequence[dict[str, float]], labels: Sequence[str]) -> np.ndarray:
    return np.array([[d[label] for label in labels] for d in dists]).reshape(len(dists), len(labels))


def _calibrate_one(
    project: Project, name: str, version: str, scored: dict[str, np.ndarray]
) -> CalibrationResult:
    labels = project.config.task.label_names
    method = project.config.calibration.method
    store = project.store
    mine = (Prediction.model_version == version) & (Prediction.labeler == name)
    with store.read() as session:
        rows = session.execute(
            select(Prediction.item_id, Prediction.probs, Item.gold_label)
            .join(Item, Item.id == Prediction.item_id)
            .where(mine, Prediction.out_of_fold.is_(True), Prediction.abstained.is_(False))
            .where(Item.gold_label.is_not(None))
            .order_by(Item.seq)
        ).all()
        ids = list(session.scalars(select(Prediction.id).where(mine, Prediction.abstained.is_(False))))
    if not rows:
        raise ProjectError(f"labeler {name!r} has no usable predictions on golden items to calibrate on")
    probs = _matrix([r.probs for r in rows], labels)
    gold = np.array([labels.index(r.gold_label) for r in rows])
    scores: dict[str, float] = {}
    if method == "auto":
        method, scores = select_calibrator(probs, gold)
    calibrator = CALIBRATORS[method]().fit(probs, gold)
    honest = cross_validated(method, probs, gold)
    scored.update({r.item_id: p for r, p in zip(rows, honest, strict=True)})
    for start in range(0, len(ids), 2000):
        with store.write() as session:
            batch = list(
                session.scalars(select(Prediction).where(Prediction.id.in_(ids[start : start + 2000])))
            )
            calibrated = calibrator.transform(_matrix([p.probs for p in batch], labels))
            for pred, row in zip(batch, calibrated, strict=True):
                if pred.out_of_fold and pred.item_id in scored:
                    # Golden items keep the calibration of a calibrator that never saw
                    # them, so routing chooses its threshold on honest confidences.
                    row = scored[pred.item_id]
                pred.calibrated = {label: float(v) for label, v in zip(labels, row, strict=True)}
                pred.confidence = float(row.max())
                pred.features = {**(pred.features or {}), **confidence_signals(row)}
    params = {**_params(calibrator), **{f"cv_nll_{k}": v for k, v in scores.items()}}
    return CalibrationResult(
        name,
        version,
        method,
        params,
        calibration_metrics(probs, gold),
        calibration_metrics(honest, gold),
        len(ids),
    )


def ensemble_version(members: dict[str, str], weights: dict[str, float], method: str) -> str:
    key = json.dumps({"members": members, "weights": weights, "method": method}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _ensemble(
    project: Project, versions: dict[str, str], honest: dict[str, dict[str, np.ndarray]]
) -> tuple[str, list[dict[str, object]], list[tuple[np.ndarray, int]]]:
    """Weighted average of the members' calibrated distributions, with their disagreement
    (mean total-variation distance from the average) kept as a routing feature."""
    from duolabel.labelers import ENSEMBLE

    labels = project.config.task.label_names
    weights = {c.label_name: c.weight for c in project.config.labeler}
    version = ensemble_version(versions, weights, project.config.calibration.method)
    store = project.store
    with store.read() as session:
        members: dict[str, list[tuple[str, dict[str, float], bool]]] = {}
        for item_id, name, calibrated, oof in session.execute(
            select(Prediction.item_id, Prediction.labeler, Prediction.calibrated, Prediction.out_of_fold)
            .where(Prediction.abstained.is_(False), Prediction.calibrated.is_not(None))
            .where(
                or_(
                    *[
                        (Prediction.labeler == n) & (Prediction.model_version == v)
                        for n, v in versions.items()
                    ]
                )
            )
        ):
            members.setdefault(item_id, []).append((name, calibrated, oof))
        all_items = list(session.scalars(select(Item.id).order_by(Item.seq)))
        gold = dict(session.execute(select(Item.id, Item.gold_label).where(Item.role == "golden")).all())
    rows = []
    golden_avg: list[tuple[np.ndarray, int]] = []
    for item_id in all_items:
        votes = members.get(item_id, [])
        base = dict(item_id=item_id, labeler=ENSEMBLE, model_version=version, run_id=None)
        if not votes:
            rows.append(dict(base, probs={}, label="", raw_confidence=0.0, abstained=True, out_of_fold=False))
            continue
        w = np.array([weights[name] for name, _, _ in votes])
        dists = _matrix([d for _, d, _ in votes], labels)
        avg = (w[:, None] * dists).sum(axis=0) / w.sum()
        disagreement = float((w * 0.5 * np.abs(dists - avg).sum(axis=1)).sum() / w.sum())
        as_dict = {label: float(v) for label, v in zip(labels, avg, strict=True)}
        oof = all(flag for _, _, flag in votes)
        rows.append(
            dict(
                base,
                probs=as_dict,
                calibrated=as_dict,
                label=labels[int(avg.argmax())],
                raw_confidence=float(avg.max()),
                confidence=float(avg.max()),
                abstained=False,
                out_of_fold=oof,
                features={"disagreement": disagreement, "members": len(votes), **confidence_signals(avg)},
            )
        )
        if oof and gold.get(item_id) is not None:
            cv = [honest[name].get(item_id) for name, _, _ in votes]
            if all(c is not None for c in cv):
                honest_avg = (w[:, None] * np.array(cv)).sum(axis=0) / w.sum()
                golden_avg.append((honest_avg, labels.index(gold[item_id])))
                # As for single labelers, golden items keep their cross-fitted distribution.
                as_dict = {label: float(v) for label, v in zip(labels, honest_avg, strict=True)}
                rows[-1].update(calibrated=as_dict, confidence=float(honest_avg.max()))
    return version, rows, golden_avg


def calibrate_project(project: Project) -> list[CalibrationResult]:
    """Calibrate each labeler on the golden items' out-of-fold probabilities and apply it to
    all its predictions; with several labelers, also build their weighted ensemble."""
    from duolabel.labelers import ENSEMBLE, golden_items, labeler_versions

    versions = labeler_versions(project)
    missing = [c.label_name for c in project.config.labeler if c.label_name not in versions]
    if missing:
        raise ProjectError(f"nothing to calibrate yet for {', '.join(missing)}: run 'duolabel label' first")
    golden_items(project)  # refuses when a label has too few golden items
    store = project.store
    honest: dict[str, dict[str, np.ndarray]] = {}
    config: dict[str, object] = {"members": versions, "method": project.config.calibration.method}
    with ledger_run(store, "calibrate", config) as run:
        results = []
        for name, version in versions.items():
            honest[name] = {}
            results.append(_calibrate_one(project, name, version, honest[name]))
        if len(versions) > 1:
            version, rows, golden_avg = _ensemble(project, versions, honest)
            with store.write() as session:
                session.execute(
                    delete(Prediction).where(
                        Prediction.labeler == ENSEMBLE, Prediction.model_version == version
                    )
                )
                session.add_all(Prediction(**{**r, "run_id": run.id}) for r in rows)
            if not golden_avg:
                raise ProjectError(
                    "no golden item has a prediction from every labeler; cannot check the ensemble"
                )
            after = calibration_metrics(
                np.array([p for p, _ in golden_avg]), np.array([g for _, g in golden_avg])
            )
            results.append(
                CalibrationResult(ENSEMBLE, version, "weighted average", {}, after, after, len(rows))
            )
            config["ensemble_version"] = version
        usage = {
            r.labeler: {"before": _finite(r.before), "after": _finite(r.after), "items": r.updated}
            for r in results
        }
        with store.write() as session:
            session.execute(update(Run).where(Run.id == run.id).values(config=config))
            run.record(session, usage, 0.0)
    return results
