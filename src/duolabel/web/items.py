"""The admin item browser's queries: find items, open one, correct its final label.

A search filters on the item's text or id, its role, its routing decision, its final label,
the routing confidence, its batch and how people agreed on it; results come a page at a
time in import order. :func:`item_detail` gathers one item's prediction(s), route, answers,
final label and history. :func:`correct_label` records an admin's correction as an expert
answer (an escalated expert task leased to the admin and answered through the expert
queue's own path), then makes the expert answers final labels, so a correction is a
recorded answer with a name like any other, never a silent edit of ``final_labels``.

Known labels stay off these pages: a golden or control item's gold label and final label
(its gold label again) are never shown, never matched by the label filter and cannot be
corrected here (the exam and controls must stay unknowable to anyone who reads over an
admin's shoulder; ``duolabel golden`` manages them).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, or_, select

from duolabel.context import Context
from duolabel.core.tasks import task_type
from duolabel.errors import ProjectError, shown
from duolabel.people.assignments import GOLD_ROLES, Note, check_answer, new_lease
from duolabel.people.experts import enqueue_expert, submit_expert_answer
from duolabel.stages.audit import apply_expert_answers
from duolabel.store import (
    Annotation,
    Annotator,
    Assignment,
    Audit,
    ExpertTask,
    FinalLabel,
    Item,
    Prediction,
    Route,
)
from duolabel.store.tables import utcnow
from duolabel.training_data import STOP_SET_SUFFIX

__all__ = [
    "AGREEMENT",
    "PER_PAGE",
    "ROUTES",
    "SOURCES",
    "ItemFilter",
    "ItemPage",
    "correct_label",
    "find_items",
    "item_detail",
]

PER_PAGE = 50
#: Agreement among the crowd's answers to an item: no answer, one, all the same, not all the same.
AGREEMENT = ("none", "single", "unanimous", "split")
#: Routing decisions, and "unrouted" for items without one.
ROUTES = ("accept", "humans", "expert", "unrouted")
#: Where a final label came from.
SOURCES = ("model", "humans", "fused", "expert")
_PREVIEW = 160
#: The largest page number asked for (one past the last page shows the last page).
MAX_PAGE = 10**9 - 1
_PAGE = re.compile(r"[0-9]{1,9}")


@dataclass(frozen=True)
class ItemFilter:
    """What to look for; an empty field (or ``None``) does not filter.

    ``text`` matches the text or the id (case-insensitive substring), ``route`` the routing
    decision (one of :data:`ROUTES`), ``label`` the final label and ``source`` where it came
    from (one of :data:`SOURCES`), ``min_confidence`` /
    ``max_confidence`` the confidence routing saw, ``agreement`` one of :data:`AGREEMENT`.

    Examples
    --------
    >>> found = ItemFilter.of({"text": " refund ", "min_confidence": "0.5", "page": "2"})
    >>> found.text, found.min_confidence, found.max_confidence, found.page
    ('refund', 0.5, None, 2)
    """

    text: str = ""
    role: str = ""
    route: str = ""
    label: str = ""
    source: str = ""
    batch: str = ""
    agreement: str = ""
    min_confidence: float | None = None
    max_confidence: float | None = None
    page: int = 1

    @classmethod
    def of(cls, values: dict[str, Any]) -> ItemFilter:
        """A filter from a query string's values; ``ProjectError`` naming a bad one."""

        def number(name: str) -> float | None:
            raw = str(values.get(name) or "").strip()
            if not raw:
                return None
            try:
                value = float(raw)
            except ValueError:
                value = math.nan
            if not 0 <= value <= 1:  # also refuses nan, inf and 1e999 (inf)
                raise ProjectError(f"{name} must be a number between 0 and 1, got {shown(raw)}")
            return value

        def text(name: str) -> str:
            return str(values.get(name) or "").strip()

        for name, allowed in (("route", ROUTES), ("source", SOURCES), ("agreement", AGREEMENT)):
            if text(name) and text(name) not in allowed:
                raise ProjectError(f"{name} must be one of {', '.join(allowed)}, got {shown(text(name))}")
        page = text("page") or "1"
        # ASCII digits only: str.isdigit() also takes "²" and "①", which int() refuses.
        if not _PAGE.fullmatch(page) or int(page) < 1:
            raise ProjectError(f"page must be a whole number from 1 to {MAX_PAGE:,}, got {shown(page)}")
        return cls(
            text=text("text"),
            role=text("role"),
            route=text("route"),
            label=text("label"),
            source=text("source"),
            batch=text("batch"),
            agreement=text("agreement"),
            min_confidence=number("min_confidence"),
            max_confidence=number("max_confidence"),
            page=int(page),
        )


