"""Assignments: the steps every queue shares (crowd work, the exam, the expert queue).

An assignment is one item handed to one person, as a lease that runs out at
``lease_expires``; answering it records an ``Annotation`` and closes it. The crowd queue
(:mod:`duolabel.people.leases`), the exam (:mod:`duolabel.people.exam`) and the expert
queue (:mod:`duolabel.people.experts`) lease and answer through these functions, so the
three can never disagree on what a lease or an answer is. Every function here runs inside
the caller's ``store.write()`` transaction, after the caller took its locks.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, select
from sqlalchemy.orm import Session

from duolabel.core.tasks import AnswerError, SingleLabel, TaskType
from duolabel.errors import ProjectError, shown
from duolabel.store import Annotation, Assignment, Item, Route
from duolabel.store.tables import utcnow

__all__ = [
    "EXPERT_REASONS",
    "GOLD_ROLES",
    "HUMANS",
    "PEOPLE_SOURCES",
    "MAX_COMMENT_CHARS",
    "MAX_ID",
    "MAX_TRIES",
    "WORK_KINDS",
    "Note",
    "Task",
    "check_answer",
    "check_lease",
    "gold_items",
    "new_lease",
    "own_assignment",
    "own_lease",
    "record_answer",
    "why_closed",
]

HUMANS = "humans"  # the routes.decision of an item that waits for people
# final_labels.source of a label made from people's answers (aggregation); undoing one of
# those answers takes the label back
PEOPLE_SOURCES = ("humans", "fused")
# escalated by routing, drawn for an audit, or suggested as a golden item (the answer becomes
# its gold label: duolabel golden suggest)
EXPERT_REASONS = ("escalated", "audit", "golden")
GOLD_ROLES = ("golden", "control")
WORK_KINDS = ("regular", "control")  # what an active annotator is given; paid answers
# The largest id a row can have (a signed 64-bit integer on every store): a larger one from a
# request is nobody's, rather than an overflow deep in the database driver.
MAX_ID = 2**63 - 1
# Each failed re-check means another writer just took that item; a few tries are plenty
# before the next call (a page reload) tries again.
MAX_TRIES = 20


@dataclass(frozen=True)
class Task:
    """An item leased to one annotator until ``lease_expires`` (UTC).

    ``kind`` is for the server only (regular, control, exam, audit, escalated): pages and
    API answers never show it, so a control looks like any other task.
    """

    assignment_id: int
    item: Item
    lease_expires: datetime
    kind: str = "regular"


def check_lease(lease_minutes: float) -> None:
    """Raise ``ProjectError`` unless ``lease_minutes`` is positive."""
    if not lease_minutes > 0:
        raise ProjectError(f"lease_minutes must be positive, got {lease_minutes}")


def check_answer(
    label: str | list[str], labels: Sequence[str], seconds: float | None, task_type: TaskType | None = None
) -> str:
    """The answer as stored: ``ProjectError`` unless ``label`` is a valid answer for the task type
    (default ``single_label``: one of ``labels``; ``multi_label`` also takes a list) and
    ``seconds`` is unknown or >= 0."""
    try:
        answer = (task_type or SingleLabel()).check_answer(label, labels)
    except AnswerError as exc:
        raise ProjectError(f"label {shown(exc.got)} is not {exc.expected}") from None
    if seconds is not None and not (math.isfinite(seconds) and seconds >= 0):
        raise ProjectError(f"seconds must be a non-negative number, got {seconds}")
    return answer


def check_answer_text(session: Session, task_type: TaskType | None, answer: str, item_id: str) -> None:
    """``ProjectError`` unless ``answer`` (as stored) fits the item's text, for a task type whose
    answers point into it (``spans``: offsets within the text); nothing for the others."""
    against_text = getattr(task_type, "check_against_text", None)
    if against_text is None:
        return
    try:
        against_text(answer, session.scalar(select(Item.text).where(Item.id == item_id)) or "")
    except AnswerError as exc:
        raise ProjectError(f"label {shown(exc.got)} is not {exc.expected}") from None


def why_closed(state: str) -> str:
    """Why an assignment in ``state`` can no longer be answered, as the end of a sentence."""
    return {
        "done": "was already answered",
        "expired": "expired and the item was given to someone else",
        "skipped": "was skipped",
    }.get(state, f"is {state}")


def own_assignment(
    session: Session, annotator_id: int, assignment_id: int, *, lock: bool = False
) -> Assignment:
    """The assignment ``assignment_id`` if it is this person's; else ``ProjectError``.

    With ``lock`` (PostgreSQL) its item's route and then the assignment itself are locked, the
    order in which a lease takes them (after the annotator's row), in two statements: the
    route is found through the assignment instead of after reading it (issue 12, the hot path).
    """
    assignment = None
    if 0 < assignment_id <= MAX_ID:
        if lock:
            session.execute(_route_of_assignment(), {"assignment_id": assignment_id})
            assignment = session.get(Assignment, assignment_id, with_for_update=True, populate_existing=True)
        else:
            assignment = session.get(Assignment, assignment_id)
    if assignment is None or assignment.annotator_id != annotator_id:
        # The same message whether the id exists or not: ids of others stay private.
        raise ProjectError(f"assignment {assignment_id} is not one of yours")
    return assignment


def own_lease(session: Session, annotator_id: int, kinds: Sequence[str], now: datetime) -> Task | None:
    """This person's oldest unexpired lease of one of ``kinds`` (a page reload shows it again)."""
    own = session.scalar(_own_lease_query(), {"annotator_id": annotator_id, "kinds": list(kinds), "now": now})
    if own is None:
        return None
    item = session.get(Item, own.item_id)
    assert item is not None  # items.id is a foreign key
    return Task(own.id, item, own.lease_expires, own.kind)


@functools.cache
def _route_of_assignment() -> Select[Any]:
    # FOR UPDATE OF routes: the assignment row is locked by the next statement, after the route.
    assignment_item = (
        select(Assignment.item_id).where(Assignment.id == bindparam("assignment_id")).scalar_subquery()
    )
    return select(Route.item_id).where(Route.item_id == assignment_item).with_for_update(of=Route)


@functools.cache
def _own_lease_query() -> Select[Any]:
    # Built once: every next-task asks it (issue 12, the web app's hot path).
    return (
        select(Assignment)
        .where(
            Assignment.annotator_id == bindparam("annotator_id"),
            Assignment.kind.in_(bindparam("kinds", expanding=True)),
            Assignment.state == "leased",
            Assignment.lease_expires >= bindparam("now"),
        )
        .order_by(Assignment.id)
        .limit(1)
    )


def new_lease(session: Session, item_id: str, annotator_id: int, kind: str, expires: datetime) -> Task:
    """Lease ``item_id`` to this person as a task of ``kind`` until ``expires``."""
    assignment = Assignment(
        item_id=item_id, annotator_id=annotator_id, kind=kind, state="leased", lease_expires=expires
    )
    session.add(assignment)
    session.flush()
    item = session.get(Item, item_id)
    assert item is not None
    return Task(assignment.id, item, assignment.lease_expires, kind)


def record_answer(
    session: Session,
    assignment: Assignment,
    annotator_id: int,
    label: str,
    seconds: float | None,
    kind: str,
    note: Note | None = None,
) -> Annotation:
    """Record the answer to a leased assignment (an ``Annotation`` of ``kind``) and close it.

    ``seconds`` ``None`` means the server's own measure: from the lease (``created_at``,
    which an undo resets) to now. The web app always passes ``None``, since a time the
    browser reports is whatever the client wants the fraud checks to see (issue 12).
    Raises ``ProjectError`` when the assignment is closed or this person already answered
    the item. ``note`` is what the person added: "unsure" and a comment.
    """
    if assignment.state != "leased":
        raise ProjectError(f"assignment {assignment.id} {why_closed(assignment.state)}; load the next item")
    answered = session.scalar(
        select(Annotation.id).where(
            Annotation.item_id == assignment.item_id, Annotation.annotator_id == annotator_id
        )
    )
    if answered is not None:
        raise ProjectError(f"item '{assignment.item_id}' was already answered by you")
    if seconds is None:
        seconds = max(0.0, (utcnow() - assignment.created_at).total_seconds())
    annotation = Annotation(
        item_id=assignment.item_id,
        annotator_id=annotator_id,
        label=label,
        kind=kind,
        seconds=seconds,
        assignment_id=assignment.id,
        unsure=True if note is not None and note.unsure else None,
        comment=note.comment if note is not None else None,
    )
    session.add(annotation)
    assignment.state = "done"
    session.flush()
    return annotation


MAX_COMMENT_CHARS = 2000


@dataclass(frozen=True)
class Note:
    """What a person may add to an answer: that they are unsure, and a comment.

    Examples
    --------
    >>> Note.of(unsure="1", comment="  two readings  ")
    Note(unsure=True, comment='two readings')
    >>> Note.of(unsure="", comment="")
    Note(unsure=False, comment=None)
    """

    unsure: bool = False
    comment: str | None = None

    @classmethod
    def of(cls, *, unsure: object = None, comment: str | None = None) -> Note:
        """A note from form or JSON values: ``unsure`` true-ish ("1", "on", True), the comment
        stripped (empty: none); ``ProjectError`` for a comment over 2,000 characters."""
        text = (comment or "").strip()
        if len(text) > MAX_COMMENT_CHARS:
            raise ProjectError(f"comment is {len(text):,} characters long; keep it to {MAX_COMMENT_CHARS:,}")
        flag = (
            unsure
            if isinstance(unsure, bool)
            else str(unsure or "").strip().lower() in ("1", "on", "true", "yes")
        )
        return cls(flag, text or None)


def gold_items() -> Select[str]:
    """Items with a known label: the pool of exam and control items."""
    return select(Item.id).where(Item.role.in_(GOLD_ROLES), Item.gold_label.is_not(None))
