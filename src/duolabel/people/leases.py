"""The human queue: leasing routed items to annotators and taking their answers.

An item waits for people when its row in ``routes`` says ``decision == "humans"``; it
needs ``routes.overlap`` answers from different annotators (routing may raise the overlap
later: the item is then offered again). A slot is taken by an answer or by an unexpired
lease, so an item is never handed out more often than it needs. Control items (items
with a known label, outside the exam pool) are mixed in at ``control_rate``: they are
leased and answered by exactly the same code path, so neither the page nor the time a
request takes tells them apart. New annotators first take the exam (:mod:`duolabel.people.exam`);
experts work through the expert queue (:mod:`duolabel.people.experts`).

Concurrency: every pick-and-lease and every answer runs in one ``store.write()``
transaction. On SQLite that transaction holds the database write lock from its first
statement (``BEGIN IMMEDIATE``), so the whole queue is serialised and nothing needs to be
locked or read again (``store.single_writer``, from the store backend). On PostgreSQL the
annotator's row is locked first; the search for an open item then locks the ``routes`` row
it finds and passes over rows other transactions hold (``FOR UPDATE SKIP LOCKED``, one
statement), so concurrent leases spread over the open items instead of queueing behind the
first, and the slot count is read again once the lock is held, so two servers cannot both
fill the last slot. Every
function takes its locks in that order (annotator, route, assignment), and a lease that
already holds a route lock takes another only with ``SKIP LOCKED``: it waits for a route
lock only in a transaction holding none, so no two can deadlock.
"""

from __future__ import annotations

import functools
import random
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Integer,
    Select,
    SQLColumnExpression,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    select,
)
from sqlalchemy.orm import Session

from duolabel.config import QualityConfig
from duolabel.core.tasks import TaskType
from duolabel.errors import ProjectError
from duolabel.people.assignments import (
    EXPERT_REASONS,
    HUMANS,
    MAX_TRIES,
    PEOPLE_SOURCES,
    WORK_KINDS,
    Note,
    Task,
    check_answer,
    check_answer_text,
    check_lease,
    gold_items,
    new_lease,
    own_assignment,
    own_lease,
    record_answer,
    why_closed,
)
from duolabel.people.exam import score_exam
from duolabel.people.qc import refresh_annotator
from duolabel.store import Annotation, Annotator, Assignment, FinalLabel, Item, Route, Store
from duolabel.store.tables import utcnow

__all__ = [
    "Task",
    "answers_given",
    "items_left",
    "lease_task",
    "next_task",
    "queue_counts",
    "skip_task",
    "submit_answer",
    "undo_last_answer",
]

_RNG = random.SystemRandom()


def next_task(store: Store, annotator_id: int, *, lease_minutes: float) -> Item | None:
    """The item this annotator should label now, leased to them; ``None`` when there is none."""
    task = lease_task(store, annotator_id, lease_minutes=lease_minutes)
    return task.item if task is not None else None


