"""The synthetic review page (issue 16, item 2): experts and admins see the synthetic items
one at a time with their intended label and taxonomy leaf and accept (key a) or reject
(key r) each; the decision is stored by :mod:`duolabel.synthetic_review`, and a rejected
item never trains. Every POST carries the CSRF token like the other forms; the keys are
label.js's (a button's ``data-key``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from duolabel.errors import ProjectError
from duolabel.synthetic import synthetic_summary
from duolabel.synthetic_review import next_to_review, review_synthetic
from duolabel.web.common import EXPERT, Web, Who, posted, signed_in

__all__ = ["router"]

router = APIRouter()

Field = Annotated[str, Form()]


def _page(request: Request, web: Web, who: Who, status: int = 200, **context: Any) -> Response:
    summary = synthetic_summary(web.project)
    return web.render(
        request,
        "synthetic_review.html",
        status,
        who=who,
        item=next_to_review(web.project),
        review=summary["review"] if summary else None,
        **context,
    )


@router.get("/expert/synthetic")
def review_page(request: Request) -> Response:
    web, who = signed_in(request, EXPERT)
    return _page(request, web, who, message=None)


@router.post("/expert/synthetic/review")
def review_post(
    request: Request, csrf_token: Field = "", item_id: Field = "", decision: Field = ""
) -> Response:
    web, who = posted(request, EXPERT, csrf_token)
    try:
        review_synthetic(web.project, who.id, item_id, decision)
    except ProjectError as exc:
        return _page(request, web, who, 400, message=str(exc), failed=True)
    return _page(request, web, who, message=f"{item_id}: {decision}.", failed=False)
