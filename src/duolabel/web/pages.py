"""The HTML pages: logging in, invitations, labeling, the exam, help, the expert queue and
the admin dashboard. Each route checks who may use it and the form's CSRF token, calls one
of :mod:`duolabel.web.actions` and renders a template or redirects."""

from __future__ import annotations

import io
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from duolabel.errors import AccessError, ProjectError
from duolabel.export import defuse_formula
from duolabel.people.assignments import Note
from duolabel.web import actions
from duolabel.web.common import (
    ADMIN,
    ANNOTATOR,
    ANYONE,
    EXAM_RESULT,
    EXPERT,
    ONBOARDING,
    Web,
    Who,
    begin_session,
    finish_session,
    log_in,
    maybe_who,
    parse_id,
    posted,
    signed_in,
    web_of,
)
from duolabel.web.dashboard import TABLES, dashboard_table
from duolabel.web.itemview import cut_blocks, mark_terms

__all__ = ["router"]

router = APIRouter()

Field = Annotated[str, Form()]
Fields = Annotated[list[str] | None, Form()]


class AnswerForm:
    """The fields of an answer form (labeling, exam and expert pages alike); any may be missing.

    A list answer (the multi_label widget's checkboxes) comes as ``labels``, one field per
    checked box after an empty one the widget always sends, so that checking nothing is an
    answer too (the empty list)."""

    def __init__(
        self,
        csrf_token: Field = "",
        assignment_id: Field = "",
        label: Field = "",
        seconds: Field = "",
        labels: Fields = None,
        unsure: Field = "",
        comment: Field = "",
    ) -> None:
        self.csrf_token = csrf_token
        self.assignment_id = assignment_id
        self.label = label
        self.seconds = seconds
        self.labels = labels
        self.unsure = unsure
        self.comment = comment

    def answer(self) -> tuple[int, str | list[str], Note]:
        """The assignment id, label and note an answering action takes (a bad id is a
        ``ProjectError``).

        ``seconds`` (the page's own timer) is accepted and ignored: the server times answers."""
        note = Note.of(unsure=self.unsure, comment=self.comment)
        if self.labels is not None:
            return parse_id(self.assignment_id), [value for value in self.labels if value], note
        return parse_id(self.assignment_id), self.label, note


def _go(path: str) -> Response:
    return RedirectResponse(path, status_code=303)


# -- logging in and out, invitations ----------------------------------------------


@router.get("/login")
def login_page(request: Request) -> Response:
    web = web_of(request)
    if maybe_who(request, web) is not None:
        return _go("/")
    return web.render(request, "login.html", error=None, name="")


@router.post("/login")
def login(request: Request, csrf_token: Field = "", name: Field = "", password: Field = "") -> Response:
    web = web_of(request)
    web.check_csrf(request, csrf_token)
    try:
        log_in(request, web, name, password)
    except AccessError as exc:
        return web.render(request, "login.html", exc.status, error=str(exc), name=name)
    return _go("/")


@router.post("/logout")
def logout(request: Request, csrf_token: Field = "") -> Response:
    web = web_of(request)
    web.check_csrf(request, csrf_token, maybe_who(request, web))
    finish_session(request, web)
    return _go("/login")


@router.get("/invite/{token}")
def invite_page(request: Request, token: str) -> Response:
    web = web_of(request)
    role = actions.invitation(web.project, token)
    return web.render(request, "invite.html", role=role, token=token, error=None, name="")


@router.post("/invite/{token}")
def accept_invite(
    request: Request, token: str, csrf_token: Field = "", name: Field = "", password: Field = ""
) -> Response:
    web = web_of(request)
    web.check_csrf(request, csrf_token)
    role = actions.invitation(web.project, token)
    try:
        annotator = actions.join(web.project, token, name, password)
    except ProjectError as exc:
        return web.render(request, "invite.html", 400, role=role, token=token, error=str(exc), name=name)
    begin_session(request, web, annotator.id)
    return _go("/")


# -- where each account starts -------------------------------------------------------


@router.get("/")
def home(request: Request) -> Response:
    web, who = signed_in(request, ANYONE)
    if who.annotator.status == "onboarding":
        return _go("/exam")
    return _go({"annotator": "/label", "expert": "/expert", "admin": "/admin"}[who.annotator.role])


