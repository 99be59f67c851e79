"""Labelers: models that give a probability for every label of the project.

``label_project`` is the labeling stage: fit each configured labeler on the golden
items, then predict every item that has no prediction from that labeler's version yet,
one committed chunk at a time, so a killed run resumes where it stopped. Golden items
get out-of-fold (or leave-one-out) predictions, the only ones calibration may learn from.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select

from duolabel.config import EmbeddingLabelerConfig, LabelerConfig, LlamaLabelerConfig
from duolabel.costs import ledger_run, model_cost
from duolabel.errors import LabelerError, ProjectError
from duolabel.labelers.base import Labeler, LabelingStopped, TextItem, TrainableLabeler, Usage
from duolabel.labelers.embedding import EmbeddingLabeler, StoreEmbeddingCache
from duolabel.progress import Reporter, quiet
from duolabel.store import FinalLabel, Item, Prediction, Run

if TYPE_CHECKING:
    from duolabel.project import Project

__all__ = [
    "ENSEMBLE",
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
    "labeler_versions",
]

CHUNK = 256
ENSEMBLE = "ensemble"


@dataclass
class LabelResult:
    labeler: str
    model_version: str
    predicted: int
    already_done: int
    abstained: int
    usage: dict[str, float]


def _encoder(project: Project) -> EmbeddingLabeler:
    """The embedding model used for few-shot similarity (the project's, or the default)."""
    cfg = next((c for c in project.config.labeler if isinstance(c, EmbeddingLabelerConfig)), None)
    return build_labeler(project, cfg or EmbeddingLabelerConfig())


def _encode_fn(project: Project) -> Any:
    """Few-shot similarity through the project's encoder (and its store cache)."""
    encoder = _encoder(project)

    def encode(items: Sequence[TextItem]) -> np.ndarray:
        return encoder.encode(items)[0]

    encode.model_name = encoder.model_name  # type: ignore[attr-defined]  # part of LLM versions
    return encode


def build_labeler(project: Project, cfg: LabelerConfig) -> Any:
    """An unfitted labeler for one ``labeler`` entry of the project file."""
    task = project.config.task
    common: dict[str, Any] = {"labels": task.label_names}
    if isinstance(cfg, EmbeddingLabelerConfig):
        labeler = EmbeddingLabeler(
            **common,
            model_path=project.resolve(cfg.model) if cfg.model else None,
            regularization=cfg.regularization,
            batch_size=cfg.batch_size,
            cv_folds=cfg.cv_folds,
        )
        labeler.cache = StoreEmbeddingCache(project.store, labeler.model_name)
        return labeler
    llm: dict[str, Any] = {
        **common,
        "descriptions": [spec.description for spec in task.labels],
        "instructions": task.instructions,
        "few_shot": cfg.few_shot,
        "encode": _encode_fn(project) if cfg.few_shot else None,
    }
    if isinstance(cfg, LlamaLabelerConfig):
        from duolabel.labelers.llama import LlamaLabeler

        return LlamaLabeler(
            **llm,
            model_path=project.resolve(cfg.model_path) if cfg.model_path else None,
            n_ctx=cfg.n_ctx,
            permutations=cfg.permutations,
            n_threads=cfg.n_threads,
        )
    from duolabel.labelers.cache import StoreResponseCache
    from duolabel.labelers.openai import OpenAILabeler

    costs = project.config.costs
    return OpenAILabeler(
        **llm,
        model=cfg.model,
        base_url=cfg.base_url,
        api_key_env=cfg.api_key_env,
        endpoint=cfg.endpoint,
        top_logprobs=cfg.top_logprobs,
        answer_tokens=cfg.answer_tokens,
        samples=cfg.samples,
        verbalized=cfg.verbalized,
        concurrency=cfg.concurrency,
        timeout=cfg.timeout,
        max_retries=cfg.max_retries,
        budget=cfg.budget,
        price_input_per_million=costs.llm_input_per_million,
        price_output_per_million=costs.llm_output_per_million,
        cache=StoreResponseCache(project.store),
    )


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


def labeler_versions(project: Project) -> dict[str, str]:
    """Each configured labeler's version from its latest finished labeling run."""
    names = [cfg.label_name for cfg in project.config.labeler]
    versions: dict[str, str] = {}
    with project.store.read() as session:
        runs = session.scalars(
            select(Run).where(Run.kind == "label", Run.status == "done").order_by(Run.id.desc())
        )
        for run in runs:
            name = run.config.get("labeler_name", "embedding")
            if name in names and name not in versions:
                versions[name] = run.config["model_version"]
    return {name: versions[name] for name in names if name in versions}


def current_model_version(project: Project) -> str | None:
    """The version of the predictions that routing uses: the single labeler's, or the
    ensemble's (recorded by the calibration stage) when there are several."""
    if len(project.config.labeler) == 1:
        return labeler_versions(project).get(project.config.labeler[0].label_name)
    with project.store.read() as session:
        run = session.scalars(
            select(Run).where(Run.kind == "calibrate", Run.status == "done").order_by(Run.id.desc()).limit(1)
        ).first()
    return run.config.get("ensemble_version") if run else None


def _prediction_rows(
    items: Sequence[TextItem],
    probs: np.ndarray,
    labels: list[str],
    *,
    name: str,
    version: str,
    run_id: int,
    out_of_fold: bool,
    seconds_per_item: float,
) -> list[Prediction]:
    rows = []
    for item, row in zip(items, probs, strict=True):
        common = dict(
            item_id=item.id,
            labeler=name,
            model_version=version,
            run_id=run_id,
            out_of_fold=out_of_fold,
            usage={"seconds": round(seconds_per_item, 6)},
        )
        if np.isnan(row).any():  # an abstention: no label, people decide
            rows.append(Prediction(**common, probs={}, label="", raw_confidence=0.0, abstained=True))
        else:
            rows.append(
                Prediction(
                    **common,
                    probs={label: float(p) for label, p in zip(labels, row, strict=True)},
                    label=labels[int(row.argmax())],
                    raw_confidence=float(row.max()),
                )
            )
    return rows


def _select_configs(project: Project, name: str | None) -> list[LabelerConfig]:
    configs = list(project.config.labeler)
    if name is None:
        return configs
    chosen = [c for c in configs if c.label_name == name]
    if not chosen:
        known = ", ".join(repr(c.label_name) for c in configs)
        raise ProjectError(f"--labeler {name!r}: the project has no such labeler (it has {known})")
    return chosen


def label_project(
    project: Project,
    *,
    labeler: str | None = None,
    batches: Sequence[str] | None = None,
    progress: Reporter = quiet,
) -> list[LabelResult]:
    """Fit each labeler (or the one named) on the golden items and predict every item (or
    every item of ``batches``)."""
    return [_label_one(project, cfg, progress, batches) for cfg in _select_configs(project, labeler)]


def human_labelled_items(project: Project) -> tuple[list[TextItem], list[str]]:
    """Regular items whose final label came from people: more training data for the next batch."""
    with project.store.read() as session:
        rows = session.execute(
            select(Item.id, Item.text, Item.content_hash, FinalLabel.label)
            .join(FinalLabel, FinalLabel.item_id == Item.id)
            .where(Item.role != "golden", FinalLabel.source.in_(["humans", "fused", "expert"]))
            .order_by(Item.seq)
        ).all()
    return [TextItem(r.id, r.text, r.content_hash) for r in rows], [r.label for r in rows]


def _label_one(
    project: Project, cfg: LabelerConfig, progress: Reporter, batches: Sequence[str] | None = None
) -> LabelResult:
    train, gold = golden_items(project)
    n_golden = len(train)
    if isinstance(cfg, EmbeddingLabelerConfig):
        # A trainable labeler retrains on what people have labelled since; those items get
        # out-of-fold predictions like the golden ones (calibration still uses golden only).
        extra, extra_labels = human_labelled_items(project)
        train, gold = train + extra, gold + extra_labels
    train_ids = {item.id for item in train}
    model = build_labeler(project, cfg)
    name = cfg.label_name
    labels = project.config.task.label_names
    store = project.store
    costs = project.config.costs
    with progress(f"Preparing {name} on golden items", len(train)) as advance:
        model.fit(train, gold, progress=advance)
    version = model.version_
    usage = Usage().add(getattr(model, "fit_usage_", Usage()))
    config = {
        "labeler": cfg.model_dump(),
        "labeler_name": name,
        "model_version": version,
        "golden": n_golden,
        "human_labelled": len(train) - n_golden,
    }
    with ledger_run(store, "label", config) as run:
        with store.read() as session:
            done = set(
                session.scalars(
                    select(Prediction.item_id).where(
                        Prediction.model_version == version, Prediction.labeler == name
                    )
                )
            )
            wanted = select(Item.id, Item.text, Item.content_hash).where(Item.role != "golden")
            if batches is not None:
                wanted = wanted.where(Item.batch.in_(list(batches)))
            regular = [
                TextItem(r.id, r.text, r.content_hash)
                for r in session.execute(wanted.order_by(Item.seq))
                if r.id not in done and r.id not in train_ids
            ]
        golden_todo = [i for i, item in enumerate(train) if item.id not in done]
        oof = getattr(model, "oof_proba_", None)
        abstained = 0

        def save(part: Sequence[TextItem], probs: np.ndarray, part_usage: Usage, out_of_fold: bool) -> None:
            nonlocal abstained
            usage.add(part_usage)
            abstained += int(np.isnan(probs).any(axis=1).sum())
            # Each chunk commits its predictions and the ledger together: a killed run
            # loses at most one chunk and never pays for work it did not keep.
            with store.write() as session:
                session.add_all(
                    _prediction_rows(
                        part,
                        probs,
                        labels,
                        name=name,
                        version=version,
                        run_id=run.id,
                        out_of_fold=out_of_fold,
                        seconds_per_item=part_usage.seconds / max(len(part), 1),
                    )
                )
                spent = usage.as_dict()
                run.record(session, spent, model_cost(costs, spent))

        if oof is not None:
            save([train[i] for i in golden_todo], oof[golden_todo], Usage(), True)
        todo = [] if oof is not None else [(train[i], True) for i in golden_todo]
        todo += [(item, False) for item in regular]
        with progress(f"Labeling with {name}", len(todo)) as advance:
            for start in range(0, len(todo), CHUNK):
                part = todo[start : start + CHUNK]
                for out_of_fold in (True, False):
                    items = [item for item, oof_flag in part if oof_flag is out_of_fold]
                    if not items:
                        continue
                    if getattr(cfg, "budget", None) is not None:
                        # labeler.budget is per run; the labeler itself counts per call.
                        model.budget = max(cfg.budget - usage.extra.get("cost", 0.0), 0.0)
                    try:
                        probs, part_usage = model.predict_proba(items)
                    except LabelingStopped as stop:
                        # Keep what was answered; the next run continues from there.
                        partial, part_usage = stop.partial
                        save(items[: stop.done], partial, part_usage, out_of_fold)
                        raise
                    save(items, probs, part_usage, out_of_fold)
                advance(len(part))
    return LabelResult(name, version, len(todo), len(done), abstained, usage.as_dict())
