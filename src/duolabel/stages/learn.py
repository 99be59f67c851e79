"""The learning stage: active learning on the project's store.

Three uses of one strategy (``learning.strategy``, found by name in
:data:`~duolabel.core.strategies.STRATEGIES`):

- :func:`suggest_golden` picks the regular items whose gold label would teach the model most
  and puts them in the experts' queue (reason ``golden``; the answer makes the item golden) or
  writes them to a file for outside experts, to import back with ``--role golden``;
- :func:`order_queue` puts the items people wait to label in the order the strategy ranks
  them, most useful for the next model first (``routes.position``);
- :func:`record_learning` measures, when a model is trained, its learning curve and its labels
  on a fixed stop set; :func:`learning_status` reads them for the stopping rule: stable
  predictions and whether one more golden label saves more than it costs
  (:mod:`duolabel.core.learning`).

Strategies see the current model's calibrated distributions (raw ones before calibration)
and, when they need them, the embeddings from the store's encoder cache.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import exists, func, select, update

from duolabel.config import EmbeddingLabelerConfig
from duolabel.context import Context
from duolabel.core.learning import CurvePoint, PayOff, label_payoff, learning_curve
from duolabel.core.probs import as_matrix
from duolabel.core.strategies import STRATEGIES, Strategy
from duolabel.core.tasks import task_type
from duolabel.errors import DataError, LabelerError, Problem, ProjectError
from duolabel.files import atomic_write, defuse_formula, writable_file
from duolabel.labelers.base import TextItem
from duolabel.ledger import answer_price, current_model_version
from duolabel.people.experts import enqueue_expert, expert_queue_counts
from duolabel.store import Annotation, Assignment, ExpertTask, FinalLabel, Item, Prediction, Route, Run
from duolabel.training_data import STOP_SET_SUFFIX, human_labelled_items, learned_from

__all__ = [
    "GOLD_COLUMN",
    "LEARNING_RUN",
    "LearningStatus",
    "Purchase",
    "Suggestion",
    "buy_golden",
    "curve_model",
    "learning_status",
    "order_queue",
    "record_learning",
    "stop_set",
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
        return learned_from(ctx)[0]
    except LabelerError:  # too few golden items to train on yet: no model learned from them
        return human_labelled_items(ctx)[0]


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


def _candidates(ctx: Context, *, accepted_only: bool = False) -> list[str]:
    """Regular items without gold that no expert task waits on and people have not labelled
    (with ``accepted_only``, only those routing left to the model: outside the people's queue)."""
    query = select(Item.id).where(
        Item.role == "regular",
        Item.gold_label.is_(None),
        ~exists().where(ExpertTask.item_id == Item.id, ExpertTask.state == "open"),
        ~exists().where(FinalLabel.item_id == Item.id, FinalLabel.source.in_(["humans", "expert", "fused"])),
    )
    if accepted_only:
        query = query.where(exists().where(Route.item_id == Item.id, Route.decision == "accept"))
    with ctx.store.read() as session:
        return list(session.scalars(query.order_by(Item.seq)))


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
    path = None if export is None else Path(export)
    # A path that cannot take the file is told before any work.
    fmt = None if path is None else _suggestion_format(path)
    pool = _candidates(ctx)
    if not pool:
        raise ProjectError("no items left to suggest: every regular item is golden, queued or labelled")
    picked, name = _pick(ctx, pool, n)
    if path is not None and fmt is not None:
        _write_suggestions(ctx, path, fmt, picked)
        return Suggestion(picked, name, file=path)
    with ctx.store.write() as session:
        queued = enqueue_expert(session, picked, "golden")
    return Suggestion(picked, name, queued=queued)


def _pick(ctx: Context, pool: list[str], n: int) -> tuple[list[str], str]:
    """The ``n`` most useful items of ``pool`` by the current model's distributions (items it
    has not labelled wait), or a cold start before any model; and the strategy's name."""
    version = current_model_version(ctx)
    dists = _distributions(ctx, version, pool) if version else {}
    name, strategy = strategy_for(ctx.config.learning.strategy, model=bool(dists))
    if dists:
        pool = [i for i in pool if i in dists]
        probs = np.stack([dists[i] for i in pool])
    else:
        probs = np.full((len(pool), len(ctx.config.task.label_names)), 1.0 / len(ctx.config.task.label_names))
    return _rank(ctx, name, strategy, pool, probs, n), name


@dataclass
class Purchase:
    """What :func:`buy_golden` did after a batch: the items it queued for experts, how many
    golden tasks were already open, and the stopping rule's verdict behind it."""

    items: list[str]
    strategy: str
    already_open: int
    wanted: int
    payoff: PayOff

    def describe(self) -> str:
        if self.items:
            done = f"{len(self.items):,} items the model labels alone queued for experts ({self.strategy})"
        elif not self.payoff.pays_off:
            done = "nothing queued for experts"
        elif self.already_open >= self.wanted:
            done = f"{self.already_open:,} golden items still wait for experts, none added"
        else:
            done = "nothing queued for experts: routing leaves no item to the model alone"
        return f"{done}; {self.payoff.describe()}"


def buy_golden(ctx: Context) -> Purchase | None:
    """``learning.buy_golden``: while more golden items would pay off (:func:`learning_status`:
    one more label saves more than an expert's price and successive models still change),
    keep that many items outside the people's queue (routed to the model, ranked by the
    strategy) waiting for experts; their answers make them golden, so the next model learns
    from them. Open golden tasks count towards the number, so reruns top the queue up rather
    than pile onto it. ``None`` when it is off or no learning curve was measured yet."""
    wanted = ctx.config.learning.buy_golden
    status = learning_status(ctx) if wanted else None
    if status is None:
        return None
    already = expert_queue_counts(ctx.store)["golden"]
    picked: list[str] = []
    name = status.strategy
    pool = _candidates(ctx, accepted_only=True) if status.payoff.pays_off and already < wanted else []
    if pool:
        picked, name = _pick(ctx, pool, wanted - already)
        with ctx.store.write() as session:
            enqueue_expert(session, picked, "golden")
    return Purchase(picked, name, already, wanted, status.payoff)


#: The formats a suggestions file is written in, by extension (no Parquet: experts fill it in).
SUGGESTION_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
NO_SUGGESTIONS = "Nothing was written and no item was queued."


def _suggestion_format(path: Path) -> str:
    """The format of a suggestions file, from its extension; refused, before any work, when the
    extension is not one of :data:`SUGGESTION_FORMATS` or the path cannot take a file."""
    suffix = path.suffix.lower()
    if suffix not in SUGGESTION_FORMATS:
        got = f"the extension {suffix!r}" if suffix else "no extension"
        raise DataError(
            [
                Problem(
                    str(path), None, None, f"suggestions are written as .csv or .jsonl; the name has {got}"
                )
            ],
            outcome=NO_SUGGESTIONS,
        )
    writable_file(path, outcome=NO_SUGGESTIONS)
    return SUGGESTION_FORMATS[suffix]


def _write_suggestions(ctx: Context, path: Path, fmt: str, ids: list[str]) -> None:
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
    with (
        atomic_write(path, outcome=NO_SUGGESTIONS) as tmp,
        tmp.open("w", encoding="utf-8", newline="") as handle,
    ):
        if fmt == "jsonl":
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
            return
        # Items imported from different files have different input columns: every column of
        # any of them, empty where an item has none (an import back reads it as the same item).
        columns = list({c: None for row in rows for c in row if c != GOLD_COLUMN}) + [GOLD_COLUMN]
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
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

#: The ledger kind of a model's measured learning curve and stop-set labels.
LEARNING_RUN = "learning"
_FIGURES = ("accuracy", "accuracy_low", "accuracy_high", "auroc", "auroc_low", "auroc_high")


@dataclass
class LearningStatus:
    """The learning curve, the model it is for, the strategy in use and the stopping rule's
    verdict (``compared``: the stop-set items the last versions were compared on)."""

    strategy: str
    curve: list[CurvePoint]
    payoff: PayOff
    stop_set: int
    versions: int
    model: str = ""
    compared: int = 0

    def describe(self) -> str:
        return self.payoff.describe()


def stop_set(ctx: Context) -> list[str]:
    """The fixed unlabelled stop set: ``learning.stop_sample`` regular items drawn (seeded)
    the first time it is asked for and kept in the ledger, so every later model is compared
    on the same items (the pipeline hands it to the labeling stage, which predicts it with
    every new version of a trainable labeler)."""
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
    versions all predicted (oldest first), and how many versions there are. A version's
    predictions apart from its work (``STOP_SET_SUFFIX``) count as its own."""
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
        by_version.setdefault(v.removesuffix(STOP_SET_SUFFIX), {})[item_id] = label
    versions = list(by_version)  # in order of their first prediction
    last = versions[-ctx.config.learning.stop_window :]
    common = [i for i in items if all(i in by_version[v] for v in last)]
    return [[by_version[v][i] for i in common] for v in last] if common else [], len(versions)


def curve_model(ctx: Context) -> str:
    """Which model the learning curve measures, in words: the project's embedding labeler
    itself, or for any other labeler the embedding head refitted on the same labels, a proxy
    (refitting an LLM or a fine-tuned encoder on every subsample would cost too much)."""
    configs = ctx.config.labeler
    if len(configs) == 1 and isinstance(configs[0], EmbeddingLabelerConfig):
        return f"labeler {configs[0].label_name!r} (its logistic head refitted on fewer labels)"
    names = ", ".join(repr(c.label_name) for c in configs)
    return f"embedding head on the same labels (a proxy for {names})"


def _key(ctx: Context, version: str) -> dict[str, Any]:
    """What a recorded measurement holds for: a change to any of it voids the record."""
    cfg = ctx.config.learning
    return {
        "model_version": version,
        "seed": cfg.seed,
        "stop_window": cfg.stop_window,
        "confidence": ctx.config.audit.confidence,
    }


def _recorded(ctx: Context, key: dict[str, Any]) -> dict[str, Any] | None:
    with ctx.store.read() as session:
        for config in session.scalars(
            select(Run.config).where(Run.kind == LEARNING_RUN).order_by(Run.id.desc())
        ):
            if all(config.get(k) == v for k, v in key.items()):
                return dict(config)
    return None


def record_learning(ctx: Context) -> bool:
    """Measure the current model's learning curve and its stop-set labels next to the earlier
    versions' once, when it is trained (the pipeline calls this after calibration), and keep
    them in the ledger, so :func:`learning_status` only reads them. Returns whether it
    measured (not when already recorded, before a model, or with too few golden items)."""
    version = current_model_version(ctx)
    if version is None or task_type(ctx.config.task.type).list_valued:
        return False  # the learning curve reads one label per item (multi_label: issue 14)
    key = _key(ctx, version)
    if _recorded(ctx, key) is not None:
        return False
    try:
        train, gold = learned_from(ctx)
    except LabelerError:
        return False
    from duolabel.labelers import encoder_for

    encoder = encoder_for(ctx)
    labels = ctx.config.task.label_names
    regularization = getattr(encoder, "regularization", 1.0)
    curve = learning_curve(
        encoder.encode(train)[0],
        np.array([labels.index(g) for g in gold]),
        n_labels=len(labels),
        # A head whose strength is chosen by cross-validation has no single value: C = 1.
        regularization=float(regularization) if isinstance(regularization, int | float) else 1.0,
        confidence=ctx.config.audit.confidence,
        seed=ctx.config.learning.seed,
    )
    items = stop_set(ctx)
    history, versions = _history(ctx, version, items)
    record = {
        **key,
        "model": curve_model(ctx),
        # JSON has no NaN (PostgreSQL refuses it): an undefined figure is stored as null.
        "curve": [{k: None if v != v else v for k, v in asdict(p).items()} for p in curve],
        "history": history,
        "versions": versions,
        "stop_set": len(items),
    }
    with ctx.store.write() as session:
        session.add(Run(kind=LEARNING_RUN, status="done", config=record))
    return True


def learning_status(ctx: Context) -> LearningStatus | None:
    """The learning curve, the strategy and whether more golden items would pay off, from
    what :func:`record_learning` measured when the current model was trained (only the items
    left and the prices are read now); ``None`` before that."""
    version = current_model_version(ctx)
    record = None if version is None else _recorded(ctx, _key(ctx, version))
    if record is None:
        return None
    curve = [
        CurvePoint(int(p["labels"]), *(float("nan") if p[k] is None else float(p[k]) for k in _FIGURES))
        for p in record["curve"]
    ]
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
    history = record["history"]
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
    return LearningStatus(
        cfg.strategy,
        curve,
        payoff,
        record["stop_set"],
        record["versions"],
        record["model"],
        len(history[0]) if history else 0,
    )
