"""Human review of synthetic items (issue 16, item 2): a reviewer (expert or admin) sees
one synthetic item at a time with its intended label and taxonomy leaf and accepts or
rejects it. The decision is stored on its ``synthetic_items`` row; a rejected item never
trains a labeler (:func:`duolabel.training_data.synthetic_training_items` leaves it out).
The acceptance rate per label and per taxonomy leaf goes to the synthetic summary
(``duolabel status`` and ``duolabel report``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update

from duolabel.context import Context
from duolabel.errors import ProjectError, shown
from duolabel.store import Item, SyntheticItem
from duolabel.store.tables import utcnow

__all__ = ["DECISIONS", "ToReview", "acceptance", "next_to_review", "review_synthetic"]

DECISIONS: tuple[str, ...] = ("accepted", "rejected")


@dataclass(frozen=True)
class ToReview:
    """One synthetic item waiting for a review, and how many wait in all (itself included)."""

    item_id: str
    text: str
    label: str
    mode: str
    leaf: str | None
    judged_label: str | None
    waiting: int


def next_to_review(ctx: Context) -> ToReview | None:
    """The oldest synthetic item nobody has reviewed yet; None when all are reviewed.

    Examples
    --------
    >>> import duolabel, tempfile
    >>> next_to_review(duolabel.init_project(tempfile.mkdtemp())) is None
    True
    """
    waiting = SyntheticItem.review.is_(None)
    with ctx.store.read() as session:
        count = session.scalar(select(func.count()).select_from(SyntheticItem).where(waiting)) or 0
        row = session.execute(
            select(Item.id, Item.text, SyntheticItem.label, SyntheticItem.mode, SyntheticItem.leaf,
                   SyntheticItem.judged_label)
            .join(SyntheticItem, SyntheticItem.item_id == Item.id)
            .where(waiting)
            .order_by(Item.seq)
            .limit(1)
        ).first()  # fmt: skip
    if row is None:
        return None
    return ToReview(row.id, row.text, row.label, row.mode, row.leaf, row.judged_label, count)


def review_synthetic(ctx: Context, reviewer_id: int, item_id: str, decision: str) -> None:
    """Store ``decision`` (accepted / rejected) on synthetic item ``item_id``; a later
    decision replaces an earlier one.

    Examples
    --------
    >>> import duolabel, tempfile
    >>> review_synthetic(duolabel.init_project(tempfile.mkdtemp()), 1, "x", "maybe")
    Traceback (most recent call last):
    ...
    duolabel.errors.ProjectError: decision 'maybe': one of accepted, rejected
    """
    if decision not in DECISIONS:
        raise ProjectError(f"decision {shown(decision)}: one of {', '.join(DECISIONS)}")
    with ctx.store.write() as session:
        done = session.execute(
            update(SyntheticItem)
            .where(SyntheticItem.item_id == item_id)
            .values(review=decision, reviewed_by=reviewer_id, reviewed_at=utcnow())
        )
        if not getattr(done, "rowcount", 0):
            raise ProjectError(f"no synthetic item {shown(item_id)}; reload the review page")


def acceptance(rows: list[Any]) -> dict[str, Any]:
    """Reviewed, accepted and the acceptance rate per label and per (label, leaf), from rows
    with ``label``, ``leaf`` and ``review``; labels and leaves nobody reviewed are left out.

    Examples
    --------
    >>> from types import SimpleNamespace as R
    >>> rows = [R(label="a", leaf="x", review="accepted"), R(label="a", leaf="x", review="rejected"),
    ...         R(label="a", leaf=None, review=None)]
    >>> acceptance(rows)["by_label"]
    [{'label': 'a', 'reviewed': 2, 'accepted': 1, 'rate': 0.5}]
    """
    reviewed = [r for r in rows if r.review in DECISIONS]
    by_label: Counter[str] = Counter(r.label for r in reviewed)
    ok_label: Counter[str] = Counter(r.label for r in reviewed if r.review == "accepted")
    by_leaf: Counter[tuple[str, str]] = Counter((r.label, r.leaf) for r in reviewed if r.leaf)
    ok_leaf: Counter[tuple[str, str]] = Counter(
        (r.label, r.leaf) for r in reviewed if r.leaf and r.review == "accepted"
    )
    return {
        "reviewed": len(reviewed),
        "accepted": sum(ok_label.values()),
        "by_label": [
            {"label": label, "reviewed": n, "accepted": ok, "rate": round(ok / n, 4)}
            for label, n in by_label.items()
            for ok in [ok_label[label]]
        ],
        "by_leaf": [
            {
                "label": label,
                "leaf": leaf,
                "reviewed": n,
                "accepted": ok_leaf[(label, leaf)],
                "rate": round(ok_leaf[(label, leaf)] / n, 4),
            }
            for (label, leaf), n in sorted(by_leaf.items())
        ],  # fmt: skip
    }
