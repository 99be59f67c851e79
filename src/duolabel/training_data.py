"""What labelers learn from, read from the store: the golden items (checked against the
minimum per label), the regular items whose final label came from people, and for a
distillation student the teacher's confident labels.

Read-only queries shared by the labeling and calibration stages, so neither stage imports
the other.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import or_, select

from duolabel.config import LabelerSettings, RoutingConfig
from duolabel.context import Context
from duolabel.core.multilabel import answer_sets
from duolabel.core.spans import parse_spans
from duolabel.core.tasks import task_type
from duolabel.errors import LabelerError
from duolabel.labelers.base import TextItem
from duolabel.store import FinalLabel, Item, Prediction, Run, SyntheticItem

__all__ = [
    "NO_CALIBRATION",
    "fit_options",
    "STOP_SET_SUFFIX",
    "golden_advice",
    "golden_items",
    "human_labelled_items",
    "is_student",
    "learned_from",
    "routes_by_sample",
    "student_items",
    "synthetic_training_items",
    "teacher_version",
    "without_golden",
]

#: Appended to a model version for its predictions on the learning stage's stop set that it
#: does not label otherwise (items of other batches). Routing, calibration, aggregation and
#: export select the version itself, so these rows never decide anything; the stopping rule
#: reads both and so compares every version on the same items.
STOP_SET_SUFFIX = "+stop"


def golden_items(ctx: Context, *, minimum: bool = True) -> tuple[list[TextItem], list[str]]:
    """The golden items and their gold labels, checked against the minimum per label (unless
    ``minimum`` is False: whatever golden items exist, for synthetic data's cold start)."""
    with ctx.store.read() as session:
        rows = session.execute(
            select(Item.id, Item.text, Item.content_hash, Item.gold_label)
            .where(Item.role == "golden", Item.gold_label.is_not(None))
            .order_by(Item.seq)
        ).all()
    items = [TextItem(r.id, r.text, r.content_hash) for r in rows]
    gold = [r.gold_label for r in rows]
    need = ctx.config.calibration.min_golden_per_label if minimum else 0
    # A list answer (multi_label) counts once for each label in it.
    if ctx.config.task.type == "spans":  # each gold span counts for its label
        counts = Counter(label for answer in gold for _, _, label in parse_spans(answer))
    elif task_type(ctx.config.task.type).list_valued:
        counts = Counter(label for answer in answer_sets(gold) for label in answer)
    else:
        counts = Counter(gold)
    short = [
        f"'{label}' has {counts.get(label, 0)}"
        for label in ctx.config.task.label_names
        if counts.get(label, 0) < need
    ]
    if short:
        raise LabelerError(
            f"too few golden items to train and calibrate ({'; '.join(short)}; need at least {need} "
            "per label): add some with 'duolabel import FILE --role golden --gold COLUMN'"
        )
    return items, gold


def human_labelled_items(ctx: Context) -> tuple[list[TextItem], list[str]]:
    """Regular items whose final label came from people: more training data for the next batch."""
    with ctx.store.read() as session:
        rows = session.execute(
            select(Item.id, Item.text, Item.content_hash, FinalLabel.label)
            .join(FinalLabel, FinalLabel.item_id == Item.id)
            # Control items are known answers for checking people, never training data.
            .where(Item.role == "regular", FinalLabel.source.in_(["humans", "fused", "expert"]))
            .order_by(Item.seq)
        ).all()
    return [TextItem(r.id, r.text, r.content_hash) for r in rows], [r.label for r in rows]


def synthetic_training_items(ctx: Context, real: int) -> tuple[list[TextItem], list[str]]:
    """The synthetic items a trainable labeler learns from besides ``real`` real ones, with
    their intended labels: all of them, or, with ``synthetic.share``, at most that share of
    the training items (taken label by label in turn, oldest first, so the labels stay
    balanced). Items a reviewer rejected are left out. Training data only: they are never
    predicted, calibrated or routed.

    Examples
    --------
    >>> import duolabel, tempfile
    >>> synthetic_training_items(duolabel.init_project(tempfile.mkdtemp()), 10)
    ([], [])
    """
    share = ctx.config.synthetic.share
    with ctx.store.read() as session:
        rows = session.execute(
            select(Item.id, Item.text, Item.content_hash, SyntheticItem.label)
            .join(SyntheticItem, SyntheticItem.item_id == Item.id)
            .where(Item.role == "synthetic")
            # a reviewer's reject is final: such an item never trains
            .where(or_(SyntheticItem.review.is_(None), SyntheticItem.review != "rejected"))
            .order_by(Item.seq)
        ).all()
    if share is not None and share < 1.0:
        # share = s / (s + real)  =>  s = share * real / (1 - share)
        limit = int(share * real / (1.0 - share))
        queues = {label: [r for r in rows if r.label == label] for label in ctx.config.task.label_names}
        taken: list[Any] = []
        while len(taken) < limit and any(queues.values()):
            for queue in queues.values():
                if queue and len(taken) < limit:
                    taken.append(queue.pop(0))
        order = {r.id: i for i, r in enumerate(rows)}
        rows = sorted(taken, key=lambda r: order[r.id])
    return [TextItem(r.id, r.text, r.content_hash) for r in rows], [r.label for r in rows]


def is_student(ctx: Context, cfg: LabelerSettings) -> bool:
    """Whether ``cfg`` is the project's distillation student (its name is no labeler's)."""
    distill = ctx.config.distill
    return distill.teacher is not None and cfg.label_name == distill.student.label_name


def teacher_version(ctx: Context) -> str | None:
    """The distillation teacher's model version: that of its latest finished labeling run."""
    teacher = ctx.config.distill.teacher
    with ctx.store.read() as session:
        for run in session.scalars(
            select(Run).where(Run.kind == "label", Run.status == "done").order_by(Run.id.desc())
        ):
            if run.config.get("labeler_name") == teacher:
                return str(run.config["model_version"])
    return None


def student_items(ctx: Context) -> tuple[list[TextItem], list[str]]:
    """What the student learns from besides the golden items: people's labels, then the
    teacher's labels whose calibrated confidence reaches ``distill.min_confidence`` on the
    other regular items (a person's label always wins over the teacher's)."""
    items, labels = human_labelled_items(ctx)
    version = teacher_version(ctx)
    if version is None:
        return items, labels
    seen = {item.id for item in items}
    with ctx.store.read() as session:
        rows = session.execute(
            select(Item.id, Item.text, Item.content_hash, Prediction.label)
            .join(Prediction, Prediction.item_id == Item.id)
            .where(Item.role == "regular", Prediction.labeler == ctx.config.distill.teacher)
            .where(Prediction.model_version == version, Prediction.abstained.is_(False))
            .where(Prediction.confidence >= ctx.config.distill.min_confidence)
            .order_by(Item.seq)
        ).all()
    taught = [r for r in rows if r.id not in seen]
    return items + [TextItem(r.id, r.text, r.content_hash) for r in taught], labels + [
        r.label for r in taught
    ]


def learned_from(ctx: Context) -> tuple[list[TextItem], list[str]]:
    """What a trainable labeler learns from: the golden items (checked against the minimum
    per label, ``LabelerError`` when short) and then the items people labelled."""
    items, gold = golden_items(ctx)
    people, people_gold = human_labelled_items(ctx)
    return items + people, gold + people_gold


def fit_options(ctx: Context, model: object) -> dict[str, Any]:
    """The keywords ``model.fit`` takes beyond the training items, the same wherever the
    model is fitted (the labeling and the distillation stage), so its version is too.

    A self-training labeler (``uses_unlabeled``) draws pseudo-labels from the project's
    regular items: all of them, whatever batch is labelled, so its version does not depend
    on the run.
    """
    if not getattr(model, "uses_unlabeled", False):
        return {}
    with ctx.store.read() as session:
        rows = session.execute(
            select(Item.id, Item.text, Item.content_hash).where(Item.role == "regular").order_by(Item.seq)
        )
        return {"unlabeled": [TextItem(r.id, r.text, r.content_hash) for r in rows]}


def routes_by_sample(routing: RoutingConfig) -> bool:
    """Whether these settings certify the routing threshold from a sample of the items.

    Examples
    --------
    >>> from duolabel.config import RoutingConfig
    >>> routes_by_sample(RoutingConfig(guarantee="dataset", dataset_source="sample"))
    True
    >>> routes_by_sample(RoutingConfig(dataset_source="sample"))  # accepted-items guarantee
    False
    """
    return routing.mode == "target" and routing.guarantee == "dataset" and routing.dataset_source == "sample"


#: What ``duolabel run`` says instead of calibrating a project that routes by a sample and has
#: no golden items. A calibration fitted on the sampled items' labels and then certified on
#: the same items would pick its threshold knowing them; the certificate holds for any score
#: fixed before the sample's labels are read, so the labeler's own scores are used as they are.
NO_CALIBRATION = (
    "skipped, the project has no golden items, so routing uses the labeler's own scores "
    "(the sample certificate holds whatever the scores; import golden items to calibrate them)"
)


def without_golden(ctx: Context) -> bool:
    """Whether the project routes by a sample and has no golden item with its gold label: the
    case where labeling needs no golden item (a labeler that needs no training) and
    calibration is skipped (:data:`NO_CALIBRATION`)."""
    if not routes_by_sample(ctx.config.routing):
        return False
    with ctx.store.read() as session:
        golden = session.scalar(
            select(Item.id).where(Item.role == "golden", Item.gold_label.is_not(None)).limit(1)
        )
    return golden is None


def golden_advice(backend: str, *, trainable: bool) -> str:
    """What to do when a labeler lacks golden items (appended to the error that says so).

    Examples
    --------
    >>> golden_advice("embedding", trainable=True)[:53]
    "the 'embedding' labeler trains on golden items; witho"
    >>> golden_advice("llama", trainable=False)[:40]
    'or, to label and route without golden it'
    """
    sample = (
        "set routing.guarantee: dataset and routing.dataset_source: sample (people label a sample "
        "first and certify the model's labels from it)"
    )
    if trainable:
        return (
            f"the {backend!r} labeler trains on golden items; without them, use a labeler that "
            "needs no training (llama or openai zero-shot, or backend: external with "
            f"'duolabel import-predictions') and {sample}"
        )
    return f"or, to label and route without golden items, {sample}"
