"""What the web app does, once, for both the HTML pages and the JSON API.

Each action is a plain function of the project (a :class:`~duolabel.context.Context`), the
account asking (an ``Annotator``, already checked for role, status and CSRF token by the
route) and the request's input; it returns data or raises ``DuolabelError`` /
``AccessError``. :mod:`duolabel.web.pages` and :mod:`duolabel.web.api` keep only what is
HTTP: parsing the request, the role each route needs, and rendering or shaping the answer.

What a person is shown of a task comes from :func:`task_view` alone, so a control stays
indistinguishable from other work on every surface.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from duolabel.context import Context
from duolabel.core.tasks import task_type
from duolabel.errors import AccessError, ProjectError
from duolabel.people.accounts import (
    accept_invitation,
    add_annotator,
    create_invitation,
    invitation_role,
    log_in,
    set_status,
)
from duolabel.people.assignments import MAX_ID, WORK_KINDS, Note, Task
from duolabel.people.exam import ExamResult, exam_result, exam_task, pool_size, retry_exam
from duolabel.people.experts import (
    EXPERT_REASONS,
    expert_queue_counts,
    next_expert_task,
    open_expert_tasks,
    skip_expert_task,
    submit_expert_answer,
)
from duolabel.people.leases import (
    answers_given,
    items_left,
    lease_task,
    skip_task,
    submit_answer,
    undo_last_answer,
)
from duolabel.stages.route import follow_up_project
from duolabel.store import Annotation, Annotator, Assignment, Item, Prediction
from duolabel.store.tables import name_key, utcnow
from duolabel.training_data import STOP_SET_SUFFIX
from duolabel.web.itemview import highlight_terms, text_blocks

_log = logging.getLogger(__name__)

__all__ = [
    "SHORTCUT_KEYS",
    "Progress",
    "add_account",
    "answer",
    "change_status",
    "exam_answer",
    "exam_next",
    "exam_outcome",
    "exam_retry",
    "expert_answer",
    "expert_next",
    "expert_overview",
    "expert_skip",
    "follow_up",
    "follow_up_undone",
    "model_label",
    "invitation",
    "invite",
    "join",
    "label_buttons",
    "lease_next",
    "login",
    "own_task",
    "progress",
    "skip",
    "suggestion",
    "task_view",
    "undo",
]

SHORTCUT_KEYS = 9  # labels 1-9 get a number key on the labeling page


# -- what a person sees ----------------------------------------------------------------


def label_buttons(ctx: Context) -> list[dict[str, Any]]:
    """The task's labels in order, with their number key (the first nine) and description."""
    return [
        {"key": key if key <= SHORTCUT_KEYS else None, "name": spec.name, "description": spec.description}
        for key, spec in enumerate(ctx.config.task.labels, start=1)
    ]


def task_view(ctx: Context, task: Task) -> dict[str, Any]:
    """Only what a person needs to see of a task. Never the ``Item`` itself (it holds the
    gold label), never the item id (a golden item's id could give a control away), never
    the task's kind."""
    view: dict[str, Any] = {
        "assignment_id": task.assignment_id,
        "text": task.item.text,
        "blocks": text_blocks(task.item, ctx.config.task),
        "highlight": highlight_terms(task.item.fields, ctx.config.task.highlight),
        "lease_expires": task.lease_expires.isoformat(timespec="seconds") + "Z",
    }
    # A task type's own fields of the item (pairwise: the two responses), by the type's hook.
    item_view = getattr(task_type(ctx.config.task.type), "item_view", None)
    if item_view is not None:
        view.update(item_view(task.item.fields or {}))
    if ctx.config.quality.show_model_suggestion:
        view["suggestion"] = suggestion(ctx, task.item.id)
    return view


def suggestion(ctx: Context, item_id: str) -> str | None:
    """The model's latest label for an item (co-pilot mode only)."""
    found = model_label(ctx, item_id)
    return None if found is None else found["label"]


def model_label(ctx: Context, item_id: str) -> dict[str, Any] | None:
    """The model's latest label for an item and its confidence (calibrated where the item's
    prediction was), or ``None`` when no model labelled it."""
    with ctx.store.read() as session:
        row = session.execute(
            select(Prediction.label, func.coalesce(Prediction.confidence, Prediction.raw_confidence))
            .where(
                Prediction.item_id == item_id,
                Prediction.abstained.is_(False),
                # Stop-set rows measure the learning loop; they never routed the item.
                Prediction.model_version.not_like(f"%{STOP_SET_SUFFIX}"),
            )
            .order_by(Prediction.id.desc())
            .limit(1)
        ).first()
    return None if row is None else {"label": row[0], "confidence": row[1]}