@dataclass
class ItemPage:
    """One page of a search: its rows (dicts), the number of matches and the page count."""

    rows: list[dict[str, Any]]
    total: int
    page: int
    pages: int
    filters: ItemFilter = field(default_factory=ItemFilter)


def _crowd(column: Any) -> ColumnElement[int]:
    """Per item: a count over its crowd answers (regular ones; experts and controls apart)."""
    return (
        select(column)
        .where(Annotation.item_id == Item.id, Annotation.kind == "regular")
        .correlate(Item)
        .scalar_subquery()
    )


def _like(text: str) -> str:
    """A LIKE pattern that finds ``text`` anywhere, its wildcards taken as text (escape ``\\``)."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _search(filters: ItemFilter, *, list_valued: bool = False) -> Select[*tuple[Any, ...]]:
    """The filtered item rows (unordered, not paged); ``list_valued`` when a final label is a
    JSON list of labels (multi_label), which the label filter then looks inside."""
    answers = _crowd(func.count(Annotation.id))
    distinct = _crowd(func.count(Annotation.label.distinct()))
    known = Item.role.in_(GOLD_ROLES)
    query: Select[*tuple[Any, ...]] = (
        select(
            Item.id,
            Item.text,
            Item.batch,
            Item.role,
            Route.decision,
            Route.confidence,
            FinalLabel.label,  # blanked for known items after the query: see the module docstring
            FinalLabel.source,
            answers.label("answers"),
            distinct.label("distinct"),
        )
        .outerjoin(Route, Route.item_id == Item.id)
        .outerjoin(FinalLabel, FinalLabel.item_id == Item.id)
    )
    if filters.text:
        pattern = _like(filters.text)
        query = query.where(or_(Item.text.ilike(pattern, escape="\\"), Item.id.ilike(pattern, escape="\\")))
    if filters.role:
        query = query.where(Item.role == filters.role)
    if filters.route == "unrouted":
        query = query.where(Route.decision.is_(None))
    elif filters.route:
        query = query.where(Route.decision == filters.route)
    if filters.label and list_valued:
        quoted = json.dumps(filters.label, ensure_ascii=False)  # as the list stores it
        query = query.where(FinalLabel.label.like(_like(quoted), escape="\\"), ~known)
    elif filters.label:
        query = query.where(FinalLabel.label == filters.label, ~known)
    if filters.source:
        query = query.where(FinalLabel.source == filters.source, ~known)
    if filters.batch:
        query = query.where(Item.batch == filters.batch)
    if filters.min_confidence is not None:
        query = query.where(Route.confidence >= filters.min_confidence)
    if filters.max_confidence is not None:
        query = query.where(Route.confidence <= filters.max_confidence)
    agreement = {
        "none": answers == 0,
        "single": answers == 1,
        "unanimous": and_(answers > 1, distinct == 1),
        "split": distinct > 1,
    }
    if filters.agreement:
        query = query.where(agreement[filters.agreement])
    return query


def find_items(ctx: Context, filters: ItemFilter, *, per_page: int = PER_PAGE) -> ItemPage:
    """One page of the items that match ``filters``, in import order, with the model's
    latest label and confidence of each.

    Examples
    --------
    >>> import tempfile, duolabel, pandas as pd
    >>> project = duolabel.init_project(tempfile.mkdtemp(), labels=["spam", "ham"])
    >>> _ = project.add_items(pd.DataFrame({"id": ["m1", "m2"], "text": ["Win money!", "Hi mum"]}))
    >>> found = find_items(project, ItemFilter(text="MONEY"))
    >>> found.total, [row["id"] for row in found.rows]
    (1, ['m1'])
    >>> project.close()
    """
    query = _search(filters, list_valued=task_type(ctx.config.task.type).list_valued)
    with ctx.store.read() as session:
        # Counted over the ids alone: the answer counts per item are computed for one page only.
        matches = query.with_only_columns(Item.id).subquery()
        total = int(session.scalar(select(func.count()).select_from(matches)) or 0)
        pages = max(1, -(-total // per_page))
        page = min(filters.page, pages)
        rows = session.execute(query.order_by(Item.seq).offset((page - 1) * per_page).limit(per_page)).all()
        models = _models(session, [row.id for row in rows])
    out = []
    for row in rows:
        known = row.role in GOLD_ROLES
        text = row.text if len(row.text) <= _PREVIEW else row.text[:_PREVIEW] + "…"
        out.append(
            {
                "id": row.id,
                "text": text,
                "batch": row.batch,
                "role": row.role,
                "route": row.decision or "unrouted",
                "confidence": row.confidence,
                "model": models.get(row.id),
                "label": None if known else row.label,
                "source": None if known else row.source,
                "answers": int(row.answers or 0),
                "agreement": _agreement(int(row.answers or 0), int(row.distinct or 0)),
            }
        )
    return ItemPage(out, total, page, pages, filters)


def _agreement(answers: int, distinct: int) -> str:
    if answers == 0:
        return "none"
    if answers == 1:
        return "single"
    return "unanimous" if distinct == 1 else "split"


def _models(session: Any, item_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The latest usable prediction of each item: label and (calibrated, else raw) confidence."""
    if not item_ids:
        return {}
    rows = session.execute(
        select(
            Prediction.item_id,
            Prediction.label,
            func.coalesce(Prediction.confidence, Prediction.raw_confidence),
            Prediction.id,
        )
        .where(
            Prediction.item_id.in_(item_ids),
            Prediction.abstained.is_(False),
            Prediction.model_version.not_like(f"%{STOP_SET_SUFFIX}"),  # the learning loop's own
        )
        .order_by(Prediction.id)
    ).all()
    return {item_id: {"label": label, "confidence": confidence} for item_id, label, confidence, _ in rows}


