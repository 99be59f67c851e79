"""The synthetic review page (issue 16, item 2): experts and admins see the synthetic items
one at a time with their intended label and taxonomy leaf and accept (key a) or reject
(key r) each; the decision is stored by :mod:`duolabel.synthetic_review`, and a rejected
item never trains. Every POST carries the CSRF token like the other forms; the keys are
label.js's (a button's ``data-key``).

The same review as JSON under ``/api/v1/expert/synthetic`` (the rules of :mod:`duolabel.web.api`:
the ``X-CSRF-Token`` header on every POST, JSON bodies): ``items`` (a page of items, filtered by
review state, label and leaf), ``review`` (accept or reject one; idempotent) and ``summary``
(:mod:`duolabel.synthetic_decisions`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from duolabel.errors import ProjectError
from duolabel.synthetic import synthetic_summary
from duolabel.synthetic_decisions import decide_synthetic, list_synthetic, review_summary
from duolabel.synthetic_review import next_to_review, review_synthetic
from duolabel.web.api import JsonBody, json_body_schema, posting
from duolabel.web.common import EXPERT, Web, Who, posted, signed_in, web_of

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


# -- the JSON API ---------------------------------------------------------------------------


class ReviewBody(JsonBody):
    item_id: str
    decision: str  # accept | reject


@router.get("/api/v1/expert/synthetic/items")
def api_synthetic_items(
    request: Request,
    review: str = "pending",
    label: str | None = None,
    leaf: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> dict[str, Any]:
    """A page of synthetic items: ``review`` pending (default), accepted, rejected or all."""
    web, _who = signed_in(request, EXPERT)
    page = list_synthetic(web.project, review=review, label=label, leaf=leaf, offset=offset, limit=limit)
    return {"items": page.items, "total": page.total, "offset": page.offset, "limit": page.limit}


@router.post("/api/v1/expert/synthetic/review", openapi_extra=json_body_schema(ReviewBody))
def api_synthetic_review(
    request: Request, sent: Annotated[tuple[Who, ReviewBody], Depends(posting(EXPERT, ReviewBody))]
) -> dict[str, Any]:
    """Accept or reject one synthetic item as the caller; the same decision again changes nothing."""
    who, body = sent
    decided = decide_synthetic(web_of(request).project, body.item_id, body.decision, reviewer_id=who.id)
    return {
        "item_id": decided.item_id,
        "review": decided.review,
        "reviewed_by": decided.reviewed_by,
        "reviewed_at": decided.reviewed_at,
        "changed": decided.changed,
    }


@router.get("/api/v1/expert/synthetic/summary")
def api_synthetic_summary(request: Request) -> dict[str, Any]:
    """Items, pending, accepted, rejected and the acceptance rate in all, per label and per leaf."""
    web, _who = signed_in(request, EXPERT)
    return review_summary(web.project)
