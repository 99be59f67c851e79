"""What labelers learn from, read from the store: the golden items (checked against the
minimum per label) and the regular items whose final label came from people.

Read-only queries shared by the labeling and calibration stages, so neither stage imports
the other.
"""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select

from duolabel.context import Context
from duolabel.errors import LabelerError
from duolabel.labelers.base import TextItem
from duolabel.store import FinalLabel, Item

__all__ = ["golden_items", "human_labelled_items"]


def golden_items(ctx: Context) -> tuple[list[TextItem], list[str]]:
    """The golden items and their gold labels, checked against the minimum per label."""
    with ctx.store.read() as session:
        rows = session.execute(
            select(Item.id, Item.text, Item.content_hash, Item.gold_label)
            .where(Item.role == "golden", Item.gold_label.is_not(None))
            .order_by(Item.seq)
        ).all()
    items = [TextItem(r.id, r.text, r.content_hash) for r in rows]
    gold = [r.gold_label for r in rows]
    need = ctx.config.calibration.min_golden_per_label
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
