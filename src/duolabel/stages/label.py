"""The labeling stage: fit each configured labeler on the golden items, then predict every
item that has no prediction from that labeler's version yet, one committed chunk at a time,
so a killed run resumes where it stopped. Golden items get out-of-fold (or leave-one-out)
predictions, the only ones calibration may learn from; a training item the labeler has no
out-of-fold prediction for (a NaN row of ``oof_proba_``) is predicted in-sample and never
marked out-of-fold.

Each new version of a trainable labeler also predicts the stop set it was given (the
learning stage's fixed sample) where it labels none of it otherwise, under
``version + STOP_SET_SUFFIX``: in batch mode a version labels only its batch, and the
stopping rule needs every version's labels on the same items.

An imported labeler (backend ``external``) predicts nothing here: its predictions come
from ``duolabel import-predictions``, and this stage only checks that every item it would
label has one, with an error naming that command when some do not.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select

from duolabel.config import LabelerConfig
from duolabel.context import Context
from duolabel.core.probs import as_dict
from duolabel.core.tasks import TaskType, task_type
from duolabel.errors import LabelerError, ProjectError
from duolabel.labelers import LabelingStopped, TextItem, Usage, build_labeler
from duolabel.labelers.engines import labeling_engine
from duolabel.ledger import ledger_run, model_cost
from duolabel.progress import Reporter, quiet
from duolabel.store import Item, Prediction
from duolabel.store.bulk import insert_many, new_rows
from duolabel.training_data import (
    STOP_SET_SUFFIX,
    fit_options,
    golden_advice,
    golden_items,
    human_labelled_items,
    is_student,
    student_items,
    synthetic_training_items,
    without_golden,
)

__all__ = ["CHUNK", "LabelResult", "label_project"]

#: Items predicted and committed together (with their share of the ledger).
CHUNK = 256


@dataclass
class LabelResult:
    """What one labeler's labeling run did: new predictions, items it already had,
    abstentions among the new ones, and its usage."""

    labeler: str
    model_version: str
    predicted: int
    already_done: int
    abstained: int
    usage: dict[str, float]
    stop_set: int = 0  # stop-set items predicted apart (see the module docstring)


def _prediction_rows(
    items: Sequence[TextItem],
    probs: np.ndarray,
    labels: list[str],
    *,
    task: TaskType,
    name: str,
    version: str,
    run_id: int,
    out_of_fold: bool,
    seconds_per_item: float,
    answers: Mapping[str, str] | None = None,
    features: Mapping[str, dict[str, float]] | None = None,
) -> list[Prediction]:
    rows = []
    # The task type reads the model's answer from its distribution (NaN rows abstain).
    picks = task.predicted(np.nan_to_num(probs).reshape(len(items), len(labels)))
    for item, row, pick in zip(items, probs, picks, strict=True):
        common = dict(
            item_id=item.id,
            labeler=name,
            model_version=version,
            run_id=run_id,
            out_of_fold=out_of_fold,
            usage={"seconds": round(seconds_per_item, 6)},
        )
        # Per-item error signals the labeler measured itself (an LLM's prompt_variants).
        if features and item.id in features:
            common["features"] = dict(features[item.id])
        if np.isnan(row).any():  # an abstention: no label, people decide
            rows.append(Prediction(**common, probs={}, label="", raw_confidence=0.0, abstained=True))
        elif answers is not None:
            # A span list (spans): the labeler's own answer, its score in every column
            # (duolabel.labelers.span_labeler).
            rows.append(
                Prediction(
                    **common,
                    probs=as_dict(row, labels),
                    label=answers[item.id],
                    raw_confidence=float(row.max()),
                )
            )
        else:
            rows.append(
                Prediction(
                    **common,
                    probs=as_dict(row, labels),
                    # A list-valued answer (multi_label) is not one index: the task type
                    # reads it, and its confidence, from the per-label probabilities.
                    label=task.model_answer(row, labels) if task.list_valued else labels[int(pick)],
                    raw_confidence=task.model_confidence(row) if task.list_valued else float(row.max()),
                )
            )
    return rows


def _groups(todo: Sequence[tuple[TextItem, bool]]) -> list[tuple[list[TextItem], bool]]:
    """The chunks the local loop predicts, as (items, out_of_fold) groups of one flag each."""
    groups = []
    for start in range(0, len(todo), CHUNK):
        part = todo[start : start + CHUNK]
        for flag in (True, False):
            if items := [item for item, oof_flag in part if oof_flag is flag]:
                groups.append((items, flag))
    return groups


def _select_configs(ctx: Context, name: str | None) -> list[LabelerConfig]:
    configs = list(ctx.config.labeler)
    if name is None:
        return configs
    chosen = [c for c in configs if c.label_name == name]
    if not chosen:
        known = ", ".join(repr(c.label_name) for c in configs)
        raise ProjectError(f"--labeler {name!r}: the project has no such labeler (it has {known})")
    return chosen


def label_project(
    ctx: Context,
    *,
    labeler: str | None = None,
    batches: Sequence[str] | None = None,
    progress: Reporter = quiet,
    stop_set: Sequence[str] = (),
) -> list[LabelResult]:
    """Fit each labeler (or the one named) on the golden items and predict every item (or
    every item of ``batches``); a trainable labeler also predicts the ``stop_set`` items it
    has no prediction for (see the module docstring)."""
    return [_label_one(ctx, cfg, progress, batches, stop_set) for cfg in _select_configs(ctx, labeler)]


def _stop_set_todo(ctx: Context, name: str, version: str, stop_set: Sequence[str]) -> list[TextItem]:
    """The stop-set items that ``version`` of labeler ``name`` has predicted neither as
    work nor apart."""
    with ctx.store.read() as session:
        have = set(
            session.scalars(
                select(Prediction.item_id).where(
                    Prediction.labeler == name,
                    Prediction.model_version.in_([version, version + STOP_SET_SUFFIX]),
                    Prediction.item_id.in_(list(stop_set)),
                )
            )
        )
        return [
            TextItem(r.id, r.text, r.content_hash)
            for r in session.execute(
                select(Item.id, Item.text, Item.content_hash)
                .where(Item.id.in_([i for i in stop_set if i not in have]))
                .order_by(Item.seq)
            )
        ]


def _label_one(
    ctx: Context,
    cfg: LabelerConfig,
    progress: Reporter,
    batches: Sequence[str] | None = None,
    stop_set: Sequence[str] = (),
) -> LabelResult:
    # Cold start: a trainable labeler with synthetic items to learn from starts on whatever
    # golden items exist (calibration still needs its minimum of golden items).
    cold = cfg.trainable and not is_student(ctx, cfg) and bool(synthetic_training_items(ctx, 0)[0])
    # Routing by a sample needs no golden item where the labeler needs no training.
    sample_only = not cfg.trainable and without_golden(ctx)
    try:
        train, gold = golden_items(ctx, minimum=not cold and not sample_only)
    except LabelerError as error:
        raise LabelerError(f"{error}; {golden_advice(cfg.backend, trainable=cfg.trainable)}") from None
    n_golden = len(train)
    if is_student(ctx, cfg):
        # The distilled student learns from the teacher's confident labels as well as from
        # people's (the training set the distill stage compared it with).
        extra, extra_labels = student_items(ctx)
        train, gold = train + extra, gold + extra_labels
    elif cfg.trainable:
        # A trainable labeler retrains on what people have labelled since; those items get
        # out-of-fold predictions like the golden ones (calibration still uses golden only).
        extra, extra_labels = human_labelled_items(ctx)
        train, gold = train + extra, gold + extra_labels
    model = build_labeler(ctx, cfg)
    options = fit_options(ctx, model)
    synthetic_ids: set[str] = set()
    if cfg.trainable and not is_student(ctx, cfg):
        synthetic, intended = synthetic_training_items(ctx, len(train))
        synthetic_ids = {item.id for item in synthetic}
        weight = ctx.config.synthetic.weight
        if synthetic and weight != 1.0 and "sample_weight" in inspect.signature(model.fit).parameters:
            options["sample_weight"] = [1.0] * len(train) + [weight] * len(synthetic)
        train, gold = train + synthetic, gold + intended
    train_ids = {item.id for item in train}
    name = cfg.label_name
    labels = ctx.config.task.label_names
    store = ctx.store
    costs = ctx.config.costs
    with progress(f"Preparing {name} on golden items", len(train)) as advance:
        model.fit(train, gold, progress=advance, **options)
    version = model.version_
    usage = Usage().add(getattr(model, "fit_usage_", Usage()))
    config = {
        "labeler": cfg.model_dump(),
        "labeler_name": name,
        "model_version": version,
        "golden": n_golden,
        "human_labelled": len(train) - n_golden - len(synthetic_ids),
    }
    if synthetic_ids:
        config["synthetic"] = len(synthetic_ids)
        config["synthetic_weight"] = "sample_weight" in options and ctx.config.synthetic.weight
    if (fit_info := getattr(model, "fit_info_", None)) is not None:
        # What fitting chose: the head's C and pseudo-labels taken, or how a fine-tuned
        # labeler made its training items' probabilities honest.
        config["fit"] = fit_info
    with ledger_run(store, "label", config) as run:
        with store.read() as session:
            done = set(
                session.scalars(
                    select(Prediction.item_id).where(
                        Prediction.model_version == version, Prediction.labeler == name
                    )
                )
            )
            # Regular items are the work. Control items are labelled too, only so that co-pilot
            # mode shows a model suggestion on a control as on any task (without one, a task
            # with no suggestion was a control, issue 12); they are never trained, calibrated
            # or weighed in aggregation on, so their predictions are out-of-sample. Not by a
            # labeler of imported predictions: a file made outside need not cover them.
            work = Item.role == "regular"
            if batches is not None:
                work &= Item.batch.in_(list(batches))
            if not getattr(model, "imported", False):
                work |= Item.role == "control"
            wanted = select(Item.id, Item.text, Item.content_hash).where(work)
            regular = [
                TextItem(r.id, r.text, r.content_hash)
                for r in session.execute(wanted.order_by(Item.seq))
                if r.id not in done and r.id not in train_ids
            ]
        # Synthetic items are training data only: no prediction of theirs is ever stored.
        golden_todo = [
            i for i, item in enumerate(train) if item.id not in done and item.id not in synthetic_ids
        ]
        oof = getattr(model, "oof_proba_", None)
        abstained = 0

        def save(
            part: Sequence[TextItem],
            probs: np.ndarray,
            part_usage: Usage,
            out_of_fold: bool,
            tag: str = version,
        ) -> None:
            nonlocal abstained
            usage.add(part_usage)
            if tag == version:
                abstained += int(np.isnan(probs).any(axis=1).sum())
            # Each chunk commits its predictions and the ledger together: a killed run
            # loses at most one chunk and never pays for work it did not keep.
            with store.write() as session:
                rows = _prediction_rows(
                    part,
                    probs,
                    labels,
                    task=task_type(ctx.config.task.type),
                    name=name,
                    version=tag,
                    run_id=run.id,
                    out_of_fold=out_of_fold,
                    seconds_per_item=part_usage.seconds / max(len(part), 1),
                    answers=getattr(model, "answers_", None),
                    features=getattr(model, "item_features_", None),
                )
                if rows:
                    # One executemany per chunk: the ORM's flush of each new row cost more
                    # than the insert itself (issue 17).
                    insert_many(session, *new_rows(rows))
                spent = usage.as_dict()
                run.record(session, spent, model_cost(costs, spent))

        if oof is not None:
            # A NaN row of oof_proba_ means the labeler has no out-of-fold prediction for
            # that training item (a held-out calibration fold covers only some of them): it
            # is predicted like any other item, in-sample and so never used by calibration,
            # rather than stored as an out-of-fold abstention.
            honest = [i for i in golden_todo if not np.isnan(oof[i]).any()]
            save([train[i] for i in honest], oof[honest], Usage(), True)
            todo = [(train[i], False) for i in sorted(set(golden_todo) - set(honest))]
        else:
            todo = [(train[i], True) for i in golden_todo]
        todo += [(item, False) for item in regular]
        if getattr(model, "imported", False) and todo:
            # An imported labeler never predicts: this names every item it lacks at once.
            model.predict_proba([item for item, _ in todo])
        engine = labeling_engine(cfg)
        with progress(f"Labeling with {name}", len(todo)) as advance:
            if engine is not None:
                # Another engine predicts the same chunks elsewhere; each is saved here as
                # it comes back, so resuming works as below.
                for items, out_of_fold, probs, part_usage in engine.predict(model, _groups(todo)):
                    save(items, probs, part_usage, out_of_fold)
                    advance(len(items))
                todo_local: list[tuple[TextItem, bool]] = []
            else:
                todo_local = todo
            for start in range(0, len(todo_local), CHUNK):
                part = todo_local[start : start + CHUNK]
                moved = 0

                def step(n: int, size: int = len(part)) -> None:
                    # The labeler reports each item as it is answered (a slow LLM's bar moves
                    # per answer, not per committed chunk); the chunk makes up the rest.
                    nonlocal moved
                    n = min(n, size - moved)
                    moved += n
                    advance(n)

                for out_of_fold in (True, False):
                    items = [item for item, oof_flag in part if oof_flag is out_of_fold]
                    if not items:
                        continue
                    if (budget := getattr(cfg, "budget", None)) is not None:
                        # labeler.budget is per run and covers what the ledger counts (tokens
                        # and compute, fitting included); the labeler itself counts per call.
                        model.budget = max(budget - model_cost(costs, usage.as_dict()), 0.0)
                    try:
                        probs, part_usage = model.predict_proba(items, progress=step)
                    except LabelingStopped as stop:
                        # Keep what was answered; the next run continues from there.
                        partial, part_usage = stop.partial
                        save(items[: stop.done], partial, part_usage, out_of_fold)
                        raise
                    save(items, probs, part_usage, out_of_fold)
                advance(len(part) - moved)
        # An LLM labeler's versions change with its few-shot examples only, and each stop-set
        # item would cost a paid call: only trainable labelers are compared on the stop set.
        # An imported labeler's items are whatever its file covered: it is never asked for more.
        skip = cfg.llm or getattr(model, "imported", False) or not stop_set
        extra = [] if skip else _stop_set_todo(ctx, name, version, stop_set)
        if extra:
            chunks = [(extra[start : start + CHUNK], False) for start in range(0, len(extra), CHUNK)]
            predicted = (
                engine.predict(model, chunks)
                if engine is not None
                else ((chunk, flag, *model.predict_proba(chunk)) for chunk, flag in chunks)
            )
            with progress(f"Predicting the stop set with {name}", len(extra)) as advance:
                for chunk, _, probs, part_usage in predicted:
                    save(chunk, probs, part_usage, False, version + STOP_SET_SUFFIX)
                    advance(len(chunk))
    return LabelResult(name, version, len(todo), len(done), abstained, usage.as_dict(), len(extra))
