"""Promoting a regular item to a golden one: shared by the expert queue (an expert answers a
suggested item) and imports (a file of gold labels for items already in the project)."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from duolabel.store.tables import ExpertTask, FinalLabel, Item, Route, utcnow

__all__ = ["make_golden"]


def make_golden(
    session: Session,
    item_id: str,
    label: str,
    *,
    source: str,
    expert: str | None = None,
    annotation_id: int | None = None,
) -> bool:
    """Turn a regular item into a golden item with gold label ``label`` (from ``source``).

    Inside the caller's transaction. The item leaves the people's queue (its route is
    deleted, so nobody is given it again; a lease already out may still be answered, and
    that answer measures people on a golden item); its final label becomes the gold label;
    its open expert tasks are closed (answered by ``annotation_id`` when an expert gave it).
    Its old predictions stay: they are in-sample predictions of a regular item, and the next
    model version, trained with this label, predicts it out of fold like every golden item.
    Returns False, changing nothing, for an item that is not regular (a control, or golden).
    """
    item = session.get(Item, item_id, with_for_update=True)
    if item is None or item.role != "regular":
        return False
    item.role, item.gold_label, item.gold_source = "golden", label, source
    session.execute(delete(Route).where(Route.item_id == item_id))
    session.execute(delete(FinalLabel).where(FinalLabel.item_id == item_id))
    session.add(FinalLabel.from_expert(item_id, label, expert=expert))
    for task in session.scalars(
        select(ExpertTask).where(ExpertTask.item_id == item_id, ExpertTask.state == "open")
    ):
        task.state, task.annotation_id, task.done_at = "done", annotation_id, utcnow()
    session.flush()
    return True
