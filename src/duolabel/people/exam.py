"""The onboarding exam: a new annotator answers items with known labels before any work.

The exam pool is the first ``exam_size * (1 + exam_retries)`` items with a known label, in
import order. Each candidate gets their own shuffle of it (seeded by who they are, so it
is the same on every request): attempt 1 takes the first ``exam_size`` of that order, a
retry the next ``exam_size``, so no two candidates share a sequence that could be passed
around as an answer key (issue 12). At or above ``pass_mark`` the annotator is activated;
below it they may retry ``exam_retries`` times and are then declined (:func:`score_exam`,
run in the transaction that records the answer). The feedback of an attempt says which
answers were wrong, never what the right ones were. The whole pool is kept out of the
control items.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from duolabel.config import QualityConfig
from duolabel.core.tasks import TaskType
from duolabel.errors import ProjectError
from duolabel.people.assignments import Task, check_lease, gold_items, new_lease, own_lease
from duolabel.people.qc import credit, tally
from duolabel.store import Annotation, Annotator, Assignment, Item, Store
from duolabel.store.tables import utcnow

__all__ = [
    "ExamResult",
    "exam_items",
    "exam_result",
    "exam_task",
    "passes_exam",
    "pool_size",
    "retry_exam",
    "score_exam",
]


@dataclass(frozen=True)
class ExamResult:
    """A finished exam attempt; ``review`` holds (text, given label, whether it was right) per item."""

    attempt: int
    correct: float  # right answers; a fraction where list answers earned partial credit
    total: int
    passed: bool
    can_retry: bool
    review: list[tuple[str, str, bool]]

    @property
    def accuracy(self) -> float:
        """The share answered right (0 for an empty attempt)."""
        return self.correct / self.total if self.total else 0.0


def passes_exam(correct: float, total: int, *, pass_mark: float) -> bool:
    """Whether ``correct`` right answers out of ``total`` reach ``pass_mark`` (a share).

    Examples
    --------
    >>> passes_exam(8, 10, pass_mark=0.8), passes_exam(7, 10, pass_mark=0.8)
    (True, False)
    """
    # The tolerance keeps 0.7 * 10 from missing 7 right answers by a rounding error.
    return correct >= pass_mark * total - 1e-9


def pool_size(quality: QualityConfig) -> int:
    """How many known-label items the exam draws from (and controls never use, since an
    attempt's feedback reveals them): ``exam_size * (1 + exam_retries)``."""
    return quality.exam_size * (1 + quality.exam_retries)


def exam_items(session: Session, annotator: Annotator, attempt: int, quality: QualityConfig) -> list[str]:
    """The ids of this annotator's exam items for attempt ``attempt``, in the order they are asked.

    The pool (the first ``exam_size * (1 + exam_retries)`` items with a known label) is
    shuffled with a seed of the annotator's id and creation time, which only the server
    knows; attempt ``k`` takes the ``k``-th ``exam_size`` of that order, so each attempt
    gets fresh items.
    """
    size = quality.exam_size
    if attempt < 1 or size < 1:
        return []
    pool = list(session.scalars(gold_items().order_by(Item.seq).limit(pool_size(quality))))
    seed = f"duolabel-exam:{annotator.id}:{annotator.created_at.isoformat()}"
    order = random.Random(seed).sample(pool, len(pool))
    return order[(attempt - 1) * size : attempt * size]


def exam_task(
    store: Store, annotator_id: int, *, quality: QualityConfig, lease_minutes: float
) -> Task | None:
    """The next exam item for an onboarding annotator, leased to them.

    ``None`` when the current attempt is answered in full (see :func:`exam_result`) or the
    annotator is not onboarding. Raises ``ProjectError`` when the project has no items
    with a known label to examine with.
    """
    check_lease(lease_minutes)
    now = utcnow()
    with store.write() as session:
        annotator = session.get(Annotator, annotator_id, with_for_update={"key_share": True})
        if annotator is None or annotator.status != "onboarding":
            return None
        if annotator.exam_attempt == 0:
            annotator.exam_attempt = 1
        own = own_lease(session, annotator_id, ("exam",), now)
        if own is not None:
            return own
        items = exam_items(session, annotator, annotator.exam_attempt, quality)
        if not items:
            raise ProjectError(
                "the exam has no items: the project needs items with a known label "
                "(import a golden set); ask a project admin"
            )
        answered = set(
            session.scalars(
                select(Annotation.item_id).where(
                    Annotation.annotator_id == annotator_id, Annotation.item_id.in_(items)
                )
            )
        )
        todo = [item for item in items if item not in answered]
        if not todo:
            return None
        expires = now + timedelta(minutes=lease_minutes)
        # An exam item whose lease ran out unanswered is leased again (the same assignment):
        # skipping it left the attempt unfinishable, and the candidate stuck between the exam
        # and its result page.
        lapsed = session.scalar(
            select(Assignment)
            .where(
                Assignment.annotator_id == annotator_id,
                Assignment.item_id == todo[0],
                Assignment.kind == "exam",
            )
            .order_by(Assignment.id.desc())
            .limit(1)
        )
        if lapsed is None:
            return new_lease(session, todo[0], annotator_id, "exam", expires)
        lapsed.state, lapsed.created_at, lapsed.lease_expires = "leased", now, expires
        item = session.get(Item, todo[0])
        assert item is not None  # assignments.item_id is a foreign key
        return Task(lapsed.id, item, expires, "exam")


def exam_result(
    store: Store, annotator_id: int, *, quality: QualityConfig, task: TaskType | None = None
) -> ExamResult | None:
    """The latest exam attempt if it is answered in full, with which answers were right; else ``None``.

    ``task`` scores each answer (None: single-label, right or wrong; a list earns partial credit)."""

    with store.read() as session:
        annotator = session.get(Annotator, annotator_id)
        if annotator is None or annotator.exam_attempt < 1:
            return None
        items = exam_items(session, annotator, annotator.exam_attempt, quality)
        rows = session.execute(
            select(Item.id, Item.text, Annotation.label, Item.gold_label)
            .join(Annotation, Annotation.item_id == Item.id)
            .where(
                Annotation.annotator_id == annotator_id,
                Annotation.kind == "exam",
                Item.id.in_(items),
            )
        ).all()
        if not items or len(rows) < len(items):
            return None
        order = {item: i for i, item in enumerate(items)}
        rows = sorted(rows, key=lambda row: order[row[0]])
        scores = [credit(task, row[2], row[3]) for row in rows]
        correct = tally(math.fsum(scores))
        passed = passes_exam(correct, len(items), pass_mark=quality.pass_mark)
        retry_items = exam_items(session, annotator, annotator.exam_attempt + 1, quality)
        can_retry = (
            not passed
            and annotator.status == "onboarding"
            and annotator.exam_attempt <= quality.exam_retries
            and bool(retry_items)
        )
        review = [(row[1], row[2], score == 1.0) for row, score in zip(rows, scores, strict=True)]
    return ExamResult(annotator.exam_attempt, correct, len(items), passed, can_retry, review)


def retry_exam(
    store: Store, annotator_id: int, *, quality: QualityConfig, task: TaskType | None = None
) -> None:
    """Start the next exam attempt (on fresh items) after a failed one, if a retry is left."""
    result = exam_result(store, annotator_id, quality=quality, task=task)
    if result is None or not result.can_retry:
        raise ProjectError("there is no exam retry to start")
    with store.write() as session:
        annotator = session.get(Annotator, annotator_id, with_for_update=True)
        if annotator is not None and annotator.exam_attempt == result.attempt:
            annotator.exam_attempt += 1


def score_exam(
    session: Session, annotator: Annotator, quality: QualityConfig, task: TaskType | None = None
) -> None:
    """After an exam answer: once the attempt is complete, activate, keep for a retry, or decline.

    Runs inside the write transaction that recorded the answer (the annotator's row is
    locked); each finished attempt is kept in ``annotator.skills["exams"]``. ``task`` scores
    each answer as for :func:`exam_result`.
    """

    items = exam_items(session, annotator, annotator.exam_attempt, quality)
    rows = session.execute(
        select(Annotation.label, Item.gold_label)
        .join(Item, Item.id == Annotation.item_id)
        .where(Annotation.annotator_id == annotator.id, Annotation.kind == "exam", Item.id.in_(items))
    ).all()
    if not items or len(rows) < len(items):
        return
    correct = tally(math.fsum(credit(task, label, gold) for label, gold in rows))
    exams = [*dict(annotator.skills or {}).get("exams", []), {"correct": correct, "total": len(items)}]
    annotator.skills = {**(annotator.skills or {}), "exams": exams}
    if passes_exam(correct, len(items), pass_mark=quality.pass_mark):
        annotator.status = "active"
        return
    retry_left = annotator.exam_attempt <= quality.exam_retries
    if not retry_left or not exam_items(session, annotator, annotator.exam_attempt + 1, quality):
        annotator.status = "declined"
