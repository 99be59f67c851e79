"""The HTML pages: labeling, the exam, help, the expert queue and the admin dashboard."""

from __future__ import annotations

import io
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from duolabel.accounts import add_annotator, create_invitation, set_status
from duolabel.errors import AccessError, ProjectError
from duolabel.exam import exam_result, exam_task, retry_exam
from duolabel.queue import (
    WORK_KINDS,
    Task,
    answers_given,
    expert_queue_counts,
    lease_task,
    next_expert_task,
    open_expert_tasks,
    skip_task,
    submit_answer,
    submit_expert_answer,
    undo_last_answer,
)
from duolabel.store import Assignment, Item
from duolabel.store.tables import utcnow
from duolabel.web.common import (
    ADMIN,
    ANNOTATOR,
    ANYONE,
    EXAM_RESULT,
    EXPERT,
    ONBOARDING,
    Web,
    Who,
    parse_id,
    parse_seconds,
)
from duolabel.web.dashboard import TABLES, dashboard_table

router = APIRouter()

Field = Annotated[str, Form()]


def _web(request: Request) -> Web:
    return request.app.state.web


def _go(path: str) -> Response:
    return RedirectResponse(path, status_code=303)


# -- where each account starts -------------------------------------------------------


@router.get("/")
def home(request: Request) -> Response:
    web = _web(request)
    who = web.who(request, ANYONE)
    if who.annotator.status == "onboarding":
        return _go("/exam")
    return _go({"annotator": "/label", "expert": "/expert", "admin": "/admin"}[who.annotator.role])


@router.get("/help")
def help_page(request: Request) -> Response:
    web = _web(request)
    who = web.who(request, ANYONE)
    return web.render(
        request, "help.html", who=who, instructions=web.config.task.instructions, labels=web.label_buttons()
    )


# -- labeling --------------------------------------------------------------------------


def lease_for(web: Web, who: Who) -> Task | None:
    quality = web.config.quality
    return lease_task(
        web.store,
        who.id,
        lease_minutes=quality.lease_minutes,
        control_rate=quality.control_rate,
        exam_pool=quality.exam_size * (1 + quality.exam_retries),
    )


def open_task(web: Web, who: Who, assignment_id: int, kinds: tuple[str, ...] = WORK_KINDS) -> Task | None:
    """The caller's own task by id: ``None`` when it is closed, ``AccessError`` 404 if not theirs."""
    with web.store.read() as session:
        assignment = session.get(Assignment, assignment_id)
        if assignment is None or assignment.annotator_id != who.id or assignment.kind not in kinds:
            raise AccessError(f"task {assignment_id} is not one of yours", status=404)
        if assignment.state != "leased":
            return None
        item = session.get(Item, assignment.item_id)
        assert item is not None
        return Task(assignment.id, item, assignment.lease_expires, assignment.kind)


def progress(web: Web, who: Who) -> dict[str, Any]:
    answers = answers_given(web.store, who.id)
    costs = web.config.costs
    return {
        "answers": answers,
        "earnings": f"{answers * costs.human_answer:,.2f} {costs.currency}",
    }


@router.get("/label")
def label_next(request: Request) -> Response:
    web = _web(request)
    who = web.who(request, ANNOTATOR)
    task = lease_for(web, who)
    if task is None:
        return web.render(request, "label.html", who=who, task=None, labels=[], **progress(web, who))
    return _go(f"/task/{task.assignment_id}")


@router.get("/task/{assignment_id}")
def task_page(request: Request, assignment_id: int) -> Response:
    web = _web(request)
    who = web.who(request, ANNOTATOR)
    task = open_task(web, who, assignment_id)
    if task is None:
        return _go("/label")
    return web.render(
        request,
        "label.html",
        who=who,
        task=web.task_view(task),
        action="/answer",
        labels=web.label_buttons(),
        undo_seconds=web.config.quality.undo_seconds,
        **progress(web, who),
    )