@router.get("/help")
def help_page(request: Request) -> Response:
    web, who = signed_in(request, ANYONE)
    return web.render(
        request,
        "help.html",
        who=who,
        instructions=web.config.task.instructions,
        labels=actions.label_buttons(web.project),
    )


# -- labeling --------------------------------------------------------------------------


def _progress(web: Web, who: Who) -> dict[str, Any]:
    done = actions.progress(web.project, who.annotator)
    return {"answers": done.answers, "earnings": f"{done.earnings:,.2f} {done.currency}", "left": done.left}


# A page shows this much of a longer item, with a "show all" link: a browser takes seconds
# to lay out a megabyte of text, on every task page of a long item (issue 12).
PREVIEW_CHARS = 20_000


def _label_page(
    request: Request, web: Web, who: Who, task: dict[str, Any], action: str, **context: Any
) -> Response:
    """The labeling page for one task (as :func:`~duolabel.web.actions.task_view` shows it:
    one block per text field, the highlight terms marked), answered by posting to ``action``;
    a long text is cut to its first ``PREVIEW_CHARS`` characters unless the page was asked for
    with ``?full=1``."""
    labels = actions.label_buttons(web.project)
    blocks, length = cut_blocks(task["blocks"], PREVIEW_CHARS)
    if length > PREVIEW_CHARS and request.query_params.get("full") != "1":
        context["full_text"] = {
            "link": f"{request.url.path}?full=1",
            "length": length,
            "shown": PREVIEW_CHARS,
        }
    else:
        blocks = task["blocks"]
    segments = [{**b, "segments": mark_terms(b["text"], task["highlight"])} for b in blocks]
    task = {**task, "blocks": segments}
    return web.render(request, "label.html", who=who, task=task, action=action, labels=labels, **context)


@router.get("/label")
def label_next(request: Request) -> Response:
    web, who = signed_in(request, ANNOTATOR)
    task = actions.lease_next(web.project, who.annotator)
    if task is None:
        return web.render(request, "label.html", who=who, task=None, labels=[], **_progress(web, who))
    return _go(f"/task/{task.assignment_id}")


@router.get("/task/{assignment_id}")
def task_page(request: Request, assignment_id: int) -> Response:
    web, who = signed_in(request, ANNOTATOR)
    task = actions.own_task(web.project, who.annotator, assignment_id)
    if task is None:
        return _go("/label")
    view = actions.task_view(web.project, task)
    undo_seconds = web.config.quality.undo_seconds
    return _label_page(request, web, who, view, "/answer", undo_seconds=undo_seconds, **_progress(web, who))


@router.post("/answer")
def answer(request: Request, form: Annotated[AnswerForm, Depends()], background: BackgroundTasks) -> Response:
    web, who = posted(request, ANNOTATOR, form.csrf_token)
    annotation = actions.answer(web.project, who.annotator, *form.answer())
    background.add_task(actions.follow_up, web.project, annotation.item_id)
    return _go("/label")


@router.post("/skip")
def skip(request: Request, csrf_token: Field = "", assignment_id: Field = "") -> Response:
    web, who = posted(request, ANNOTATOR, csrf_token)
    actions.skip(web.project, who.annotator, parse_id(assignment_id))
    return _go("/label")


@router.post("/undo")
def undo(request: Request, background: BackgroundTasks, csrf_token: Field = "") -> Response:
    web, who = posted(request, ANNOTATOR, csrf_token)
    assignment_id = actions.undo(web.project, who.annotator)
    background.add_task(actions.follow_up_undone, web.project, assignment_id)
    return _go(f"/task/{assignment_id}")


# -- the exam ----------------------------------------------------------------------------


@router.get("/exam")
def exam_page(request: Request) -> Response:
    web, who = signed_in(request, ONBOARDING)
    task = actions.exam_next(web.project, who.annotator)
    if task is None:
        return _go("/exam/result")
    quality = web.config.quality
    view = actions.task_view(web.project, task)
    sizes = {"exam_size": quality.exam_size, "pass_mark": quality.pass_mark}
    return _label_page(request, web, who, view, "/exam/answer", exam=True, **sizes)