def lease_task(
    store: Store,
    annotator_id: int,
    *,
    lease_minutes: float,
    control_rate: float = 0.0,
    exam_pool: int = 0,
    rng: random.Random | None = None,
) -> Task | None:
    """Like :func:`next_task`, with the assignment the answer must be submitted against.

    The annotator's own unexpired lease comes back first (a page reload shows the same
    item). Otherwise the first item in queue order (import order, or the order the learning
    stage gave the waiting items, :func:`duolabel.stages.learn.order_queue`) that still has a
    free slot and that this annotator has never been given is leased for ``lease_minutes``; with probability
    ``control_rate`` a control item they have never seen is leased instead (the first
    ``exam_pool`` items with a known label are the exam's, never controls). Controls are
    only mixed into real work: when no routed item is open, nothing is given. Annotators
    who are not active get nothing.

    Examples
    --------
    >>> import tempfile, duolabel
    >>> from duolabel.people.accounts import add_annotator
    >>> from duolabel.store import Item, Route, Run
    >>> project = duolabel.init_project(tempfile.mkdtemp(), labels=["spam", "ham"])
    >>> with project.store.write() as session:
    ...     run = Run(kind="route")
    ...     session.add_all([run, Item(id="a", seq=0, text="win money", content_hash="h")])
    ...     session.flush()
    ...     session.add(Route(item_id="a", decision="humans", overlap=1, policy_version="v", run_id=run.id))
    >>> alice = add_annotator(project.store, "alice", "a long password").id
    >>> task = lease_task(project.store, alice, lease_minutes=15)
    >>> task.item.text
    'win money'
    >>> labels = ["spam", "ham"]
    >>> answer = submit_answer(project.store, alice, task.assignment_id, "spam", labels=labels, seconds=2)
    >>> answer.label, answer.kind
    ('spam', 'regular')
    >>> lease_task(project.store, alice, lease_minutes=15) is None  # overlap 1: done
    True
    >>> project.close()
    """
    check_lease(lease_minutes)
    if not 0.0 <= control_rate <= 1.0:
        raise ProjectError(f"control_rate must be between 0 and 1, got {control_rate}")
    draw = (rng or _RNG).random()
    wait_for: str | None = None
    for _ in range(MAX_TRIES):
        outcome = _lease_pass(store, annotator_id, lease_minutes, control_rate, exam_pool, draw, wait_for)
        if not isinstance(outcome, _Busy):
            return outcome
        # Everything else open was being leased by others: wait for the first of those rather
        # than tell this person there is nothing to do while work remains -- in a new
        # transaction, holding no route lock. A pass may hold the lock of an item it found
        # full; waiting while holding it could deadlock with a server that holds the awaited
        # item and waits for that one.
        wait_for = outcome.item_id
    return None


@dataclass(frozen=True)
class _Busy:
    """A lease pass found nothing open but ``item_id``, which another server was leasing."""

    item_id: str


def _lease_pass(
    store: Store,
    annotator_id: int,
    lease_minutes: float,
    control_rate: float,
    exam_pool: int,
    draw: float,
    wait_for: str | None,
) -> Task | _Busy | None:
    """One transaction of :func:`lease_task`; on PostgreSQL it first waits for the lock of
    ``wait_for`` (then holding no other route lock), and never waits for another."""
    now = utcnow()
    with store.write() as session:
        # Locking the annotator serialises two tabs of one person on PostgreSQL, so they
        # cannot lease two different items at once. NO KEY UPDATE, so that foreign-key
        # checks of concurrent inserts (answers by this person) are not blocked.
        annotator = _locked_annotator(session, annotator_id)
        if annotator is None or annotator.status != "active":
            return None
        own = own_lease(session, annotator_id, WORK_KINDS, now)
        if own is not None:
            return own
        # Both candidates are looked up every time, so the response time does not say
        # whether a control was drawn.
        control_id = session.scalar(_control_candidate(exam_pool), {"annotator_id": annotator_id})
        floor = _floor(store, session, now)
        lock = not store.single_writer
        tried: list[str] = []  # locked here and found full meanwhile
        for _ in range(MAX_TRIES):
            if lock and wait_for is not None and not tried:
                # Wait for the item the last pass found busy (this transaction holds no route lock).
                item_id = wait_for
                session.scalar(select(Route.item_id).where(Route.item_id == item_id).with_for_update())
            else:
                # On PostgreSQL the search locks what it finds and passes over what another
                # server is leasing (FOR UPDATE SKIP LOCKED), in one statement: concurrent leases
                # spread over the open items instead of queueing behind the first one.
                found = _first_open(session, now, floor, annotator_id=annotator_id, skip=tried, lock=lock)
                if found is None and floor > 0:
                    floor = 0  # nothing open past the floor for this person: look below it too
                    found = _first_open(session, now, floor, annotator_id=annotator_id, skip=tried, lock=lock)
                if found is None:
                    if not lock:
                        return None
                    # Nothing open that nobody else is leasing. Is anything open at all? Then say
                    # which, for the next pass to wait for, rather than tell this person there is
                    # nothing to do while work remains.
                    busy = _first_open(session, now, floor, annotator_id=annotator_id, skip=tried)
                    return None if busy is None else _Busy(busy[0])
                item_id = found[0]
            if lock:
                # Read again under the lock: another writer may have taken the slot meanwhile.
                still_open = _open_items(annotator_id, now).where(Route.item_id == item_id)
                if session.scalar(still_open) is None:
                    tried.append(item_id)
                    continue
            expires = now + timedelta(minutes=lease_minutes)
            if control_id is not None and draw < control_rate:
                task = new_lease(session, control_id, annotator_id, "control", expires)
            else:
                task = new_lease(session, item_id, annotator_id, "regular", expires)
            # Run for a control too (it is harmless there): the same statements either way.
            _retire_displaced_leases(session, item_id, now)
            return task
    return None


