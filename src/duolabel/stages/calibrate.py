"""The calibration stage: calibrate each labeler on its golden out-of-fold probabilities,
apply the calibrator to all its predictions, and with several labelers write their weighted
ensemble as predictions of its own (labeler ``ensemble``).

A prediction's ``label`` is rewritten to the task type's pick from its calibrated
distribution: a calibrator may move the top label (vector scaling can), and the label that
ships must be the one whose confidence routing and the target certificate judged.

In a spans project the model's answer is a span list and its score (every label column of
its probabilities, :mod:`duolabel.labelers.span_labeler`) is calibrated as one binary
prediction per golden item, right when the whole list equals gold, with the project's
``calibration.method`` and cross-fitted as the top probability is; the calibrated score goes
into every column of ``calibrated`` and is the confidence, the span list is unchanged.

The estimators and metrics are :mod:`duolabel.core.calibration`; this module reads the
predictions from the store and writes the calibrated ones back.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import delete, or_, select, update

from duolabel.context import Context
from duolabel.core.calibration import (
    CALIBRATORS,
    calibration_metrics,
    calibrator_params,
    confidence_signals,
    cross_validated,
    ensemble_average,
    ensemble_disagreement,
    select_calibrator,
)
from duolabel.core.multilabel import LabelThresholds, PerLabelCalibrator, answer_sets, flat_binary
from duolabel.core.probs import as_dict, as_matrix
from duolabel.core.prompt_variants import PROMPT_DISAGREEMENT
from duolabel.core.spans import parse_spans
from duolabel.core.tasks import MultiLabel, task_type
from duolabel.core.wholelist import LIST_CHANCE, WholeListCalibrator, chance_calibration_error
from duolabel.errors import ProjectError
from duolabel.labelers import ENSEMBLE
from duolabel.ledger import labeler_versions, ledger_run
from duolabel.store import Item, Prediction, Run
from duolabel.training_data import golden_items

__all__ = ["CalibrationResult", "calibrate_project", "ensemble_version"]

#: Predictions rewritten per write transaction (short transactions keep the store shared).
_WRITE_BATCH = 2000


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


def _finite(metrics: dict[str, float]) -> dict[str, float | None]:
    """JSON has no NaN: an undefined metric is stored as null."""
    return {k: (None if v != v else v) for k, v in metrics.items()}


def _golden_rows(ctx: Context, name: str, version: str) -> tuple[list[Any], list[int]]:
    """A labeler version's out-of-fold predictions on golden items (item, probs, label, gold) and the
    ids of all its usable predictions."""
    mine = (Prediction.model_version == version) & (Prediction.labeler == name)
    with ctx.store.read() as session:
        rows = session.execute(
            select(Prediction.item_id, Prediction.probs, Prediction.label, Item.gold_label)
            .join(Item, Item.id == Prediction.item_id)
            .where(mine, Prediction.out_of_fold.is_(True), Prediction.abstained.is_(False))
            .where(Item.gold_label.is_not(None))
            .order_by(Item.seq)
        ).all()
        ids = list(session.scalars(select(Prediction.id).where(mine, Prediction.abstained.is_(False))))
    if not rows:
        raise ProjectError(f"labeler {name!r} has no usable predictions on golden items to calibrate on")
    return list(rows), ids


def _calibrated_batches(
    ctx: Context, ids: list[int], scored: dict[str, np.ndarray], transform: Callable[[np.ndarray], np.ndarray]
) -> Iterator[tuple[list[Prediction], np.ndarray]]:
    """The predictions ``ids`` in write batches, each with its calibrated rows, inside the
    batch's write transaction (what the caller sets on them is written when it asks for the
    next batch)."""
    labels = ctx.config.task.label_names
    for start in range(0, len(ids), _WRITE_BATCH):
        with ctx.store.write() as session:
            chunk = ids[start : start + _WRITE_BATCH]
            batch = list(session.scalars(select(Prediction).where(Prediction.id.in_(chunk))))
            calibrated = transform(as_matrix([p.probs for p in batch], labels))
            for i, pred in enumerate(batch):
                if pred.out_of_fold and pred.item_id in scored:
                    # Golden items keep the calibration of a calibrator that never saw
                    # them, so routing chooses its threshold on honest confidences.
                    calibrated[i] = scored[pred.item_id]
            yield batch, calibrated


def _calibrate_one(ctx: Context, name: str, version: str, scored: dict[str, np.ndarray]) -> CalibrationResult:
    labels = ctx.config.task.label_names
    task = task_type(ctx.config.task.type)
    if ctx.config.task.type == "spans":  # the item score against the whole list (calibrate_spans)
        return CalibrationResult(name, version, *_calibrate_spans(ctx, name, version, scored))
    if task.list_valued:
        return _calibrate_lists(ctx, name, version, scored)
    method: str = ctx.config.calibration.method  # "auto" is replaced by the method it selects
    rows, ids = _golden_rows(ctx, name, version)
    probs = as_matrix([r.probs for r in rows], labels)
    gold = np.array([labels.index(r.gold_label) for r in rows])
    scores: dict[str, float] = {}
    if method == "auto":
        method, scores = select_calibrator(probs, gold)
    calibrator = CALIBRATORS.get(method)().fit(probs, gold)
    honest = cross_validated(method, probs, gold)
    scored.update({r.item_id: p for r, p in zip(rows, honest, strict=True)})
    for batch, calibrated in _calibrated_batches(ctx, ids, scored, calibrator.transform):
        # A calibrator may move the top label (vector scaling does): the label shipped is
        # always the one of the distribution that routing and the certificate use.
        picks = task.predicted(calibrated)
        for pred, row, pick in zip(batch, calibrated, picks, strict=True):
            pred.label = labels[int(pick)]
            pred.calibrated = as_dict(row, labels)
            pred.confidence = float(row.max())
            pred.features = {**(pred.features or {}), **confidence_signals(row)}
    params = {**calibrator_params(calibrator), **{f"cv_nll_{k}": v for k, v in scores.items()}}
    return CalibrationResult(
        name,
        version,
        method,
        params,
        calibration_metrics(probs, gold),
        calibration_metrics(honest, gold),
        len(ids),
    )


def _calibrate_lists(
    ctx: Context, name: str, version: str, scored: dict[str, np.ndarray]
) -> CalibrationResult:
    """:func:`_calibrate_one` for list answers (multi_label): each label's probability is
    calibrated on its own (``PerLabelCalibrator``), the stored label is the task type's list
    from the calibrated probabilities (at each label's threshold: 0.5, or tuned on the golden
    items, ``calibration.label_thresholds``) and the confidence the whole list's chance of being
    right. The metrics are over every (item, label) pair as one binary prediction."""
    labels = ctx.config.task.label_names
    rows, ids = _golden_rows(ctx, name, version)
    probs = as_matrix([r.probs for r in rows], labels)
    sets = [set(s) for s in answer_sets([r.gold_label for r in rows])]
    Y = np.array([[int(label in s) for label in labels] for s in sets])
    calibrator = PerLabelCalibrator(ctx.config.calibration.method).fit(probs, Y)
    honest = calibrator.cross_validated(probs, Y)
    scored.update({r.item_id: p for r, p in zip(rows, honest, strict=True)})
    # Tuned on the golden items' honest (cross-fitted) calibrated probabilities, never on others.
    tuned = ctx.config.calibration.label_thresholds == "tuned"
    limits = LabelThresholds().fit(honest, Y).thresholds_.tolist() if tuned else None
    task = MultiLabel(thresholds=limits)
    whole, honest_whole, list_params = _whole_list(task, honest, [r.gold_label for r in rows], labels)
    honest_chance = {r.item_id: c for r, c in zip(rows, honest_whole, strict=True)}
    for batch, calibrated in _calibrated_batches(ctx, ids, scored, calibrator.transform):
        answers = [task.model_answer(row, labels) for row in calibrated]
        chances = whole.transform(*_list_chances(task, calibrated, answers, labels))
        for pred, row, answer, chance in zip(batch, calibrated, answers, chances, strict=True):
            if pred.out_of_fold and pred.item_id in honest_chance:
                chance = honest_chance[pred.item_id]  # cross-fitted, as the per-label rows are
            pred.label = answer
            pred.calibrated = as_dict(row, labels)
            # The whole list's chance of being right, calibrated on the golden items (routing
            # reads it from the features, core.wholelist).
            pred.confidence = float(chance)
            pred.features = {**(pred.features or {}), LIST_CHANCE: float(chance)}
    chosen = zip(labels, calibrator.methods_, strict=True)
    method = (
        ", ".join(f"{label}: {m}" for label, m in chosen)
        if calibrator.method == "auto"
        else calibrator.method
    )
    if limits is not None:
        method += "; thresholds " + ", ".join(
            f"{label}: {t:g}" for label, t in zip(labels, limits, strict=True)
        )
    return CalibrationResult(
        name,
        version,
        f"per label ({method})",
        list_params,
        calibration_metrics(*flat_binary(probs, Y)),
        calibration_metrics(*flat_binary(honest, Y)),
        len(ids),
    )


def _list_chances(
    task: MultiLabel, probs: np.ndarray, answers: list[str], labels: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """The per-label product chance of each stored list and whether the list is empty."""
    return task.routing_probs(probs, answers, labels)[:, 0], np.array([a == "[]" for a in answers])


def _whole_list(
    task: MultiLabel, honest: np.ndarray, gold: list[str], labels: list[str]
) -> tuple[WholeListCalibrator, np.ndarray, dict[str, float]]:
    """The whole-list calibrator fitted on the golden items (their lists chosen from honest
    per-label rows), each golden item's cross-fitted whole-list chance, and the whole-list
    chance's calibration error before (the per-label product) and after."""
    answers = [task.model_answer(row, labels) for row in honest]
    chances, empty = _list_chances(task, honest, answers, labels)
    right = np.array([a == g for a, g in zip(answers, gold, strict=True)], dtype=int)
    whole = WholeListCalibrator().fit(chances, right, empty)
    honest_whole = whole.cross_validated(chances, right, empty)
    ece = {
        f"list_ece_{when}": chance_calibration_error(c, right)
        for when, c in (("before", chances), ("after", honest_whole))
    }
    return whole, honest_whole, {**ece, "list_right": float(right.mean())}


