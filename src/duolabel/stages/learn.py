"""The learning stage: active learning on the project's store.

Three uses of one strategy (``learning.strategy``, found by name in
:data:`~duolabel.core.strategies.STRATEGIES`):

- :func:`suggest_golden` picks the regular items whose gold label would teach the model most
  and puts them in the experts' queue (reason ``golden``; the answer makes the item golden) or
  writes them to a file for outside experts, to import back with ``--role golden``;
- :func:`order_queue` puts the items people wait to label in the order the strategy ranks
  them, most useful for the next model first (``routes.position``);
- :func:`learning_status` reads the stopping rule: stable predictions on a fixed stop set and
  whether one more golden label saves more than it costs (:mod:`duolabel.core.learning`).

Strategies see the current model's calibrated distributions (raw ones before calibration)
and, when they need them, the embeddings from the store's encoder cache.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import exists, func, select, update

from duolabel.context import Context
from duolabel.core.learning import CurvePoint, PayOff, label_payoff, learning_curve
from duolabel.core.probs import as_matrix
from duolabel.core.strategies import STRATEGIES, Strategy
from duolabel.errors import LabelerError, ProjectError
from duolabel.export import defuse_formula
from duolabel.io import detect_format
from duolabel.labelers.base import TextItem
from duolabel.ledger import answer_price, current_model_version
from duolabel.people.experts import enqueue_expert
from duolabel.store import Annotation, Assignment, ExpertTask, FinalLabel, Item, Prediction, Route, Run
from duolabel.training_data import golden_items, human_labelled_items

__all__ = [
    "GOLD_COLUMN",
    "LearningStatus",
    "Suggestion",
    "learning_status",
    "order_queue",
    "strategy_for",
    "suggest_golden",
]

#: The column of a suggestion file that experts fill in.
GOLD_COLUMN = "gold_label"
# Strategies whose choice depends on the distributions only: the others get embeddings too.
_PROBS_ONLY = frozenset({"random", "least_confidence", "margin", "entropy"})


def strategy_for(name: str, *, model: bool = True) -> tuple[str, Strategy]:
    """The strategy registered as ``name``; with no trained model yet (``model`` False) a cold
    start (``cold_start`` when registered, else ``random``). ``ProjectError`` lists the
    known names for an unknown one."""
    if not model:
        name = "cold_start" if "cold_start" in STRATEGIES else "random"
    if name not in STRATEGIES:
        known = ", ".join(map(repr, STRATEGIES.names()))
        raise ProjectError(f"learning.strategy: unknown strategy {name!r}; known: {known}")
    return name, STRATEGIES.get(name)()


def _rank(
    ctx: Context, name: str, strategy: Strategy, ids: list[str], probs: np.ndarray, n: int
) -> list[str]:
    """The ``n`` most useful of ``ids``, most useful first."""
    embeddings = labeled = None
    if name not in _PROBS_ONLY:
        from duolabel.labelers import encoder_for

        with ctx.store.read() as session:
            rows = {
                r.id: TextItem(r.id, r.text, r.content_hash)
                for r in session.execute(
                    select(Item.id, Item.text, Item.content_hash).where(Item.id.in_(ids))
                )
            }
        encoder = encoder_for(ctx)
        embeddings = encoder.encode([rows[i] for i in ids])[0]
        # Diversity strategies (k-center) cover the pool away from what the model already
        # learned from: the golden items and people's labels.
        known = _training_items(ctx)
        labeled = encoder.encode(known)[0] if known else None
    picked = strategy.select(probs, n, embeddings=embeddings, seed=ctx.config.learning.seed, labeled=labeled)
    return [ids[int(i)] for i in picked]


def _training_items(ctx: Context) -> list[TextItem]:
    """The items the model learns from (golden ones, when there are enough, and people's labels)."""
    try:
        golden = golden_items(ctx)[0]
    except LabelerError:  # too few golden items to train on yet: no model learned from them
        golden = []
    return golden + human_labelled_items(ctx)[0]


def _distributions(ctx: Context, version: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
    """The model's distribution per item under ``version`` (NaN for an abstention)."""
    labels = ctx.config.task.label_names
    out: dict[str, np.ndarray] = {}
    with ctx.store.read() as session:
        for start in range(0, len(ids), 2000):
            for item_id, probs, calibrated, abstained in session.execute(
                select(
                    Prediction.item_id, Prediction.probs, Prediction.calibrated, Prediction.abstained
                ).where(
                    Prediction.model_version == version, Prediction.item_id.in_(ids[start : start + 2000])
                )
            ):
                dist = calibrated or probs
                out[item_id] = (
                    np.full(len(labels), np.nan) if abstained or not dist else as_matrix([dist], labels)[0]
                )
    return out


# -- golden suggestions -----------------------------------------------------------------------


@dataclass
class Suggestion:
    """What :func:`suggest_golden` chose: the items, most useful first, and where they went."""

    items: list[str]
    strategy: str
    queued: int = 0
    file: Path | None = None


def _candidates(ctx: Context) -> list[str]:
    """Regular items without gold that no expert task waits on and people have not labelled."""
    with ctx.store.read() as session:
        return list(
            session.scalars(
                select(Item.id)
                .where(
                    Item.role == "regular",
                    Item.gold_label.is_(None),
                    ~exists().where(ExpertTask.item_id == Item.id, ExpertTask.state == "open"),
                    ~exists().where(
                        FinalLabel.item_id == Item.id, FinalLabel.source.in_(["humans", "expert", "fused"])
                    ),
                )
                .order_by(Item.seq)
            )
        )


def suggest_golden(ctx: Context, n: int, *, export: str | Path | None = None) -> Suggestion:
    """Pick the ``n`` regular items whose gold label would teach the model most.

    They go to the experts' queue (reason ``golden``), or, with ``export``, to a CSV or JSONL
    file with an empty ``gold_label`` column for outside experts; the filled file imports
    back with ``duolabel import FILE --role golden --gold gold_label``. Items already queued
    for an expert, golden, control or labelled by people are never suggested, so a second
    run queues other items. With no model yet, a cold start picks them.
    """
    if n <= 0:
        raise ProjectError(f"the number of items to suggest must be positive, got {n}")
    pool = _candidates(ctx)
    if not pool:
        raise ProjectError("no items left to suggest: every regular item is golden, queued or labelled")
    version = current_model_version(ctx)
    dists = _distributions(ctx, version, pool) if version else {}
    name, strategy = strategy_for(ctx.config.learning.strategy, model=bool(dists))
    if dists:
        pool = [i for i in pool if i in dists]  # items the current model has not labelled wait
        probs = np.stack([dists[i] for i in pool])
    else:
        probs = np.full((len(pool), len(ctx.config.task.label_names)), 1.0 / len(ctx.config.task.label_names))
    picked = _rank(ctx, name, strategy, pool, probs, n)
    if export is not None:
        path = Path(export)
        _write_suggestions(ctx, path, picked)
        return Suggestion(picked, name, file=path)
    with ctx.store.write() as session:
        queued = enqueue_expert(session, picked, "golden")
    return Suggestion(picked, name, queued=queued)


def _write_suggestions(ctx: Context, path: Path, ids: list[str]) -> None:
    fmt = detect_format(path)
    if fmt not in ("csv", "jsonl"):
        raise ProjectError(f"{path}: suggestions are written as .csv or .jsonl, not {fmt}")
    task = ctx.config.task
    with ctx.store.read() as session:
        items = {i.id: i for i in session.scalars(select(Item).where(Item.id.in_(ids)))}
    # The whole text goes in the first text field (the others empty): it imports back as the
    # same text, so the item is recognised and made golden.
    rows: list[dict[str, Any]] = [
        {
            task.id_field: item_id,
            task.text_fields[0]: items[item_id].text,
            **{f: None for f in task.text_fields[1:]},
            **items[item_id].fields,
            GOLD_COLUMN: None,
        }
        for item_id in ids
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        if fmt == "jsonl":
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            return
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else [GOLD_COLUMN])
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else defuse_formula(v) for k, v in row.items()})