# -- one item ------------------------------------------------------------------------------


def item_detail(ctx: Context, item_id: str) -> dict[str, Any]:
    """Everything about one item: its fields, predictions, route, answers (with names and
    notes), final label and its history (events in time order); ``ProjectError`` if unknown."""
    with ctx.store.read() as session:
        item = session.get(Item, item_id)
        if item is None:
            raise ProjectError(f"there is no item {shown(item_id)}")
        known = item.role in GOLD_ROLES
        predictions = session.execute(
            select(
                Prediction.labeler,
                Prediction.model_version,
                Prediction.label,
                Prediction.raw_confidence,
                Prediction.confidence,
                Prediction.abstained,
                Prediction.created_at,
            )
            .where(Prediction.item_id == item_id)
            .order_by(Prediction.id)
        ).all()
        route = session.get(Route, item_id)
        answers = session.execute(
            select(
                Annotator.name,
                Annotation.label,
                Annotation.kind,
                Annotation.unsure,
                Annotation.comment,
                Annotation.seconds,
                Annotation.created_at,
            )
            .join(Annotator, Annotator.id == Annotation.annotator_id)
            .where(Annotation.item_id == item_id)
            .order_by(Annotation.id)
        ).all()
        final = session.get(FinalLabel, item_id)
        leases = session.execute(
            select(Annotator.name, Assignment.kind, Assignment.state, Assignment.created_at)
            .join(Annotator, Annotator.id == Assignment.annotator_id)
            .where(Assignment.item_id == item_id)
            .order_by(Assignment.id)
        ).all()
        tasks = session.execute(
            select(ExpertTask.reason, ExpertTask.state, ExpertTask.created_at, ExpertTask.done_at)
            .where(ExpertTask.item_id == item_id)
            .order_by(ExpertTask.id)
        ).all()
        audits = session.execute(
            select(Audit.label, Audit.source, Audit.band, Audit.created_at)
            .where(Audit.item_id == item_id)
            .order_by(Audit.id)
        ).all()
    # Controls and golden items: their answers are people's to see here, never the key.
    shown_answers = [
        {**row._asdict(), "label": row.label if not (known and row.kind == "expert") else "(hidden)"}
        for row in answers
    ]
    history: list[tuple[datetime, str]] = [
        (item.created_at, f"imported into batch {item.batch!r} as {item.role}")
    ]
    history += [
        (
            p.created_at,
            f"{p.labeler} ({p.model_version}) " + ("abstained" if p.abstained else f"said {p.label}"),
        )
        for p in predictions
    ]
    if route is not None:
        history.append((route.created_at, f"routed: {route.decision} (overlap {route.overlap})"))
    history += [(a.created_at, f"{a.kind} task for {a.name}: {a.state}") for a in leases]
    history += [(a["created_at"], f"{a['kind']} answer by {a['name']}: {a['label']}") for a in shown_answers]
    history += [(t.created_at, f"expert task ({t.reason}) opened") for t in tasks]
    history += [(t.done_at, f"expert task ({t.reason}) done") for t in tasks if t.done_at is not None]
    history += [(a.created_at, f"audit drawn ({a.source}, {a.band})") for a in audits]
    if final is not None and not known:
        history.append((final.updated_at, f"final label {final.label} ({final.source})"))
    history.sort(key=lambda event: event[0])
    return {
        "id": item.id,
        "text": item.text,
        "text_parts": item.text_parts,
        "fields": item.fields or {},
        "batch": item.batch,
        "role": item.role,
        "known": known,
        "predictions": [p._asdict() for p in predictions],
        "route": None
        if route is None
        else {"decision": route.decision, "overlap": route.overlap, "confidence": route.confidence},
        "answers": shown_answers,
        "final": None
        if final is None or known
        else {
            "label": final.label,
            "source": final.source,
            "confidence": final.confidence,
            "votes": final.votes,
            "annotators": final.annotators,
        },
        "history": [{"at": at, "event": event} for at, event in history],
    }