@router.post("/exam/answer")
def exam_answer(request: Request, form: Annotated[AnswerForm, Depends()]) -> Response:
    web, who = posted(request, ONBOARDING, form.csrf_token)
    actions.exam_answer(web.project, who.annotator, *form.answer())
    finished = actions.exam_outcome(web.project, who.annotator) is not None
    return _go("/exam/result" if finished else "/exam")


@router.get("/exam/result")
def exam_result_page(request: Request) -> Response:
    web, who = signed_in(request, EXAM_RESULT)
    result = actions.exam_outcome(web.project, who.annotator)
    if result is None:
        return _go("/exam" if who.annotator.status == "onboarding" else "/")
    return web.render(request, "exam_result.html", who=who, result=result, status=who.annotator.status)


@router.post("/exam/retry")
def exam_retry(request: Request, csrf_token: Field = "") -> Response:
    web, who = posted(request, ONBOARDING, csrf_token)
    actions.exam_retry(web.project, who.annotator)
    return _go("/exam")


# -- experts --------------------------------------------------------------------------------


@router.get("/expert")
def expert_page(request: Request) -> Response:
    web, who = signed_in(request, EXPERT)
    return web.render(request, "expert.html", who=who, **actions.expert_overview(web.project))


@router.get("/expert/next")
def expert_next(request: Request, reason: str | None = None) -> Response:
    web, who = signed_in(request, EXPERT)
    view = actions.expert_next(web.project, who.annotator, reason or None)
    if view is None:
        return _go("/expert")
    return _label_page(request, web, who, view, "/expert/answer", expert=True)


@router.post("/expert/answer")
def expert_answer(request: Request, form: Annotated[AnswerForm, Depends()]) -> Response:
    web, who = posted(request, EXPERT, form.csrf_token)
    actions.expert_answer(web.project, who.annotator, *form.answer())
    return _go("/expert")


@router.post("/expert/skip")
def expert_skip(request: Request, csrf_token: Field = "", assignment_id: Field = "") -> Response:
    web, who = posted(request, EXPERT, csrf_token)
    actions.expert_skip(web.project, who.annotator, parse_id(assignment_id))
    return _go("/expert")


# -- admins -------------------------------------------------------------------------------------


def _admin_context(web: Web) -> dict[str, Any]:
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
    web, who = signed_in(request, ADMIN)
    return web.render(request, "admin.html", who=who, invitation=None, **_admin_context(web))


@router.get("/admin/tables")
def admin_tables(request: Request) -> Response:
    """The dashboard's tables alone: what htmx swaps in every few seconds."""
    web, who = signed_in(request, ADMIN)
    return web.render(request, "admin_tables.html", who=who, **_admin_context(web))


@router.get("/admin/{name}.csv")
def admin_csv(request: Request, name: str) -> Response:
    web, _who = signed_in(request, ADMIN)
    frame = dashboard_table(web.project, name)
    buffer = io.StringIO()
    frame.map(defuse_formula).to_csv(buffer, index=False)
    return Response(
        buffer.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}.csv"'},
    )


@router.post("/admin/invite")
def admin_invite(request: Request, csrf_token: Field = "", role: Field = "annotator") -> Response:
    web, who = posted(request, ADMIN, csrf_token)
    token = actions.invite(web.project, who.annotator, role)
    link = str(request.base_url).rstrip("/") + f"/invite/{token}"
    return web.render(
        request, "admin.html", who=who, invitation={"role": role, "link": link}, **_admin_context(web)
    )


@router.post("/admin/accounts")
def admin_add_account(
    request: Request,
    csrf_token: Field = "",
    name: Field = "",
    password: Field = "",
    role: Field = "annotator",
) -> Response:
    web, _who = posted(request, ADMIN, csrf_token)
    actions.add_account(web.project, name, password, role)
    return _go("/admin")


@router.post("/admin/status")
def admin_status(request: Request, csrf_token: Field = "", name: Field = "", status: Field = "") -> Response:
    web, who = posted(request, ADMIN, csrf_token)
    actions.change_status(web.project, who.annotator, name, status)
    return _go("/admin")