def submit_answer(
    store: Store,
    annotator_id: int,
    assignment_id: int,
    label: str | list[str],
    *,
    labels: Sequence[str],
    seconds: float | None,
    quality: QualityConfig | None = None,
    task_type: TaskType | None = None,
    note: Note | None = None,
) -> Annotation:
    """Record an annotator's answer to their leased assignment and close the assignment.

    With ``quality`` the annotator's skills, flags and status are brought up to date in
    the same transaction (:func:`duolabel.people.qc.refresh_annotator`), for every kind of task
    alike, and a finished exam attempt is scored. Raises ``ProjectError`` (and writes
    nothing) when the label is not a valid answer for ``task_type`` (default ``single_label``:
    one of ``labels``), the assignment is not this
    annotator's, or it is no longer leased. A lease that ran out may still be answered as
    long as nobody else has been given its slot.
    """
    label = check_answer(label, labels, seconds, task_type)
    with store.write() as session:
        annotator = _locked_annotator(session, annotator_id)
        # Same lock order as lease_task (annotator, route, then assignment).
        assignment = own_assignment(session, annotator_id, assignment_id, lock=not store.single_writer)
        if assignment.kind in EXPERT_REASONS:
            raise ProjectError(f"assignment {assignment_id} is an expert task; answer it on the expert page")
        wanted = "onboarding" if assignment.kind == "exam" else "active"
        if annotator is None or annotator.status != wanted:
            raise ProjectError("your account is not active; answers are not accepted")
        check_answer_text(session, task_type, label, assignment.item_id)
        annotation = record_answer(session, assignment, annotator_id, label, seconds, assignment.kind, note)
        if quality is not None:
            if assignment.kind == "exam":
                score_exam(session, annotator, quality, task_type)
            else:
                refresh_annotator(session, annotator, quality, annotation, task=task_type)
    return annotation


def skip_task(store: Store, annotator_id: int, assignment_id: int) -> None:
    """Give a leased task back: its slot is free at once and it is never offered to this person again."""
    with store.write() as session:
        session.get(Annotator, annotator_id, with_for_update={"key_share": True})
        assignment = own_assignment(session, annotator_id, assignment_id, lock=not store.single_writer)
        if assignment.kind not in WORK_KINDS:
            raise ProjectError(f"assignment {assignment_id} cannot be skipped")
        if assignment.state != "leased":
            raise ProjectError(
                f"assignment {assignment_id} {why_closed(assignment.state)}; load the next item"
            )
        assignment.state = "skipped"