@router.post("/answer")
def answer(
    request: Request,
    csrf_token: Field = "",
    assignment_id: Field = "",
    label: Field = "",
    seconds: Field = "",
) -> Response:
    web = _web(request)
    who = web.who(request, ANNOTATOR)
    web.check_csrf(request, csrf_token, who)
    submit_answer(
        web.store,
        who.id,
        parse_id(assignment_id),
        label,
        labels=web.labels,
        seconds=parse_seconds(seconds),
        quality=web.config.quality,
    )
    return _go("/label")


@router.post("/skip")
def skip(request: Request, csrf_token: Field = "", assignment_id: Field = "") -> Response:
    web = _web(request)
    who = web.who(request, ANNOTATOR)
    web.check_csrf(request, csrf_token, who)
    skip_task(web.store, who.id, parse_id(assignment_id))
    return _go("/label")


@router.post("/undo")
def undo(request: Request, csrf_token: Field = "") -> Response:
    web = _web(request)
    who = web.who(request, ANNOTATOR)
    web.check_csrf(request, csrf_token, who)
    quality = web.config.quality
    assignment_id = undo_last_answer(
        web.store,
        who.id,
        window_seconds=quality.undo_seconds,
        lease_minutes=quality.lease_minutes,
        quality=quality,
    )
    return _go(f"/task/{assignment_id}")


# -- the exam ----------------------------------------------------------------------------


@router.get("/exam")
def exam_page(request: Request) -> Response:
    web = _web(request)
    who = web.who(request, ONBOARDING)
    quality = web.config.quality
    task = exam_task(web.store, who.id, quality=quality, lease_minutes=quality.lease_minutes)
    if task is None:
        return _go("/exam/result")
    return web.render(
        request,
        "label.html",
        who=who,
        task=web.task_view(task),
        action="/exam/answer",
        exam=True,
        labels=web.label_buttons(),
        exam_size=quality.exam_size,
        pass_mark=quality.pass_mark,
    )


@router.post("/exam/answer")
def exam_answer(
    request: Request,
    csrf_token: Field = "",
    assignment_id: Field = "",
    label: Field = "",
    seconds: Field = "",
) -> Response:
    web = _web(request)
    who = web.who(request, ONBOARDING)
    web.check_csrf(request, csrf_token, who)
    assignment = parse_id(assignment_id)
    open_task(web, who, assignment, ("exam",))
    submit_answer(
        web.store,
        who.id,
        assignment,
        label,
        labels=web.labels,
        seconds=parse_seconds(seconds),
        quality=web.config.quality,
    )
    finished = exam_result(web.store, who.id, quality=web.config.quality) is not None
    return _go("/exam/result" if finished else "/exam")


@router.get("/exam/result")
def exam_result_page(request: Request) -> Response:
    web = _web(request)
    who = web.who(request, EXAM_RESULT)
    result = exam_result(web.store, who.id, quality=web.config.quality)
    if result is None:
        return _go("/exam" if who.annotator.status == "onboarding" else "/")
    return web.render(request, "exam_result.html", who=who, result=result, status=who.annotator.status)


@router.post("/exam/retry")
def exam_retry(request: Request, csrf_token: Field = "") -> Response:
    web = _web(request)
    who = web.who(request, ONBOARDING)
    web.check_csrf(request, csrf_token, who)
    retry_exam(web.store, who.id, quality=web.config.quality)
    return _go("/exam")


# -- experts --------------------------------------------------------------------------------


@router.get("/expert")
def expert_page(request: Request) -> Response:
    web = _web(request)
    who = web.who(request, EXPERT)
    return web.render(
        request,
        "expert.html",
        who=who,
        counts=expert_queue_counts(web.store),
        escalated=open_expert_tasks(web.store, reason="escalated"),
        audit=open_expert_tasks(web.store, reason="audit"),
    )


