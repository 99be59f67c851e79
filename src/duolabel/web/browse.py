"""The admin item browser: search and filter items, open one, correct its final label, run
"aggregate now" and "draw an audit", and see the charts (admins only; every POST carries
the CSRF token like the other admin forms). The queries are :mod:`duolabel.web.items`'s,
the charts :mod:`duolabel.web.charts`'s."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from duolabel.errors import ProjectError
from duolabel.people.assignments import Note
from duolabel.pipeline import aggregate
from duolabel.stages.audit import draw_audit
from duolabel.web.charts import charts
from duolabel.web.common import ADMIN, Web, Who, posted, signed_in
from duolabel.web.items import AGREEMENT, ROUTES, SOURCES, ItemFilter, correct_label, find_items, item_detail

__all__ = ["router"]

router = APIRouter()

Field = Annotated[str, Form()]
Fields = Annotated[list[str] | None, Form()]


def _items_page(request: Request, web: Web, who: Who, status: int = 200, **context: Any) -> Response:
    """The browser with the search of the request's query string (the whole project if none)."""
    filters = ItemFilter.of(dict(request.query_params))
    found = find_items(web.project, filters)
    query = {k: v for k, v in request.query_params.items() if k != "page" and v}
    return web.render(
        request,
        "admin_items.html",
        status,
        who=who,
        found=found,
        query=query,
        routes=ROUTES,
        sources=SOURCES,
        agreements=AGREEMENT,
        labels=web.config.task.label_names,
        charts=charts(web.project),
        **context,
    )


@router.get("/admin/items")
def items_page(request: Request) -> Response:
    web, who = signed_in(request, ADMIN)
    return _items_page(request, web, who, message=None)


@router.get("/admin/item")
def item_page(request: Request, id: str = "") -> Response:
    web, who = signed_in(request, ADMIN)
    return _item_page(request, web, who, id, message=None)


def _item_page(request: Request, web: Web, who: Who, item_id: str, **context: Any) -> Response:
    detail = item_detail(web.project, item_id)
    labels = [{"name": name, "key": None, "description": ""} for name in web.config.task.label_names]
    return web.render(request, "admin_item.html", who=who, item=detail, labels=labels, **context)


@router.post("/admin/item/label")
def item_correct(
    request: Request,
    csrf_token: Field = "",
    item_id: Field = "",
    label: Field = "",
    labels: Fields = None,
    comment: Field = "",
) -> Response:
    web, who = posted(request, ADMIN, csrf_token)
    answer: str | list[str] = [value for value in labels if value] if labels is not None else label
    try:
        final = correct_label(web.project, who.id, item_id, answer, Note.of(comment=comment))
    except ProjectError as exc:
        return _item_page(request, web, who, item_id, message=str(exc), failed=True)
    message = f"The final label is now {final['label']} ({final['source']}), recorded as your expert answer."
    return _item_page(request, web, who, item_id, message=message, failed=False)


@router.post("/admin/aggregate")
def aggregate_now(request: Request, csrf_token: Field = "") -> Response:
    web, who = posted(request, ADMIN, csrf_token)
    result = aggregate(web.project)
    message = (
        f"Aggregated: {result.finalized:,} items finalized from {result.answers:,} answers; "
        f"{result.waiting:,} still waiting for answers."
    )
    return _items_page(request, web, who, message=message)


@router.post("/admin/audit")
def audit_now(request: Request, csrf_token: Field = "") -> Response:
    web, who = posted(request, ADMIN, csrf_token)
    drawn = draw_audit(web.project)
    message = f"Audit drawn: {drawn.drawn:,} shipped labels put in the experts' queue."
    return _items_page(request, web, who, message=message)