def correct_label(
    ctx: Context, admin_id: int, item_id: str, label: str | list[str], note: Note | None = None
) -> dict[str, Any]:
    """Record an admin's correction as an expert answer and make it the item's final label.

    The item gets an escalated expert task, leased to the admin and answered through the
    expert queue's path (:func:`~duolabel.people.experts.submit_expert_answer`), then the
    expert answers become final labels (:func:`~duolabel.stages.audit.apply_expert_answers`).
    ``ProjectError`` for an unknown item, a golden or control item, a label that is not an
    answer of the task, or an item this admin has answered already (one answer per person).
    """
    kind = task_type(ctx.config.task.type)
    labels = ctx.config.task.label_names
    with ctx.store.read() as session:
        item = session.get(Item, item_id)
        if item is None:
            raise ProjectError(f"there is no item {shown(item_id)}")
        if item.role in GOLD_ROLES:
            raise ProjectError(
                f"item {item_id!r} is a {item.role} item: its label is the known one "
                "(change it in the golden file and import it again)"
            )
        already = session.scalar(
            select(Annotation.label).where(Annotation.item_id == item_id, Annotation.annotator_id == admin_id)
        )
    if already is not None:
        raise ProjectError(
            f"you already answered item {item_id!r} ({already}); another admin or an expert can correct it"
        )
    label = check_answer(label, labels, None, kind)  # before anything is written
    minutes = ctx.config.quality.lease_minutes
    with ctx.store.write() as session:
        enqueue_expert(session, [item_id], "escalated")
        lease = new_lease(session, item_id, admin_id, "escalated", utcnow() + timedelta(minutes=minutes))
    submit_expert_answer(
        ctx.store,
        admin_id,
        lease.assignment_id,
        label,
        labels=labels,
        seconds=None,
        task_type=kind,
        note=note,
    )
    apply_expert_answers(ctx)
    with ctx.store.read() as session:
        final = session.execute(
            select(FinalLabel.label, FinalLabel.source).where(FinalLabel.item_id == item_id)
        ).one()  # apply_expert_answers wrote it
    return {"label": final.label, "source": final.source}