def undo_last_answer(
    store: Store,
    annotator_id: int,
    *,
    window_seconds: float,
    lease_minutes: float,
    quality: QualityConfig | None = None,
    task_type: TaskType | None = None,
) -> int:
    """Take back this annotator's last answer if it is at most ``window_seconds`` old.

    The answer is removed and its assignment leased to them again, so the same item comes
    back to be answered anew; returns that assignment's id. A final label made from people's
    answers to that item is taken back with it (the item is aggregated again once its answers
    are in). Raises ``ProjectError`` when there is nothing to undo (no answer, or too old). An
    answer to a control is undone exactly like any other.
    """
    check_lease(lease_minutes)
    now = utcnow()
    with store.write() as session:
        annotator = session.get(Annotator, annotator_id, with_for_update={"key_share": True})
        if annotator is None or annotator.status != "active":
            raise ProjectError("your account is not active; nothing can be undone")
        last = session.scalar(
            select(Annotation)
            .where(Annotation.annotator_id == annotator_id, Annotation.kind.in_(WORK_KINDS))
            .order_by(Annotation.id.desc())
            .limit(1)
        )
        if last is None or last.assignment_id is None:
            raise ProjectError("there is no answer to undo")
        age = (now - last.created_at).total_seconds()
        if age > window_seconds:
            raise ProjectError(
                f"your last answer was given {age:.0f} s ago; answers can be undone for {window_seconds:g} s"
            )
        session.scalar(select(Route.item_id).where(Route.item_id == last.item_id).with_for_update())
        # A final label made from people's answers since this one was given goes with it: the
        # item waits for its answers again and is aggregated anew. Refusing the undo instead
        # would tell a control apart (issue 12): no answer to a control ever makes a final label
        # (its final label is its gold label, source expert, which this leaves alone). The
        # statement runs for both kinds, so the time taken does not tell them apart either.
        made = FinalLabel.source.in_(PEOPLE_SOURCES)
        session.execute(delete(FinalLabel).where(FinalLabel.item_id == last.item_id, made))
        assignment = session.get(Assignment, last.assignment_id, with_for_update=True)
        assert assignment is not None  # annotations.assignment_id is a foreign key
        session.delete(last)
        assignment.state = "leased"
        assignment.created_at = now  # the server times the new answer from here
        assignment.lease_expires = now + timedelta(minutes=lease_minutes)
        session.flush()
        if quality is not None:
            refresh_annotator(session, annotator, quality, task=task_type)
        return assignment.id


def answers_given(store: Store, annotator_id: int) -> int:
    """How many answers this annotator has given to work (regular and control tasks)."""
    with store.read() as session:
        count = session.scalar(
            select(func.count())
            .select_from(Annotation)
            .where(Annotation.annotator_id == annotator_id, Annotation.kind.in_(WORK_KINDS))
        )
    return int(count or 0)


def items_left(store: Store, annotator_id: int) -> int:
    """About how many more tasks this annotator will be given in this batch, counting the one
    on their screen: what the page's "n left" shows.

    Every closed task counts one down, control or not, so neither the count on screen nor its
    change after an answer, a skip or a lease running out tells a control apart (issue 12). The
    routed items still open to them would not do: a control lease leaves open the routed item
    it stands in for, so that count would drop after a regular answer and stay after a control
    one. So the controls they closed since the latest routing are taken off the open routed
    items, and the count stays at least 1 while a task is on screen (the open items understate
    what remains by those controls, so it may show 1 for several tasks near the end).
    """
    now = utcnow()
    seen_answer = exists().where(Annotation.item_id == Route.item_id, Annotation.annotator_id == annotator_id)
    seen_lease = exists().where(Assignment.item_id == Route.item_id, Assignment.annotator_id == annotator_id)
    mine = exists().where(
        Assignment.item_id == Route.item_id,
        Assignment.annotator_id == annotator_id,
        Assignment.kind == "regular",
        Assignment.state == "leased",
        Assignment.lease_expires >= now,
    )
    active = (Assignment.state == "leased") & (Assignment.lease_expires >= now)
    batch = select(func.max(Route.created_at)).where(Route.decision == HUMANS).scalar_subquery()
    with store.read() as session:
        routed = session.scalar(
            select(func.count())
            .select_from(Route)
            .where(Route.decision == HUMANS, (_has_free_slot(now) & ~seen_answer & ~seen_lease) | mine)
        )
        closed_control = ~active & (Assignment.kind == "control") & (Assignment.created_at >= batch)
        closed_controls, on_screen = session.execute(
            select(
                func.coalesce(func.sum(case((closed_control, 1))), 0),
                func.coalesce(func.sum(case((active, 1))), 0),
            ).where(Assignment.annotator_id == annotator_id, Assignment.kind.in_(WORK_KINDS))
        ).one()
    return max(int(routed or 0) - int(closed_controls), 1 if on_screen else 0)


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
                Assignment.kind == "regular",
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