def _calibrate_spans(
    ctx: Context, name: str, version: str, scored: dict[str, np.ndarray]
) -> tuple[str, dict[str, float], dict[str, float], dict[str, float], int]:
    """Calibrate labeler ``name``'s ``version`` in a spans project (its item score against "the
    whole span list equals gold", see the module docstring); ``scored`` gets the golden
    items' cross-fitted calibrated rows. Returns the method, its parameters, the metrics
    before and after (cross-fitted) on the golden items, and how many predictions were
    rewritten."""
    labels = ctx.config.task.label_names
    rows, ids = _golden_rows(ctx, name, version)
    score = as_matrix([r.probs for r in rows], labels)[:, :1]
    right = np.array([[int(set(parse_spans(r.label)) == set(parse_spans(r.gold_label)))] for r in rows])
    if right.min() == right.max():
        raise ProjectError(
            f"labeler {name!r}: its span lists on the golden items are all "
            f"{'right' if right[0, 0] else 'wrong'}; calibration needs both (add golden items)"
        )
    calibrator = PerLabelCalibrator(ctx.config.calibration.method).fit(score, right)
    honest = calibrator.cross_validated(score, right)
    width = len(labels)  # every column holds the score
    scored.update({r.item_id: np.repeat(h, width) for r, h in zip(rows, honest, strict=True)})

    def transform(probs: np.ndarray) -> np.ndarray:
        return np.repeat(calibrator.transform(probs[:, :1]), width, axis=1)

    for batch, calibrated in _calibrated_batches(ctx, ids, scored, transform):
        for pred, row in zip(batch, calibrated, strict=True):
            pred.calibrated = as_dict(row, labels)
            pred.confidence = float(row[0])
    return (
        f"whole span list ({calibrator.methods_[0]})",
        {},
        calibration_metrics(*flat_binary(score, right)),
        calibration_metrics(*flat_binary(honest, right)),
        len(ids),
    )


