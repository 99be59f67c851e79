"""The JSON API under ``/api/v1``: the same operations as the pages, for scripts and other front ends.

Log in with ``POST /api/v1/login`` (a JSON body; the answer holds ``csrf_token``), then
send the session cookie with every request and the token in the ``X-CSRF-Token`` header
with every POST. Bodies must be JSON, so a cross-site HTML form cannot post here. Every
error has one shape: ``{"error": {"type": ..., "message": ..., "status": ...}}``.
"""

from __future__ import annotations

import email.message
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, BackgroundTasks, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from duolabel.people.assignments import Note, Task
from duolabel.store import Annotation
from duolabel.web import actions
from duolabel.web.common import (
    ADMIN,
    ANNOTATOR,
    ANYONE,
    CSRF_HEADER,
    EXAM_RESULT,
    EXPERT,
    ONBOARDING,
    Access,
    Web,
    Who,
    finish_session,
    log_in,
    posted,
    signed_in,
    web_of,
)
from duolabel.web.dashboard import TABLES, dashboard_table

__all__ = ["JsonBody", "json_body_schema", "posting", "router"]

router = APIRouter(prefix="/api/v1")


class JsonBody(BaseModel):
    """A JSON body: unknown fields are an error."""

    model_config = ConfigDict(extra="forbid")


_B = TypeVar("_B", bound=JsonBody)


class LoginBody(JsonBody):
    name: str
    password: str


class AnswerBody(JsonBody):
    assignment_id: int
    label: str | list[str]  # a list (or its JSON) for multi_label
    # Accepted for old clients and ignored: the server times answers itself.
    seconds: float | None = Field(None, ge=0)
    unsure: bool = False
    comment: str | None = None


class SkipBody(JsonBody):
    assignment_id: int


class InviteBody(JsonBody):
    role: str = "annotator"


class AccountBody(JsonBody):
    name: str
    password: str
    role: str = "annotator"


class StatusBody(JsonBody):
    name: str
    status: str


def _post(request: Request, access: Access) -> tuple[Web, Who]:
    return posted(request, access, request.headers.get(CSRF_HEADER))


def posting(access: Access, model: type[_B]) -> Callable[[Request], Awaitable[tuple[Who, _B]]]:
    """A dependency checking role and CSRF token, then reading the body as ``model``. The
    body is read only after the check (FastAPI reads a declared body before any dependency),
    so a refused caller learns nothing about it, not even whether it is JSON: 401 or 403
    before 400. Routes using it name the body in the schema with :func:`json_body_schema`."""

    async def check(request: Request) -> tuple[Who, _B]:
        who = (await run_in_threadpool(_post, request, access))[1]
        return who, _body(model, await request.body(), request.headers.get("content-type"))

    return check


def _me(web: Web, who: Who) -> dict[str, Any]:
    person = who.annotator
    me: dict[str, Any] = {"name": person.name, "role": person.role, "status": person.status}
    if person.role == "annotator":
        done = actions.progress(web.project, person)
        me["answers"] = done.answers
        me["earnings"] = round(done.earnings, 4)
        me["currency"] = done.currency
        me["left"] = done.left
    return me


def _answering(
    path: str, access: Access, action: Callable[..., Annotation], *, name: str, follow_up: bool = False
) -> None:
    """Add the route that records an answer with one of the answering actions (labeling,
    the exam, experts); it answers with the annotation's id. With ``follow_up``, the answered
    item is followed up once the response is out (:func:`duolabel.web.actions.follow_up`)."""

    def answer(request: Request, raw: bytes, content_type: str | None) -> dict[str, Any]:
        web, who = _post(request, access)  # the role and CSRF token before the body is looked at
        body = _body(AnswerBody, raw, content_type)
        note = Note.of(unsure=body.unsure, comment=body.comment)
        annotation = action(web.project, who.annotator, body.assignment_id, body.label, note)
        return {"annotation_id": annotation.id, "item_id": annotation.item_id}

    # One hop to a worker thread for the checks and the answer together: a ``def`` dependency
    # and a ``def`` endpoint are two hops, a measurable part of a submit's CPU (issue 12).
    async def answered(request: Request, background: BackgroundTasks) -> dict[str, Any]:
        raw = await request.body()
        done = await run_in_threadpool(answer, request, raw, request.headers.get("content-type"))
        if follow_up:
            background.add_task(actions.follow_up, web_of(request).project, done["item_id"])
        return {"annotation_id": done["annotation_id"]}

    router.post(path, name=name, openapi_extra=json_body_schema(AnswerBody))(answered)