@dataclass(frozen=True)
class Progress:
    """An annotator's paid work so far (answers given and what they earned) and the routed
    items still open to them (:func:`~duolabel.people.leases.items_left`)."""

    answers: int
    earnings: float
    currency: str
    left: int = 0


def progress(ctx: Context, me: Annotator) -> Progress:
    """Answers and earnings only: no control count or accuracy, since polling it after each
    answer would tell which tasks were controls (admins see both on the dashboard)."""
    answers = answers_given(ctx.store, me.id)
    costs = ctx.config.costs
    return Progress(answers, answers * costs.human_answer, costs.currency, items_left(ctx.store, me.id))


# -- accounts ----------------------------------------------------------------------------


def login(ctx: Context, name: str, password: str, *, address: str) -> Annotator:
    """Check a name and password (throttled per name and per ``address``); ``AccessError`` if refused."""
    return log_in(ctx.store, name, password, address=address, web=ctx.config.web)


def invitation(ctx: Context, token: str) -> str:
    """The role an open invitation is for; ``AccessError`` for an unknown, used or expired one."""
    return invitation_role(ctx.store, token)


def join(ctx: Context, token: str, name: str, password: str) -> Annotator:
    """Create the account an invitation is for (onboarding, when the project has an exam)."""
    return accept_invitation(ctx.store, token, name, password, exam=ctx.config.quality.exam_size > 0)


# -- labeling ----------------------------------------------------------------------------


def lease_next(ctx: Context, me: Annotator) -> Task | None:
    """The annotator's next task, leased to them (controls mixed in); ``None`` when there is none."""
    quality = ctx.config.quality
    return lease_task(
        ctx.store,
        me.id,
        lease_minutes=quality.lease_minutes,
        control_rate=quality.control_rate,
        exam_pool=pool_size(quality),
    )


def own_task(
    ctx: Context, me: Annotator, assignment_id: int, kinds: tuple[str, ...] = WORK_KINDS
) -> Task | None:
    """The caller's own task by id: ``None`` when it is closed, ``AccessError`` 404 if not theirs."""
    with ctx.store.read() as session:
        assignment = session.get(Assignment, assignment_id) if 0 < assignment_id <= MAX_ID else None
        if assignment is None or assignment.annotator_id != me.id or assignment.kind not in kinds:
            raise AccessError(f"task {assignment_id} is not one of yours", status=404)
        if assignment.state != "leased":
            return None
        item = session.get(Item, assignment.item_id)
        assert item is not None
        return Task(assignment.id, item, assignment.lease_expires, assignment.kind)


def answer(
    ctx: Context, me: Annotator, assignment_id: int, label: str | list[str], note: Note | None = None
) -> Annotation:
    """Record an answer (with the person's ``note``: unsure, a comment) to the caller's task;
    skills and flags are brought up to date with it.

    The time it took is the server's, from lease to answer: never a time the client reports."""
    return submit_answer(
        ctx.store,
        me.id,
        assignment_id,
        label,
        seconds=None,
        quality=ctx.config.quality,
        note=note,
        **_checked_by(ctx),
    )


def _checked_by(ctx: Context) -> dict[str, Any]:
    """What an answer is checked against: the task's labels and its task type."""
    return {"labels": ctx.config.task.label_names, "task_type": task_type(ctx.config.task.type)}


def follow_up(ctx: Context, item_id: str, *, undone: bool = False) -> None:
    """Follow up an item just answered or, with ``undone``, one whose answer was just taken
    back, under the dynamic policy: ask one more person, or escalate, as soon as the asked-for
    answers are in, and ask for one fewer when the answer that grew the overlap is taken back
    (routing's ``follow_up_project`` for that one item). Other policies do nothing here.

    The routes run it after their response has gone out (a background task), so the time an
    answer takes does not depend on whether its item was followed up, and a control (which has
    no route to follow up) is not told apart by it. If it fails, the item is followed up by the
    next ``aggregate`` or ``run``, which follows up every item; the error goes to the log.
    """
    try:
        follow_up_project(ctx, [item_id], undone=undone)
    except Exception:  # the answer is stored; aggregate follows the item up instead
        _log.exception("following up item %s failed", item_id)


def follow_up_undone(ctx: Context, assignment_id: int) -> None:
    """:func:`follow_up` of the item of an assignment whose answer was just undone (the undo
    routes know the assignment, not the item)."""
    with ctx.store.read() as session:
        item_id = session.scalar(select(Assignment.item_id).where(Assignment.id == assignment_id))
    if item_id is not None:
        follow_up(ctx, item_id, undone=True)