@router.get("/expert/next")
def expert_next(request: Request, reason: str | None = None) -> Response:
    web = _web(request)
    who = web.who(request, EXPERT)
    task = next_expert_task(
        web.store, who.id, lease_minutes=web.config.quality.lease_minutes, reason=reason or None
    )
    if task is None:
        return _go("/expert")
    view = web.task_view(Task(task.assignment_id, task.item, utcnow(), task.reason))
    view["reason"] = task.reason
    view["item_id"] = task.item.id  # experts are trusted, and audits are about named items
    return web.render(
        request,
        "label.html",
        who=who,
        task=view,
        action="/expert/answer",
        expert=True,
        labels=web.label_buttons(),
    )


@router.post("/expert/answer")
def expert_answer(
    request: Request,
    csrf_token: Field = "",
    assignment_id: Field = "",
    label: Field = "",
    seconds: Field = "",
) -> Response:
    web = _web(request)
    who = web.who(request, EXPERT)
    web.check_csrf(request, csrf_token, who)
    submit_expert_answer(
        web.store, who.id, parse_id(assignment_id), label, labels=web.labels, seconds=parse_seconds(seconds)
    )
    return _go("/expert")


# -- admins -------------------------------------------------------------------------------------


def admin_context(web: Web) -> dict[str, Any]:
    tables = {name: dashboard_table(web.project, name) for name in TABLES}
    return {"tables": {name: _rows(frame) for name, frame in tables.items()}}


def _rows(frame: Any) -> dict[str, Any]:
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    return {"columns": list(frame.columns), "rows": [[_cell(r[c]) for c in frame.columns] for r in records]}


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:,.2f}"
    return "" if value is None else value


@router.get("/admin")
def admin_page(request: Request) -> Response:
    web = _web(request)
    who = web.who(request, ADMIN)
    return web.render(request, "admin.html", who=who, invitation=None, **admin_context(web))


@router.get("/admin/tables")
def admin_tables(request: Request) -> Response:
    """The dashboard's tables alone: what htmx swaps in every few seconds."""
    web = _web(request)
    who = web.who(request, ADMIN)
    return web.render(request, "admin_tables.html", who=who, **admin_context(web))


@router.get("/admin/{name}.csv")
def admin_csv(request: Request, name: str) -> Response:
    web = _web(request)
    web.who(request, ADMIN)
    frame = dashboard_table(web.project, name)
    buffer = io.StringIO()
    _defuse_formulas(frame).to_csv(buffer, index=False)
    return Response(
        buffer.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}.csv"'},
    )


def _defuse_formulas(frame: Any) -> Any:
    """Text cells that a spreadsheet would run as a formula (a name like ``=HYPERLINK(...)``)
    get a leading apostrophe (OWASP's advice against CSV injection)."""

    def defuse(value: Any) -> Any:
        return (
            "'" + value if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
        )

    return frame.map(defuse)


@router.post("/admin/invite")
def admin_invite(request: Request, csrf_token: Field = "", role: Field = "annotator") -> Response:
    web = _web(request)
    who = web.who(request, ADMIN)
    web.check_csrf(request, csrf_token, who)
    token = create_invitation(web.store, role=role, hours=web.config.web.invitation_hours, created_by=who.id)
    link = str(request.base_url).rstrip("/") + f"/invite/{token}"
    return web.render(
        request, "admin.html", who=who, invitation={"role": role, "link": link}, **admin_context(web)
    )


@router.post("/admin/accounts")
def admin_add_account(
    request: Request,
    csrf_token: Field = "",
    name: Field = "",
    password: Field = "",
    role: Field = "annotator",
) -> Response:
    web = _web(request)
    who = web.who(request, ADMIN)
    web.check_csrf(request, csrf_token, who)
    add_annotator(web.store, name, password, role=role)
    return _go("/admin")


@router.post("/admin/status")
def admin_status(request: Request, csrf_token: Field = "", name: Field = "", status: Field = "") -> Response:
    web = _web(request)
    who = web.who(request, ADMIN)
    web.check_csrf(request, csrf_token, who)
    if name.strip() == who.annotator.name:
        raise ProjectError("you cannot change the status of your own account")
    set_status(web.store, name, status)
    return _go("/admin")
