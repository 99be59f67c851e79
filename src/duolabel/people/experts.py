"""The expert queue: items escalated by routing or drawn for an audit, answered by experts.

An open ``ExpertTask`` names an item and why it needs an expert (``"escalated"``,
``"audit"``, or ``"golden"``: an item active learning chose to become a golden item, whose
expert answer is its gold label, :func:`duolabel.store.golden.make_golden`). An expert
leases one task at a time, through the same assignments as the crowd queue
(:mod:`duolabel.people.assignments`), with the task's reason as the assignment's kind; an
expert's answer is an ``Annotation`` of kind ``expert`` and never takes a crowd slot. Locks
are taken in the crowd queue's order (annotator, then task or assignment), so the two
queues cannot deadlock with each other.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Select, exists, func, select
from sqlalchemy.orm import Session

from duolabel.core.tasks import TaskType
from duolabel.errors import ProjectError, shown
from duolabel.people.assignments import (
    EXPERT_REASONS,
    MAX_TRIES,
    Note,
    check_answer,
    check_answer_text,
    check_lease,
    new_lease,
    own_assignment,
    own_lease,
    record_answer,
    why_closed,
)
from duolabel.store import Annotation, Annotator, Assignment, ExpertTask, Item, Store
from duolabel.store.golden import make_golden
from duolabel.store.tables import utcnow

__all__ = [
    "EXPERT_REASONS",
    "ExpertTaskView",
    "enqueue_expert",
    "expert_queue_counts",
    "next_expert_task",
    "open_expert_tasks",
    "skip_expert_task",
    "submit_expert_answer",
]


@dataclass(frozen=True)
class ExpertTaskView:
    """An expert task leased to one expert: answer it against ``assignment_id``."""

    task_id: int
    assignment_id: int
    reason: str
    item: Item


def enqueue_expert(session: Session, item_ids: Iterable[str], reason: str, run_id: int | None = None) -> int:
    """Put items in the expert queue for ``reason`` (one of ``EXPERT_REASONS``).

    Idempotent: an item that already has an open task for the same reason is left alone.
    Runs inside the caller's transaction; returns how many tasks were added.

    Examples
    --------
    >>> import tempfile, duolabel
    >>> from duolabel.store import Item
    >>> project = duolabel.init_project(tempfile.mkdtemp(), labels=["spam", "ham"])
    >>> with project.store.write() as session:
    ...     session.add(Item(id="a", seq=0, text="win money", content_hash="h"))
    ...     session.flush()
    ...     enqueue_expert(session, ["a"], "escalated"), enqueue_expert(session, ["a"], "escalated")
    (1, 0)
    >>> expert_queue_counts(project.store)
    {'escalated': 1, 'audit': 0, 'golden': 0}
    >>> project.close()
    """
    if reason not in EXPERT_REASONS:
        raise ProjectError(f"reason {shown(reason)} is not one of {', '.join(map(repr, EXPERT_REASONS))}")
    wanted = list(dict.fromkeys(item_ids))
    added = 0
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        already = set(
            session.scalars(
                select(ExpertTask.item_id).where(
                    ExpertTask.item_id.in_(chunk), ExpertTask.reason == reason, ExpertTask.state == "open"
                )
            )
        )
        for item_id in chunk:
            if item_id not in already:
                session.add(ExpertTask(item_id=item_id, reason=reason, state="open", run_id=run_id))
                added += 1
    session.flush()
    return added


def next_expert_task(
    store: Store, expert_id: int, *, lease_minutes: float, reason: str | None = None
) -> ExpertTaskView | None:
    """The oldest open expert task (of ``reason``, or any) leased to this expert.

    The expert's own unexpired lease comes back first. A task leased to another expert,
    or about an item this expert has already answered, is passed over.
    """
    check_lease(lease_minutes)
    reasons = EXPERT_REASONS if reason is None else (reason,)
    if reason is not None and reason not in EXPERT_REASONS:
        raise ProjectError(f"reason {shown(reason)} is not one of {', '.join(map(repr, EXPERT_REASONS))}")
    now = utcnow()
    with store.write() as session:
        expert = session.get(Annotator, expert_id, with_for_update={"key_share": True})
        if expert is None or expert.status != "active" or expert.role not in ("expert", "admin"):
            return None
        own = own_lease(session, expert_id, reasons, now)
        if own is not None:
            task_id = session.scalar(_open_task(own.item.id, own.kind))
            if task_id is not None:
                return ExpertTaskView(task_id, own.assignment_id, own.kind, own.item)
        leased = exists().where(
            Assignment.item_id == ExpertTask.item_id,
            Assignment.kind == ExpertTask.reason,
            Assignment.state == "leased",
            Assignment.lease_expires >= now,
        )
        answered = exists().where(
            Annotation.item_id == ExpertTask.item_id, Annotation.annotator_id == expert_id
        )
        skipped = exists().where(
            Assignment.item_id == ExpertTask.item_id,
            Assignment.annotator_id == expert_id,
            Assignment.kind == ExpertTask.reason,
            Assignment.state == "skipped",
        )
        candidates = (
            select(ExpertTask)
            .where(ExpertTask.state == "open", ExpertTask.reason.in_(reasons), ~leased, ~answered, ~skipped)
            .order_by(ExpertTask.id)
            .limit(1)
        )
        for _ in range(MAX_TRIES):
            task = session.scalar(candidates)
            if task is None:
                return None
            session.refresh(task, with_for_update=True)
            if task.state != "open" or session.scalar(select(leased).where(ExpertTask.id == task.id)):
                candidates = candidates.where(ExpertTask.id != task.id)
                continue
            lease = new_lease(
                session, task.item_id, expert_id, task.reason, now + timedelta(minutes=lease_minutes)
            )
            return ExpertTaskView(task.id, lease.assignment_id, task.reason, lease.item)
    return None


def submit_expert_answer(
    store: Store,
    expert_id: int,
    assignment_id: int,
    label: str | list[str],
    *,
    labels: Sequence[str],
    seconds: float | None,
    task_type: TaskType | None = None,
    note: Note | None = None,
) -> Annotation:
    """Record an expert's answer (an ``Annotation`` of kind ``expert``, with their ``note``) and
    close the task; ``task_type`` (default ``single_label``) validates the answer."""
    label = check_answer(label, labels, seconds, task_type)
    with store.write() as session:
        expert = session.get(Annotator, expert_id, with_for_update={"key_share": True})
        if expert is None or expert.status != "active" or expert.role not in ("expert", "admin"):
            raise ProjectError("only active experts answer expert tasks")
        assignment = own_assignment(session, expert_id, assignment_id)
        if assignment.kind not in EXPERT_REASONS:
            raise ProjectError(f"assignment {assignment_id} is not an expert task")
        session.refresh(assignment, with_for_update=True)
        check_answer_text(session, task_type, label, assignment.item_id)
        annotation = record_answer(session, assignment, expert_id, label, seconds, "expert", note)
        task = session.scalar(
            select(ExpertTask).where(
                ExpertTask.item_id == assignment.item_id,
                ExpertTask.reason == assignment.kind,
                ExpertTask.state == "open",
            )
        )
        if task is not None:
            task.state = "done"
            task.annotation_id = annotation.id
            task.done_at = utcnow()
        if assignment.kind == "golden":
            make_golden(
                session,
                assignment.item_id,
                label,
                source=f"expert:{expert.name}",
                expert=expert.name,
                annotation_id=annotation.id,
            )
    return annotation


def skip_expert_task(store: Store, expert_id: int, assignment_id: int) -> None:
    """Give an expert task back: it stays open for other experts and is not offered to this
    expert again."""
    with store.write() as session:
        session.get(Annotator, expert_id, with_for_update={"key_share": True})
        assignment = own_assignment(session, expert_id, assignment_id)
        if assignment.kind not in EXPERT_REASONS:
            raise ProjectError(f"assignment {assignment_id} is not an expert task")
        session.refresh(assignment, with_for_update=True)
        if assignment.state != "leased":
            raise ProjectError(f"assignment {assignment_id} {why_closed(assignment.state)}")
        assignment.state = "skipped"


def expert_queue_counts(store: Store) -> dict[str, int]:
    """Open expert tasks per reason."""
    with store.read() as session:
        rows = dict(
            session.execute(
                select(ExpertTask.reason, func.count())
                .where(ExpertTask.state == "open")
                .group_by(ExpertTask.reason)
            ).all()
        )
    return {reason: int(rows.get(reason, 0)) for reason in EXPERT_REASONS}


def open_expert_tasks(
    store: Store, *, reason: str | None = None, limit: int = 200
) -> list[dict[str, object]]:
    """Open expert tasks, oldest first: id, item id, reason, created (for the expert pages)."""
    query = select(ExpertTask.id, ExpertTask.item_id, ExpertTask.reason, ExpertTask.created_at).where(
        ExpertTask.state == "open"
    )
    if reason is not None:
        query = query.where(ExpertTask.reason == reason)
    with store.read() as session:
        rows = session.execute(query.order_by(ExpertTask.id).limit(limit)).all()
    return [
        {"task": row[0], "item": row[1], "reason": row[2], "created": row[3].isoformat(timespec="seconds")}
        for row in rows
    ]


def _open_task(item_id: str, reason: str) -> Select[int]:
    return select(ExpertTask.id).where(
        ExpertTask.item_id == item_id, ExpertTask.reason == reason, ExpertTask.state == "open"
    )