def ensemble_version(members: dict[str, str], weights: dict[str, float], method: str) -> str:
    """The ensemble's model version: a hash of its members' versions, weights and method."""
    key = json.dumps({"members": members, "weights": weights, "method": method}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _prompt_disagreement(measured: dict[str, float] | None, weights: dict[str, float]) -> dict[str, float]:
    """The ensemble's prompt disagreement (a routing feature): the weighted mean over the
    members that measured it (LLM labelers with ``prompt_variants``); none when none did."""
    if not measured:
        return {}
    w = np.array([weights[name] for name in measured])
    return {PROMPT_DISAGREEMENT: float(np.dot(w, list(measured.values())) / w.sum())}


def _ensemble(
    ctx: Context, versions: dict[str, str], honest: dict[str, dict[str, np.ndarray]]
) -> tuple[str, list[dict[str, object]], list[tuple[np.ndarray, int]]]:
    """Weighted average of the members' calibrated distributions, with their disagreement
    kept as a routing feature."""
    labels = ctx.config.task.label_names
    task = task_type(ctx.config.task.type)
    weights = {c.label_name: c.weight for c in ctx.config.labeler}
    version = ensemble_version(versions, weights, ctx.config.calibration.method)
    with ctx.store.read() as session:
        members: dict[str, list[tuple[str, dict[str, float], bool]]] = {}
        measured: dict[str, dict[str, float]] = {}  # item -> member -> its prompt disagreement
        for item_id, name, calibrated, oof, features in session.execute(
            select(
                Prediction.item_id,
                Prediction.labeler,
                Prediction.calibrated,
                Prediction.out_of_fold,
                Prediction.features,
            )
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
            if features and PROMPT_DISAGREEMENT in features:
                measured.setdefault(item_id, {})[name] = float(features[PROMPT_DISAGREEMENT])
        # Synthetic items (training data only) get no ensemble row, not even an abstention.
        all_items = list(session.scalars(select(Item.id).where(Item.role != "synthetic").order_by(Item.seq)))
        gold = dict(session.execute(select(Item.id, Item.gold_label).where(Item.role == "golden")).all())
    rows: list[dict[str, object]] = []
    golden_avg: list[tuple[np.ndarray, int]] = []
    for item_id in all_items:
        votes = members.get(item_id, [])
        base = dict(item_id=item_id, labeler=ENSEMBLE, model_version=version, run_id=None)
        if not votes:
            rows.append(dict(base, probs={}, label="", raw_confidence=0.0, abstained=True, out_of_fold=False))
            continue
        w = np.array([weights[name] for name, _, _ in votes])
        dists = as_matrix([d for _, d, _ in votes], labels)
        avg = ensemble_average(dists, w)
        avg_dict = as_dict(avg, labels)
        oof = all(flag for _, _, flag in votes)
        rows.append(
            dict(
                base,
                probs=avg_dict,
                calibrated=avg_dict,
                label=labels[int(task.predicted(avg[None, :])[0])],
                raw_confidence=float(avg.max()),
                confidence=float(avg.max()),
                abstained=False,
                out_of_fold=oof,
                features={
                    "disagreement": ensemble_disagreement(dists, w, avg),
                    "members": len(votes),
                    **confidence_signals(avg),
                    **_prompt_disagreement(measured.get(item_id), weights),
                },
            )
        )
        if oof and (gold_label := gold.get(item_id)) is not None:
            cv = [honest[name].get(item_id) for name, _, _ in votes]
            if all(c is not None for c in cv):
                honest_avg = ensemble_average(np.array(cv), w)
                golden_avg.append((honest_avg, labels.index(gold_label)))
                # As for single labelers, golden items keep their cross-fitted distribution.
                rows[-1].update(
                    calibrated=as_dict(honest_avg, labels),
                    label=labels[int(task.predicted(honest_avg[None, :])[0])],
                    confidence=float(honest_avg.max()),
                )
    return version, rows, golden_avg


def calibrate_project(ctx: Context) -> list[CalibrationResult]:
    """Calibrate each labeler on the golden items' out-of-fold probabilities and apply it to
    all its predictions; with several labelers, also build their weighted ensemble."""
    versions = labeler_versions(ctx)
    missing = [c.label_name for c in ctx.config.labeler if c.label_name not in versions]
    if missing:
        raise ProjectError(f"nothing to calibrate yet for {', '.join(missing)}: run 'duolabel label' first")
    golden_items(ctx)  # refuses when a label has too few golden items
    store = ctx.store
    honest: dict[str, dict[str, np.ndarray]] = {}
    config: dict[str, object] = {"members": versions, "method": ctx.config.calibration.method}
    with ledger_run(store, "calibrate", config) as run:
        results = []
        for name, version in versions.items():
            honest[name] = {}
            results.append(_calibrate_one(ctx, name, version, honest[name]))
        if len(versions) > 1:
            if task_type(ctx.config.task.type).list_valued:
                raise ProjectError("an ensemble of several labelers is not supported for list answers yet")
            version, rows, golden_avg = _ensemble(ctx, versions, honest)
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