def skip(ctx: Context, me: Annotator, assignment_id: int) -> None:
    """Give the caller's task back; it is never offered to them again."""
    skip_task(ctx.store, me.id, assignment_id)


def undo(ctx: Context, me: Annotator) -> int:
    """Take back the caller's last answer (within the undo window); returns its assignment id."""
    quality = ctx.config.quality
    return undo_last_answer(
        ctx.store,
        me.id,
        window_seconds=quality.undo_seconds,
        lease_minutes=quality.lease_minutes,
        quality=quality,
        task_type=task_type(ctx.config.task.type),
    )


# -- the exam ----------------------------------------------------------------------------


def exam_next(ctx: Context, me: Annotator) -> Task | None:
    """The next exam item, leased; ``None`` once the attempt is answered in full."""
    quality = ctx.config.quality
    return exam_task(ctx.store, me.id, quality=quality, lease_minutes=quality.lease_minutes)


def exam_answer(
    ctx: Context, me: Annotator, assignment_id: int, label: str | list[str], note: Note | None = None
) -> Annotation:
    """Record an exam answer; a finished attempt is scored in the same transaction."""
    own_task(ctx, me, assignment_id, ("exam",))  # 404 for anything but the caller's exam items
    return answer(ctx, me, assignment_id, label, note)


def exam_outcome(ctx: Context, me: Annotator) -> ExamResult | None:
    """The latest attempt with which answers were wrong (not the key), once it is answered in full;
    else ``None``."""
    return exam_result(ctx.store, me.id, quality=ctx.config.quality, task=task_type(ctx.config.task.type))


def exam_retry(ctx: Context, me: Annotator) -> None:
    """Start the next attempt after a failed one, if a retry is left."""
    retry_exam(ctx.store, me.id, quality=ctx.config.quality, task=task_type(ctx.config.task.type))


# -- experts -------------------------------------------------------------------------------


def expert_overview(ctx: Context) -> dict[str, Any]:
    """Open expert tasks: counts per reason and the list of each reason."""
    return {
        "counts": expert_queue_counts(ctx.store),
        **{reason: open_expert_tasks(ctx.store, reason=reason) for reason in EXPERT_REASONS},
    }


def expert_next(ctx: Context, me: Annotator, reason: str | None) -> dict[str, Any] | None:
    """The next expert task leased to the caller, as a view with its reason and item id."""
    task = next_expert_task(ctx.store, me.id, lease_minutes=ctx.config.quality.lease_minutes, reason=reason)
    if task is None:
        return None
    view = task_view(ctx, Task(task.assignment_id, task.item, utcnow(), task.reason))
    # Experts are trusted, and audits are about named items: they see the item's id and
    # the model's label with its confidence.
    return {**view, "reason": task.reason, "item_id": task.item.id, "model": model_label(ctx, task.item.id)}


def expert_answer(
    ctx: Context, me: Annotator, assignment_id: int, label: str | list[str], note: Note | None = None
) -> Annotation:
    """Record an expert's answer (with their ``note``) and close the expert task (timed by the
    server)."""
    return submit_expert_answer(
        ctx.store, me.id, assignment_id, label, seconds=None, note=note, **_checked_by(ctx)
    )


def expert_skip(ctx: Context, me: Annotator, assignment_id: int) -> None:
    """Give an expert task back for another expert; it is not offered to the caller again."""
    skip_expert_task(ctx.store, me.id, assignment_id)


# -- admins ----------------------------------------------------------------------------------


def invite(ctx: Context, me: Annotator, role: str) -> str:
    """A new one-time invitation for ``role``; returns its token (the link's last part)."""
    return create_invitation(ctx.store, role=role, hours=ctx.config.web.invitation_hours, created_by=me.id)


def add_account(ctx: Context, name: str, password: str, role: str) -> Annotator:
    """Create an active account."""
    return add_annotator(ctx.store, name, password, role=role)


def change_status(ctx: Context, me: Annotator, name: str, status: str) -> Annotator:
    """Set another account's status (an admin cannot lock themselves out).

    The name is compared as :func:`~duolabel.people.accounts.set_status` looks it up (by
    ``name_key``), so "BOSS" or a fullwidth "ｂｏｓｓ" is still the caller's own account."""
    if name_key(name) == me.name_key:
        raise ProjectError("you cannot change the status of your own account")
    return set_status(ctx.store, name, status)