# -- the order of the people's queue ------------------------------------------------------------


def order_queue(ctx: Context) -> int:
    """Give the items waiting for people that nobody has been given yet the queue positions
    they already hold, in the order the strategy ranks them; returns how many were ranked.

    Only untouched items move (no answer, no lease, ever), and only among themselves: items
    people have started keep their place, so overlap and the one-item-per-person rules are
    untouched, and control items (never routed) are not part of the order at all. At most
    ``learning.order_window`` items, the first in the current order, are ranked at once.
    """
    cfg = ctx.config.learning
    version = current_model_version(ctx)
    if not cfg.order_queue or version is None:
        return 0
    with ctx.store.read() as session:
        waiting = session.execute(
            select(Route.item_id, Route.position)
            .where(
                Route.decision == "humans",
                ~exists().where(Annotation.item_id == Route.item_id),
                ~exists().where(Assignment.item_id == Route.item_id),
            )
            .order_by(Route.position)
            .limit(cfg.order_window)
        ).all()
    dists = _distributions(ctx, version, [w.item_id for w in waiting])
    ids = [w.item_id for w in waiting if w.item_id in dists]
    if len(ids) < 2:
        return 0
    name, strategy = strategy_for(cfg.strategy)
    ranked = _rank(ctx, name, strategy, ids, np.stack([dists[i] for i in ids]), len(ids))
    positions = sorted(w.position for w in waiting if w.item_id in dists)
    with ctx.store.write() as session:
        for item_id, position in zip(ranked, positions, strict=True):
            # Another item may hold this position for a moment: positions are not unique.
            session.execute(update(Route).where(Route.item_id == item_id).values(position=position))
    return len(ranked)


