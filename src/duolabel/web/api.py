"""The JSON API under ``/api/v1``: the same operations as the pages, for scripts and other front ends.

Log in with ``POST /api/v1/login`` (a JSON body; the answer holds ``csrf_token``), then
send the session cookie with every request and the token in the ``X-CSRF-Token`` header
with every POST. Bodies must be JSON, so a cross-site HTML form cannot post here. Every
error has one shape: ``{"error": {"type": ..., "message": ..., "status": ...}}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from duolabel.accounts import add_annotator, create_invitation, log_in, set_status
from duolabel.exam import exam_result, exam_task, retry_exam
from duolabel.queue import (
    answers_given,
    expert_queue_counts,
    next_expert_task,
    open_expert_tasks,
    skip_task,
    submit_answer,
    submit_expert_answer,
    undo_last_answer,
)
from duolabel.store.tables import utcnow
from duolabel.web.common import (
    ADMIN,
    ANNOTATOR,
    ANYONE,
    CSRF_HEADER,
    EXAM_RESULT,
    EXPERT,
    ONBOARDING,
    Web,
    Who,
)
from duolabel.web.dashboard import TABLES, dashboard_table
from duolabel.web.pages import lease_for, open_task

router = APIRouter(prefix="/api/v1")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginBody(_Body):
    name: str
    password: str


class AnswerBody(_Body):
    assignment_id: int
    label: str
    seconds: float | None = Field(None, ge=0)


class SkipBody(_Body):
    assignment_id: int


class InviteBody(_Body):
    role: str = "annotator"


class AccountBody(_Body):
    name: str
    password: str
    role: str = "annotator"


class StatusBody(_Body):
    name: str
    status: str


def _web(request: Request) -> Web:
    return request.app.state.web


def _post(request: Request, access: tuple[tuple[str, ...], tuple[str, ...]]) -> tuple[Web, Who]:
    web = _web(request)
    who = web.who(request, access)
    web.check_csrf(request, request.headers.get(CSRF_HEADER), who)
    return web, who


def posting(access: tuple[tuple[str, ...], tuple[str, ...]]) -> Callable[[Request], Who]:
    """A dependency checking role and CSRF token; it runs before the body is read, so a
    refused caller learns nothing about what the body should hold."""

    def check(request: Request) -> Who:
        return _post(request, access)[1]

    return check


def _me(web: Web, who: Who) -> dict[str, Any]:
    person = who.annotator
    me: dict[str, Any] = {"name": person.name, "role": person.role, "status": person.status}
    if person.role == "annotator":
        answers = answers_given(web.store, who.id)
        me["answers"] = answers
        me["earnings"] = round(answers * web.config.costs.human_answer, 4)
        me["currency"] = web.config.costs.currency
        # No control count or accuracy here: polling it after each answer would tell
        # which tasks were controls. Admins see both on /admin.
    return me


@router.post("/login")
def api_login(request: Request, body: LoginBody) -> dict[str, Any]:
    from duolabel.web.app import _address, begin_session

    web = _web(request)
    annotator = log_in(web.store, body.name, body.password, address=_address(request), web=web.config.web)
    csrf = begin_session(request, web, annotator.id)
    return {"name": annotator.name, "role": annotator.role, "status": annotator.status, "csrf_token": csrf}


@router.post("/logout")
def api_logout(request: Request) -> dict[str, Any]:
    from duolabel.web.app import finish_session

    _post(request, ANYONE)
    finish_session(request, _web(request))
    return {"ok": True}


@router.get("/me")
def api_me(request: Request) -> dict[str, Any]:
    web = _web(request)
    return _me(web, web.who(request, ANYONE))


@router.get("/labels")
def api_labels(request: Request) -> dict[str, Any]:
    web = _web(request)
    web.who(request, ANYONE)
    return {"instructions": web.config.task.instructions, "labels": web.label_buttons()}


# -- labeling ------------------------------------------------------------------------


@router.get("/task")
def api_task(request: Request) -> dict[str, Any]:
    """The caller's next task (leased to them), or ``{"task": null}`` when there is none."""
    web = _web(request)
    who = web.who(request, ANNOTATOR)
    task = lease_for(web, who)
    return {"task": None if task is None else web.task_view(task)}


@router.get("/task/{assignment_id}")
def api_task_by_id(request: Request, assignment_id: int) -> dict[str, Any]:
    web = _web(request)
    who = web.who(request, ANNOTATOR)
    task = open_task(web, who, assignment_id)
    return {"task": None if task is None else web.task_view(task)}


@router.post("/answer")
def api_answer(
    request: Request, body: AnswerBody, who: Annotated[Who, Depends(posting(ANNOTATOR))]
) -> dict[str, Any]:
    web = _web(request)
    annotation = submit_answer(
        web.store,
        who.id,
        body.assignment_id,
        body.label,
        labels=web.labels,
        seconds=body.seconds,
        quality=web.config.quality,
    )
    return {"annotation_id": annotation.id}


@router.post("/skip")
def api_skip(
    request: Request, body: SkipBody, who: Annotated[Who, Depends(posting(ANNOTATOR))]
) -> dict[str, Any]:
    web = _web(request)
    skip_task(web.store, who.id, body.assignment_id)
    return {"ok": True}


