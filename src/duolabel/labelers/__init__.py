"""Labelers: models that give a probability for every label of the project.

``label_project`` is the labeling stage: train the configured labeler on the golden
items, then predict every item that has no prediction from this model version yet, one
committed chunk at a time, so a killed run resumes where it stopped.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import select

from duolabel.costs import ledger_run, model_cost
from duolabel.errors import LabelerError
from duolabel.labelers.base import Labeler, TextItem, TrainableLabeler, Usage
from duolabel.labelers.embedding import EmbeddingLabeler, StoreEmbeddingCache
from duolabel.progress import Reporter, quiet
from duolabel.store import Item, Prediction, Run

if TYPE_CHECKING:
    from duolabel.project import Project

__all__ = [
    "EmbeddingLabeler",
    "LabelResult",
    "Labeler",
    "TextItem",
    "TrainableLabeler",
    "Usage",
    "build_labeler",
    "current_model_version",
    "golden_items",
    "label_project",
]

CHUNK = 256


@dataclass
class LabelResult:
    model_version: str
    predicted: int
    already_done: int
    usage: dict[str, float]


def build_labeler(project: Project) -> EmbeddingLabeler:
    cfg = project.config.labeler
    labeler = EmbeddingLabeler(
        labels=project.config.task.label_names,
        model_path=project.resolve(cfg.model) if cfg.model else None,
        regularization=cfg.regularization,
        batch_size=cfg.batch_size,
        cv_folds=cfg.cv_folds,
    )
    labeler.cache = StoreEmbeddingCache(project.store, labeler.model_name)
    return labeler


def golden_items(project: Project) -> tuple[list[TextItem], list[str]]:
    """The golden items and their gold labels, checked against the minimum per label."""
    with project.store.read() as session:
        rows = session.execute(
            select(Item.id, Item.text, Item.content_hash, Item.gold_label)
            .where(Item.role == "golden", Item.gold_label.is_not(None))
            .order_by(Item.seq)
        ).all()
    items = [TextItem(r.id, r.text, r.content_hash) for r in rows]
    gold = [r.gold_label for r in rows]
    need = project.config.calibration.min_golden_per_label
    counts = Counter(gold)
    short = [
        f"'{label}' has {counts.get(label, 0)}"
        for label in project.config.task.label_names
        if counts.get(label, 0) < need
    ]
    if short:
        raise LabelerError(
            f"too few golden items to train and calibrate ({'; '.join(short)}; need at least {need} "
            "per label): add some with 'duolabel import FILE --role golden --gold COLUMN'"
        )
    return items, gold


def current_model_version(project: Project) -> str | None:
    """The model version of the latest finished labeling run."""
    with project.store.read() as session:
        run = session.scalars(
            select(Run).where(Run.kind == "label", Run.status == "done").order_by(Run.id.desc()).limit(1)
        ).first()
    return run.config.get("model_version") if run else None


def _prediction_rows(
    items: list[TextItem],
    probs: np.ndarray,
    labels: list[str],
    *,
    version: str,
    run_id: int,
    out_of_fold: bool,
    seconds_per_item: float,
) -> list[Prediction]:
    return [
        Prediction(
            item_id=item.id,
            labeler="embedding",
            model_version=version,
            run_id=run_id,
            probs={label: float(p) for label, p in zip(labels, row, strict=True)},
            label=labels[int(row.argmax())],
            raw_confidence=float(row.max()),
            out_of_fold=out_of_fold,
            usage={"seconds": round(seconds_per_item, 6)},
        )
        for item, row in zip(items, probs, strict=True)
    ]


def label_project(project: Project, *, progress: Reporter = quiet) -> LabelResult:
    """Train the labeler on the golden items and predict every item not yet predicted."""
    train, gold = golden_items(project)
    labeler = build_labeler(project)
    labels = project.config.task.label_names
    store = project.store
    with progress("Encoding golden items", len(train)) as advance:
        labeler.fit(train, gold, progress=advance)
    version = labeler.version_
    usage = Usage().add(labeler.fit_usage_)
    config = {"labeler": project.config.labeler.model_dump(), "model_version": version, "golden": len(train)}
    with ledger_run(store, "label", config) as run:
        with store.read() as session:
            done = set(session.scalars(select(Prediction.item_id).where(Prediction.model_version == version)))
            todo = [
                TextItem(r.id, r.text, r.content_hash)
                for r in session.execute(
                    select(Item.id, Item.text, Item.content_hash)
                    .where(Item.role != "golden")
                    .order_by(Item.seq)
                )
                if r.id not in done
            ]
        golden_todo = [i for i, item in enumerate(train) if item.id not in done]
        with store.write() as session:
            session.add_all(
                _prediction_rows(
                    [train[i] for i in golden_todo],
                    labeler.oof_proba_[golden_todo],
                    labels,
                    version=version,
                    run_id=run.id,
                    out_of_fold=True,
                    seconds_per_item=0.0,
                )
            )
            run.record(session, usage.as_dict(), model_cost(project.config.costs, usage.as_dict()))
        with progress("Labeling items", len(todo)) as advance:
            for start in range(0, len(todo), CHUNK):
                part = todo[start : start + CHUNK]
                probs, part_usage = labeler.predict_proba(part)
                usage.add(part_usage)
                # Each chunk commits its predictions and the ledger together: a killed run
                # loses at most one chunk and never pays for work it did not keep.
                with store.write() as session:
                    session.add_all(
                        _prediction_rows(
                            part,
                            probs,
                            labels,
                            version=version,
                            run_id=run.id,
                            out_of_fold=False,
                            seconds_per_item=part_usage.seconds / max(len(part), 1),
                        )
                    )
                    run.record(session, usage.as_dict(), model_cost(project.config.costs, usage.as_dict()))
                advance(len(part))
    return LabelResult(version, len(todo), len(done), usage.as_dict())