def _body(model: type[_B], raw: bytes, content_type: str | None) -> _B:
    """``raw`` as ``model``, read as FastAPI reads a JSON body: JSON when the content type is
    absent or JSON, else refused; ``RequestValidationError`` (a 400) when it does not fit."""
    if content_type:
        message = email.message.Message()
        message["content-type"] = content_type
        subtype = message.get_content_subtype()
        if not (subtype == "json" or subtype.endswith("+json")):
            raise RequestValidationError(
                [{"type": "model_attributes_type", "loc": ("body",), "msg": "not JSON"}]
            )
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in error.errors(include_url=False)]
        ) from None


def json_body_schema(model: type[BaseModel]) -> dict[str, Any]:
    # The body is read by hand (above), so the schema is named here for /docs and openapi.json.
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": model.model_json_schema(ref_template="#/components/schemas/{model}")
                }
            },
        }
    }


def _task(web: Web, task: Task | None) -> dict[str, Any]:
    return {"task": None if task is None else actions.task_view(web.project, task)}


@router.post("/login")
def api_login(request: Request, body: LoginBody) -> dict[str, Any]:
    annotator, csrf = log_in(request, web_of(request), body.name, body.password)
    return {"name": annotator.name, "role": annotator.role, "status": annotator.status, "csrf_token": csrf}


@router.post("/logout")
def api_logout(request: Request) -> dict[str, Any]:
    _post(request, ANYONE)
    finish_session(request, web_of(request))
    return {"ok": True}


@router.get("/me")
def api_me(request: Request) -> dict[str, Any]:
    return _me(*signed_in(request, ANYONE))


@router.get("/labels")
def api_labels(request: Request) -> dict[str, Any]:
    web, _who = signed_in(request, ANYONE)
    return {"instructions": web.config.task.instructions, "labels": actions.label_buttons(web.project)}


# -- labeling ------------------------------------------------------------------------


@router.get("/task")
def api_task(request: Request) -> dict[str, Any]:
    """The caller's next task (leased to them), or ``{"task": null}`` when there is none."""
    web, who = signed_in(request, ANNOTATOR)
    return _task(web, actions.lease_next(web.project, who.annotator))


@router.get("/task/{assignment_id}")
def api_task_by_id(request: Request, assignment_id: int) -> dict[str, Any]:
    web, who = signed_in(request, ANNOTATOR)
    return _task(web, actions.own_task(web.project, who.annotator, assignment_id))


_answering("/answer", ANNOTATOR, actions.answer, name="api_answer", follow_up=True)


@router.post("/skip", openapi_extra=json_body_schema(SkipBody))
def api_skip(
    request: Request, sent: Annotated[tuple[Who, SkipBody], Depends(posting(ANNOTATOR, SkipBody))]
) -> dict[str, Any]:
    who, body = sent
    actions.skip(web_of(request).project, who.annotator, body.assignment_id)
    return {"ok": True}


@router.post("/undo")
def api_undo(request: Request, background: BackgroundTasks) -> dict[str, Any]:
    web, who = _post(request, ANNOTATOR)
    assignment_id = actions.undo(web.project, who.annotator)
    background.add_task(actions.follow_up_undone, web.project, assignment_id)
    return {"assignment_id": assignment_id}