@functools.cache
def _control_candidate(exam_pool: int) -> Select[str]:
    """A random control item the annotator ``:annotator_id`` has never been given (built once
    per exam size: every next-task asks it)."""
    annotator_id = bindparam("annotator_id", type_=Integer)
    exam = gold_items().order_by(Item.seq).limit(exam_pool).subquery() if exam_pool > 0 else None
    query = gold_items().where(
        ~exists().where(Assignment.item_id == Item.id, Assignment.annotator_id == annotator_id),
        ~exists().where(Annotation.item_id == Item.id, Annotation.annotator_id == annotator_id),
    )
    if exam is not None:
        query = query.where(Item.id.not_in(select(exam.c.id)))
    return query.order_by(func.random()).limit(1)


def _answer_count(item_id: SQLColumnExpression[str]) -> ColumnElement[int]:
    """Crowd answers to an item: an expert's answer (an audit) never takes a crowd slot."""
    return (
        select(func.count())
        .select_from(Annotation)
        .where(Annotation.item_id == item_id, Annotation.kind == "regular")
        .scalar_subquery()
    )


def _lease_count(item_id: SQLColumnExpression[str], now: datetime | BindParameter[Any]) -> ColumnElement[int]:
    return (
        select(func.count())
        .select_from(Assignment)
        .where(
            Assignment.item_id == item_id,
            Assignment.kind == "regular",
            Assignment.state == "leased",
            Assignment.lease_expires >= now,
        )
        .scalar_subquery()
    )


def _has_free_slot(now: datetime | BindParameter[Any]) -> ColumnElement[bool]:
    return _answer_count(Route.item_id) + _lease_count(Route.item_id, now) < Route.overlap


def _open_items(annotator_id: int, now: datetime) -> Select[str]:
    """Routed items with a free slot that this annotator has never been given."""
    seen_answer = exists().where(Annotation.item_id == Route.item_id, Annotation.annotator_id == annotator_id)
    seen_lease = exists().where(Assignment.item_id == Route.item_id, Assignment.annotator_id == annotator_id)
    return (
        select(Route.item_id)
        .join(Item, Item.id == Route.item_id)
        .where(Route.decision == HUMANS, _has_free_slot(now), ~seen_answer, ~seen_lease)
    )


_WINDOW = 64


def _first_open(
    session: Session,
    now: datetime,
    start: int,
    *,
    annotator_id: int | None,
    skip: Sequence[str] = (),
    lock: bool = False,
) -> tuple[str, int] | None:
    """The first routed item in queue order (``routes.position``: import order, unless the
    learning stage put the items the next model needs most first), from position ``start``
    on, with a free slot (and, for an annotator, never given to them): ``(item id, position)``.

    Routes are read in windows of queue order taken through the ``routes.position`` index, so
    neither SQLite's nor PostgreSQL's planner can choose to check every routed item and
    sort them; a window with nothing open doubles the next one. With ``lock`` (PostgreSQL) the
    item found is locked, and items another transaction holds locked are passed over.
    """
    query, last_of_window = _first_open_statements(annotator_id is not None, bool(skip), lock)
    window = _WINDOW
    params: dict[str, object] = {"low": start, "window": window, "now": now}
    if annotator_id is not None:
        params["annotator_id"] = annotator_id
    if skip:
        params["skip"] = list(skip)
    # Core statements on the session's connection (same transaction): no ORM layer needed for
    # two plain columns, and built once per process (this runs on every next-task, issue 12).
    connection = session.connection()
    while True:
        found = connection.execute(query, params).first()
        if found is not None:
            return str(found[0]), int(found[1])
        last = connection.execute(last_of_window, params).scalar()
        if last is None:
            return None
        window *= 2
        params["low"], params["window"] = int(last) + 1, window


