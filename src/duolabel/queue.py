"""The human queue: leasing routed items to annotators and taking their answers.

An item waits for people when its row in ``routes`` says ``decision == "humans"``; it
needs ``routes.overlap`` answers from different annotators. A slot is taken by an answer
or by an unexpired lease, so an item is never handed out more often than it needs.

Concurrency: every pick-and-lease and every answer runs in one ``store.write()``
transaction. On SQLite that transaction holds the database write lock from its first
statement (``BEGIN IMMEDIATE``), so the whole queue is serialised. On PostgreSQL the
chosen item's ``routes`` row is locked with ``SELECT ... FOR UPDATE`` and the slot count is
read again after the lock is held, so two servers cannot both fill the last slot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Select, and_, case, exists, func, select
from sqlalchemy.orm import Session

from duolabel.errors import ProjectError
from duolabel.store import Annotation, Annotator, Assignment, Item, Route, Store
from duolabel.store.tables import utcnow

__all__ = [
    "Task",
    "answers_given",
    "lease_task",
    "next_task",
    "queue_counts",
    "submit_answer",
]

HUMANS = "humans"
# Each failed re-check means another writer just took that item; a few tries are plenty
# before the next call (a page reload) tries again.
_MAX_TRIES = 20


@dataclass(frozen=True)
class Task:
    """An item leased to one annotator until ``lease_expires`` (UTC)."""

    assignment_id: int
    item: Item
    lease_expires: datetime


def next_task(store: Store, annotator_id: int, *, lease_minutes: float) -> Item | None:
    """The item this annotator should label now, leased to them; ``None`` when there is none."""
    task = lease_task(store, annotator_id, lease_minutes=lease_minutes)
    return task.item if task is not None else None


def lease_task(store: Store, annotator_id: int, *, lease_minutes: float) -> Task | None:
    """Like :func:`next_task`, with the assignment the answer must be submitted against.

    The annotator's own unexpired lease comes back first (a page reload shows the same
    item). Otherwise the first item by import order that still has a free slot and that
    this annotator has never been given is leased for ``lease_minutes``. Annotators who
    are not active get nothing.
    """
    if not lease_minutes > 0:
        raise ProjectError(f"lease_minutes must be positive, got {lease_minutes}")
    now = utcnow()
    with store.write() as session:
        # Locking the annotator serialises two tabs of one person on PostgreSQL, so they
        # cannot lease two different items at once. NO KEY UPDATE, so that foreign-key
        # checks of concurrent inserts (answers by this person) are not blocked.
        annotator = session.get(Annotator, annotator_id, with_for_update={"key_share": True})
        if annotator is None or annotator.status != "active":
            return None
        own = session.scalar(
            select(Assignment)
            .where(
                Assignment.annotator_id == annotator_id,
                Assignment.kind == "regular",
                Assignment.state == "leased",
                Assignment.lease_expires >= now,
            )
            .order_by(Assignment.id)
            .limit(1)
        )
        if own is not None:
            item = session.get(Item, own.item_id)
            assert item is not None  # items.id is a foreign key
            return Task(own.id, item, own.lease_expires)

        tried: list[str] = []
        for _ in range(_MAX_TRIES):
            query = _open_items(annotator_id, now).order_by(Item.seq).limit(1)
            if tried:
                query = query.where(Route.item_id.not_in(tried))
            item_id = session.scalar(query)
            if item_id is None:
                return None
            session.scalar(select(Route.item_id).where(Route.item_id == item_id).with_for_update())
            # Read again under the lock: another writer may have taken the slot meanwhile.
            still_open = _open_items(annotator_id, now).where(Route.item_id == item_id)
            if session.scalar(still_open) is None:
                tried.append(item_id)
                continue
            return _lease(session, item_id, annotator_id, now, timedelta(minutes=lease_minutes))
    return None


def submit_answer(
    store: Store,
    annotator_id: int,
    assignment_id: int,
    label: str,
    *,
    labels: list[str],
    seconds: float | None,
) -> Annotation:
    """Record an annotator's answer to their leased assignment and close the assignment.

    Raises ``ProjectError`` (and writes nothing) when the label is not one of ``labels``,
    the assignment is not this annotator's, or it is no longer leased. A lease that ran
    out may still be answered as long as nobody else has been given its slot.
    """
    if label not in labels:
        raise ProjectError(f"label {label!r} is not one of {', '.join(map(repr, labels))}")
    if seconds is not None and not (math.isfinite(seconds) and seconds >= 0):
        raise ProjectError(f"seconds must be a non-negative number, got {seconds}")
    with store.write() as session:
        assignment = session.get(Assignment, assignment_id)
        if assignment is None or assignment.annotator_id != annotator_id:
            # The same message whether the id exists or not: ids of others stay private.
            raise ProjectError(f"assignment {assignment_id} is not one of yours")
        # Same lock order as lease_task (route, then assignment) so the two cannot deadlock.
        session.scalar(select(Route.item_id).where(Route.item_id == assignment.item_id).with_for_update())
        session.refresh(assignment, with_for_update=True)
        annotator = session.get(Annotator, annotator_id)
        if annotator is None or annotator.status != "active":
            raise ProjectError("your account is not active; answers are not accepted")
        if assignment.state != "leased":
            reason = {
                "done": "was already answered",
                "expired": "expired and the item was given to someone else",
            }.get(assignment.state, f"is {assignment.state}")
            raise ProjectError(f"assignment {assignment_id} {reason}; load the next item")
        answered = session.scalar(
            select(Annotation.id).where(
                Annotation.item_id == assignment.item_id, Annotation.annotator_id == annotator_id
            )
        )
        if answered is not None:
            raise ProjectError(f"item '{assignment.item_id}' was already answered by you")
        annotation = Annotation(
            item_id=assignment.item_id,
            annotator_id=annotator_id,
            label=label,
            seconds=seconds,
            assignment_id=assignment.id,
        )
        session.add(annotation)
        assignment.state = "done"
        session.flush()
    return annotation


def answers_given(store: Store, annotator_id: int) -> int:
    """How many answers this annotator has given."""
    with store.read() as session:
        count = session.scalar(
            select(func.count()).select_from(Annotation).where(Annotation.annotator_id == annotator_id)
        )
    return int(count or 0)


def queue_counts(store: Store) -> dict[str, int]:
    """Progress of the human queue.

    ``routed``: items routed to people; ``waiting``: those still short of their overlap;
    ``leased``: unexpired leases out now; ``answers``: answers given to routed items;
    ``complete``: items with all the answers they need.
    """
    now = utcnow()
    answers = _answer_count(Route.item_id)
    with store.read() as session:
        routed, complete, given = session.execute(
            select(
                func.count(),
                func.coalesce(func.sum(case((answers >= Route.overlap, 1), else_=0)), 0),
                func.coalesce(func.sum(answers), 0),
            ).where(Route.decision == HUMANS)
        ).one()
        leased = session.scalar(
            select(func.count())
            .select_from(Assignment)
            .join(Route, Route.item_id == Assignment.item_id)
            .where(
                Route.decision == HUMANS,
                Assignment.state == "leased",
                Assignment.lease_expires >= now,
            )
        )
    return {
        "routed": int(routed),
        "waiting": int(routed) - int(complete),
        "leased": int(leased or 0),
        "answers": int(given),
        "complete": int(complete),
    }


# -- the rule, in SQL ------------------------------------------------------


def _answer_count(item_id: ColumnElement[str]) -> ColumnElement[int]:
    return select(func.count()).select_from(Annotation).where(Annotation.item_id == item_id).scalar_subquery()


def _lease_count(item_id: ColumnElement[str], now: datetime) -> ColumnElement[int]:
    return (
        select(func.count())
        .select_from(Assignment)
        .where(
            Assignment.item_id == item_id,
            Assignment.state == "leased",
            Assignment.lease_expires >= now,
        )
        .scalar_subquery()
    )


def _open_items(annotator_id: int, now: datetime) -> Select[tuple[str]]:
    """Routed items with a free slot that this annotator has never been given."""
    seen_answer = exists().where(Annotation.item_id == Route.item_id, Annotation.annotator_id == annotator_id)
    seen_lease = exists().where(Assignment.item_id == Route.item_id, Assignment.annotator_id == annotator_id)
    return (
        select(Route.item_id)
        .join(Item, Item.id == Route.item_id)
        .where(
            Route.decision == HUMANS,
            _answer_count(Route.item_id) + _lease_count(Route.item_id, now) < Route.overlap,
            ~seen_answer,
            ~seen_lease,
        )
    )


def _lease(session: Session, item_id: str, annotator_id: int, now: datetime, length: timedelta) -> Task:
    assignment = Assignment(
        item_id=item_id,
        annotator_id=annotator_id,
        kind="regular",
        state="leased",
        lease_expires=now + length,
    )
    session.add(assignment)
    session.flush()
    _retire_displaced_leases(session, item_id, now)
    item = session.get(Item, item_id)
    assert item is not None
    return Task(assignment.id, item, assignment.lease_expires)


def _retire_displaced_leases(session: Session, item_id: str, now: datetime) -> None:
    """Mark "expired" the run-out leases whose slot has now gone to someone else.

    A run-out lease that nobody needed stays "leased", so its holder may still answer.
    """
    route = session.get(Route, item_id)
    assert route is not None
    taken = (
        session.scalar(
            select(_answer_count(Route.item_id) + _lease_count(Route.item_id, now)).where(
                Route.item_id == item_id
            )
        )
        or 0
    )
    stale = session.scalars(
        select(Assignment)
        .where(
            and_(
                Assignment.item_id == item_id,
                Assignment.state == "leased",
                Assignment.lease_expires < now,
            )
        )
        .order_by(Assignment.lease_expires, Assignment.id)
    ).all()
    for assignment in stale[: max(0, taken + len(stale) - route.overlap)]:
        assignment.state = "expired"