@router.post("/undo")
def api_undo(request: Request) -> dict[str, Any]:
    web, who = _post(request, ANNOTATOR)
    quality = web.config.quality
    assignment_id = undo_last_answer(
        web.store,
        who.id,
        window_seconds=quality.undo_seconds,
        lease_minutes=quality.lease_minutes,
        quality=quality,
    )
    return {"assignment_id": assignment_id}


# -- the exam --------------------------------------------------------------------------


@router.get("/exam/task")
def api_exam_task(request: Request) -> dict[str, Any]:
    web = _web(request)
    who = web.who(request, ONBOARDING)
    quality = web.config.quality
    task = exam_task(web.store, who.id, quality=quality, lease_minutes=quality.lease_minutes)
    return {"task": None if task is None else web.task_view(task)}


@router.post("/exam/answer")
def api_exam_answer(
    request: Request, body: AnswerBody, who: Annotated[Who, Depends(posting(ONBOARDING))]
) -> dict[str, Any]:
    web = _web(request)
    open_task(web, who, body.assignment_id, ("exam",))
    annotation = submit_answer(
        web.store,
        who.id,
        body.assignment_id,
        body.label,
        labels=web.labels,
        seconds=body.seconds,
        quality=web.config.quality,
    )
    return {"annotation_id": annotation.id}


@router.get("/exam/result")
def api_exam_result(request: Request) -> dict[str, Any]:
    web = _web(request)
    who = web.who(request, EXAM_RESULT)
    result = exam_result(web.store, who.id, quality=web.config.quality)
    if result is None:
        return {"result": None}
    return {
        "result": {
            "attempt": result.attempt,
            "correct": result.correct,
            "total": result.total,
            "passed": result.passed,
            "can_retry": result.can_retry,
            "review": [{"text": t, "your_label": g, "right_label": r} for t, g, r in result.review],
        },
        "status": who.annotator.status,
    }


@router.post("/exam/retry")
def api_exam_retry(request: Request) -> dict[str, Any]:
    web, who = _post(request, ONBOARDING)
    retry_exam(web.store, who.id, quality=web.config.quality)
    return {"ok": True}


# -- experts ---------------------------------------------------------------------------


@router.get("/expert/tasks")
def api_expert_tasks(request: Request) -> dict[str, Any]:
    web = _web(request)
    web.who(request, EXPERT)
    return {
        "counts": expert_queue_counts(web.store),
        "escalated": open_expert_tasks(web.store, reason="escalated"),
        "audit": open_expert_tasks(web.store, reason="audit"),
    }


@router.get("/expert/task")
def api_expert_task(request: Request, reason: str | None = None) -> dict[str, Any]:
    web = _web(request)
    who = web.who(request, EXPERT)
    from duolabel.queue import Task

    task = next_expert_task(web.store, who.id, lease_minutes=web.config.quality.lease_minutes, reason=reason)
    if task is None:
        return {"task": None}
    view = web.task_view(Task(task.assignment_id, task.item, utcnow(), task.reason))
    return {"task": {**view, "reason": task.reason, "item_id": task.item.id}}


@router.post("/expert/answer")
def api_expert_answer(
    request: Request, body: AnswerBody, who: Annotated[Who, Depends(posting(EXPERT))]
) -> dict[str, Any]:
    web = _web(request)
    annotation = submit_expert_answer(
        web.store, who.id, body.assignment_id, body.label, labels=web.labels, seconds=body.seconds
    )
    return {"annotation_id": annotation.id}


# -- admins ------------------------------------------------------------------------------


@router.get("/admin/tables")
def api_admin_tables(request: Request) -> dict[str, Any]:
    web = _web(request)
    web.who(request, ADMIN)
    return {"tables": list(TABLES)}


@router.get("/admin/tables/{name}")
def api_admin_table(request: Request, name: str) -> Response:
    web = _web(request)
    web.who(request, ADMIN)
    frame = dashboard_table(web.project, name)
    return Response(frame.to_json(orient="records"), media_type="application/json")


@router.post("/admin/invitations")
def api_invite(
    request: Request, body: InviteBody, who: Annotated[Who, Depends(posting(ADMIN))]
) -> dict[str, Any]:
    web = _web(request)
    token = create_invitation(
        web.store, role=body.role, hours=web.config.web.invitation_hours, created_by=who.id
    )
    return {"role": body.role, "url": str(request.base_url).rstrip("/") + f"/invite/{token}"}


@router.post("/admin/accounts")
def api_add_account(
    request: Request, body: AccountBody, _who: Annotated[Who, Depends(posting(ADMIN))]
) -> dict[str, Any]:
    web = _web(request)
    annotator = add_annotator(web.store, body.name, body.password, role=body.role)
    return {"name": annotator.name, "role": annotator.role, "status": annotator.status}


@router.post("/admin/status")
def api_status(
    request: Request, body: StatusBody, who: Annotated[Who, Depends(posting(ADMIN))]
) -> dict[str, Any]:
    web = _web(request)
    if body.name.strip() == who.annotator.name:
        from duolabel.errors import ProjectError

        raise ProjectError("you cannot change the status of your own account")
    annotator = set_status(web.store, body.name, body.status)
    return {"name": annotator.name, "status": annotator.status}