@functools.cache
def _first_open_statements(
    for_annotator: bool, skipping: bool, lock: bool
) -> tuple[Select[Any], Select[Any]]:
    """:func:`_first_open`'s query and the last position of its window, with parameters
    ``low``, ``window``, ``now`` (and ``annotator_id``, ``skip``)."""
    now = bindparam("now", type_=Assignment.lease_expires.type)
    chunk = (
        select(Route.item_id.label("id"), Route.position.label("seq"))
        .where(Route.position >= bindparam("low", type_=Integer))
        .order_by(Route.position)
        .limit(bindparam("window", type_=Integer))
        .subquery()
    )
    query = (
        select(Route.item_id, chunk.c.seq)
        .select_from(chunk)
        .join(Route, Route.item_id == chunk.c.id)
        .where(Route.decision == HUMANS, _has_free_slot(now))
        .order_by(chunk.c.seq)
        .limit(1)
    )
    if for_annotator:
        who = bindparam("annotator_id", type_=Integer)
        query = query.where(
            ~exists().where(Annotation.item_id == Route.item_id, Annotation.annotator_id == who),
            ~exists().where(Assignment.item_id == Route.item_id, Assignment.annotator_id == who),
        )
    if skipping:
        query = query.where(Route.item_id.not_in(bindparam("skip", expanding=True)))
    if lock:  # PostgreSQL: FOR UPDATE OF routes SKIP LOCKED
        query = query.with_for_update(of=Route, skip_locked=True)
    return query, select(func.max(chunk.c.seq))


# Items fill up in queue order, so the first item with a free slot (the floor) only moves
# forward; searching from it keeps next-task from re-reading every finished item. Items
# below it can open again (a lease runs out, a skip, a larger overlap): the floor is
# recomputed from the start every _FLOOR_SECONDS, and a search that finds nothing past
# it looks below it at once. The learning stage only permutes the positions of items nobody
# has been given yet; they all have a free slot, so all lie at or past the floor, and so do
# their new positions.
_FLOOR_SECONDS = 30.0
_floors: weakref.WeakKeyDictionary[Store, tuple[int, float]] = weakref.WeakKeyDictionary()


def _floor(store: Store, session: Session, now: datetime) -> int:
    cached, when = _floors.get(store, (0, 0.0))
    start = cached if time.monotonic() - when < _FLOOR_SECONDS else 0
    first = _first_open(session, now, start, annotator_id=None)
    floor = start if first is None else first[1]
    _floors[store] = (floor, when if start else time.monotonic())
    return floor


@functools.cache
def _stale_leases() -> Select[Assignment]:
    """Run-out leases of the item ``:item_id`` still marked leased at ``:now``, oldest first."""
    return (
        select(Assignment)
        .where(
            and_(
                Assignment.item_id == bindparam("item_id"),
                Assignment.state == "leased",
                Assignment.lease_expires < bindparam("now"),
            )
        )
        .order_by(Assignment.lease_expires, Assignment.id)
    )


def _locked_annotator(session: Session, annotator_id: int) -> Annotator | None:
    """The annotator's row, locked (on PostgreSQL) like ``session.get(..., with_for_update=...)``
    with a statement built once: next-task and submit both start with it."""
    return session.scalars(_annotator_for_update(), {"annotator_id": annotator_id}).first()


@functools.cache
def _annotator_for_update() -> Select[Annotator]:
    # NO KEY UPDATE (key_share), so that foreign-key checks of concurrent inserts (answers by
    # this person) are not blocked; populate_existing: fresh values even if the session knew it.
    return (
        select(Annotator)
        .where(Annotator.id == bindparam("annotator_id"))
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    )


def _retire_displaced_leases(session: Session, item_id: str, now: datetime) -> None:
    """Mark "expired" the run-out leases whose slot has now gone to someone else.

    A run-out lease that nobody needed stays "leased", so its holder may still answer.
    The slots are counted only when there is a run-out lease: whether there is depends on the
    routed item alone, so a control lease runs the same statements as a regular one.
    """
    stale = session.scalars(_stale_leases(), {"item_id": item_id, "now": now}).all()
    if not stale:
        return
    overlap, taken = session.execute(
        select(Route.overlap, _answer_count(Route.item_id) + _lease_count(Route.item_id, now)).where(
            Route.item_id == item_id
        )
    ).one()
    for assignment in stale[: max(0, int(taken or 0) + len(stale) - overlap)]:
        assignment.state = "expired"