# -- the exam --------------------------------------------------------------------------


@router.get("/exam/task")
def api_exam_task(request: Request) -> dict[str, Any]:
    web, who = signed_in(request, ONBOARDING)
    return _task(web, actions.exam_next(web.project, who.annotator))


_answering("/exam/answer", ONBOARDING, actions.exam_answer, name="api_exam_answer")


@router.get("/exam/result")
def api_exam_result(request: Request) -> dict[str, Any]:
    web, who = signed_in(request, EXAM_RESULT)
    result = actions.exam_outcome(web.project, who.annotator)
    if result is None:
        return {"result": None}
    return {
        "result": {
            "attempt": result.attempt,
            "correct": result.correct,
            "total": result.total,
            "passed": result.passed,
            "can_retry": result.can_retry,
            "review": [{"text": t, "your_label": g, "right": ok} for t, g, ok in result.review],
        },
        "status": who.annotator.status,
    }


@router.post("/exam/retry")
def api_exam_retry(request: Request) -> dict[str, Any]:
    web, who = _post(request, ONBOARDING)
    actions.exam_retry(web.project, who.annotator)
    return {"ok": True}


# -- experts ---------------------------------------------------------------------------


@router.get("/expert/tasks")
def api_expert_tasks(request: Request) -> dict[str, Any]:
    web, _who = signed_in(request, EXPERT)
    return actions.expert_overview(web.project)


@router.get("/expert/task")
def api_expert_task(request: Request, reason: str | None = None) -> dict[str, Any]:
    web, who = signed_in(request, EXPERT)
    return {"task": actions.expert_next(web.project, who.annotator, reason)}


_answering("/expert/answer", EXPERT, actions.expert_answer, name="api_expert_answer")


@router.post("/expert/skip", openapi_extra=json_body_schema(SkipBody))
def api_expert_skip(
    request: Request, sent: Annotated[tuple[Who, SkipBody], Depends(posting(EXPERT, SkipBody))]
) -> dict[str, Any]:
    who, body = sent
    actions.expert_skip(web_of(request).project, who.annotator, body.assignment_id)
    return {"ok": True}


# -- admins ------------------------------------------------------------------------------


@router.get("/admin/tables")
def api_admin_tables(request: Request) -> dict[str, Any]:
    web, _who = signed_in(request, ADMIN)
    return {"tables": list(TABLES)}


@router.get("/admin/tables/{name}")
def api_admin_table(request: Request, name: str) -> Response:
    web, _who = signed_in(request, ADMIN)
    frame = dashboard_table(web.project, name)
    return Response(frame.to_json(orient="records"), media_type="application/json")


@router.post("/admin/invitations", openapi_extra=json_body_schema(InviteBody))
def api_invite(
    request: Request, sent: Annotated[tuple[Who, InviteBody], Depends(posting(ADMIN, InviteBody))]
) -> dict[str, Any]:
    who, body = sent
    token = actions.invite(web_of(request).project, who.annotator, body.role)
    return {"role": body.role, "url": str(request.base_url).rstrip("/") + f"/invite/{token}"}


@router.post("/admin/accounts", openapi_extra=json_body_schema(AccountBody))
def api_add_account(
    request: Request, sent: Annotated[tuple[Who, AccountBody], Depends(posting(ADMIN, AccountBody))]
) -> dict[str, Any]:
    body = sent[1]
    annotator = actions.add_account(web_of(request).project, body.name, body.password, body.role)
    return {"name": annotator.name, "role": annotator.role, "status": annotator.status}


@router.post("/admin/status", openapi_extra=json_body_schema(StatusBody))
def api_status(
    request: Request, sent: Annotated[tuple[Who, StatusBody], Depends(posting(ADMIN, StatusBody))]
) -> dict[str, Any]:
    who, body = sent
    annotator = actions.change_status(web_of(request).project, who.annotator, body.name, body.status)
    return {"name": annotator.name, "status": annotator.status}