# -- the stopping rule -------------------------------------------------------------------------


@dataclass
class LearningStatus:
    """The learning curve, the strategy in use and the stopping rule's verdict."""

    strategy: str
    curve: list[CurvePoint]
    payoff: PayOff
    stop_set: int
    versions: int

    def describe(self) -> str:
        return self.payoff.describe()


def stop_set(ctx: Context) -> list[str]:
    """The fixed unlabelled stop set: ``learning.stop_sample`` regular items drawn (seeded)
    the first time it is asked for and kept in the ledger, so every later model is compared
    on the same items."""
    with ctx.store.read() as session:
        kept = session.scalar(
            select(Run.config).where(Run.kind == "stop_set").order_by(Run.id.desc()).limit(1)
        )
    if kept is not None:
        return list(kept["items"])
    cfg = ctx.config.learning
    with ctx.store.read() as session:
        regular = list(
            session.scalars(
                select(Item.id).where(Item.role == "regular", Item.gold_label.is_(None)).order_by(Item.seq)
            )
        )
    if not regular:
        return []
    pick = np.random.default_rng(cfg.seed).permutation(len(regular))[: cfg.stop_sample]
    items = [regular[i] for i in sorted(pick)]
    with ctx.store.write() as session:
        session.add(Run(kind="stop_set", status="done", config={"items": items, "seed": cfg.seed}))
    return items


def _history(ctx: Context, version: str, items: list[str]) -> tuple[list[list[str]], int]:
    """Each model version's labels on the stop-set items that the last ``stop_window``
    versions all predicted (oldest first), and how many versions there are."""
    with ctx.store.read() as session:
        labeler = session.scalar(
            select(Prediction.labeler).where(Prediction.model_version == version).limit(1)
        )
        rows = session.execute(
            select(Prediction.model_version, Prediction.item_id, Prediction.label, Prediction.id)
            .where(Prediction.labeler == labeler, Prediction.item_id.in_(items))
            .order_by(Prediction.id)
        ).all()
    by_version: dict[str, dict[str, str]] = {}
    for v, item_id, label, _ in rows:
        by_version.setdefault(v, {})[item_id] = label
    versions = list(by_version)  # in order of their first prediction
    last = versions[-ctx.config.learning.stop_window :]
    common = [i for i in items if all(i in by_version[v] for v in last)]
    return [[by_version[v][i] for i in common] for v in last] if common else [], len(versions)


def learning_status(ctx: Context) -> LearningStatus | None:
    """The learning curve on the training labels, the strategy and whether more golden
    items would pay off; ``None`` before the first model or with too few labels for a curve."""
    version = current_model_version(ctx)
    if version is None:
        return None
    try:
        train, gold = golden_items(ctx)
    except LabelerError:
        return None
    people, people_gold = human_labelled_items(ctx)
    train, gold = [*train, *people], [*gold, *people_gold]
    from duolabel.labelers import encoder_for

    encoder = encoder_for(ctx)
    vectors = encoder.encode(train)[0]
    labels = ctx.config.task.label_names
    regularization = float(getattr(encoder, "regularization", 1.0) or 1.0)
    curve = learning_curve(
        vectors,
        np.array([labels.index(g) for g in gold]),
        n_labels=len(labels),
        regularization=regularization,
        confidence=ctx.config.audit.confidence,
        seed=ctx.config.learning.seed,
    )
    items = stop_set(ctx)
    history, versions = _history(ctx, version, items)
    with ctx.store.read() as session:
        items_left = int(
            session.scalar(
                select(func.count())
                .select_from(Item)
                .where(Item.role == "regular", Item.id.not_in(select(FinalLabel.item_id)))
            )
            or 0
        )
    costs, cfg = ctx.config.costs, ctx.config.learning
    payoff = label_payoff(
        history,
        curve,
        items_left=items_left,
        saving_per_item=answer_price(costs) * ctx.config.routing.overlap,
        price_per_label=costs.expert_answer,
        kappa=cfg.stop_kappa,
        window=cfg.stop_window,
        currency=costs.currency,
    )
    return LearningStatus(cfg.strategy, curve, payoff, len(items), versions)
