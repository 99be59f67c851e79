"""Reviewing synthetic items outside the review page (issue 16, item 2): the list of items by
review state, label and taxonomy leaf, one idempotent accept / reject, a file round trip for
outside reviewers and the acceptance summary. The JSON API (``/api/v1/expert/synthetic/...``,
:mod:`duolabel.web.synthetic`) and ``duolabel synthetic review`` / ``duolabel synthetic
summary`` (:mod:`duolabel.cli.synthetic`) are thin layers over these functions.

A decision lands on the item's ``synthetic_items`` row exactly as the page's does
(:func:`duolabel.synthetic_review.review_synthetic`): ``review``, ``reviewed_by`` (an
account) and ``reviewed_at``. Deciding what is already stored changes nothing (the first
reviewer and time stay), so a retried request or a re-imported file is harmless; another
decision replaces the stored one.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import aliased

from duolabel.context import Context
from duolabel.errors import DataError, Problem, ProjectError, shown
from duolabel.files import atomic_write, defuse_formula
from duolabel.io import detect_format, read_records
from duolabel.store import Annotator, Item, SyntheticItem
from duolabel.store.tables import utcnow

__all__ = [
    "FILE_COLUMNS",
    "REVIEW_STATES",
    "Decided",
    "DecisionImport",
    "SyntheticPage",
    "decide_synthetic",
    "export_pending",
    "import_decisions",
    "list_synthetic",
    "normalise_decision",
    "review_summary",
]

#: What a reviewer may write for a decision, and the stored value each means.
DECISION_WORDS = {"accept": "accepted", "accepted": "accepted", "reject": "rejected", "rejected": "rejected"}
#: The review states a list can be filtered by (``pending``: nobody has decided yet).
REVIEW_STATES: tuple[str, ...] = ("pending", "accepted", "rejected", "all")
#: The columns of a file written for outside reviewers; ``decision`` and ``reviewer`` are theirs to fill.
FILE_COLUMNS = ["id", "text", "label", "leaf", "mode", "judged_label", "decision", "reviewer"]
REVIEWER_ROLES = ("expert", "admin")  # who may review: the page's and the API's rule
MAX_LIMIT = 500
MAX_PROBLEMS = 50
NOTHING = "No decision was recorded."


def normalise_decision(value: Any) -> str:
    """The stored decision (``accepted`` / ``rejected``) for ``accept``, ``reject`` (or the
    stored words themselves, any case); ``ProjectError`` otherwise.

    Examples
    --------
    >>> normalise_decision(" Accept "), normalise_decision("rejected")
    ('accepted', 'rejected')
    """
    word = value.strip().lower() if isinstance(value, str) else None
    if word not in DECISION_WORDS:
        raise ProjectError(f"decision {shown(value)}: one of accept, reject")
    return DECISION_WORDS[word]


@dataclass(frozen=True)
class SyntheticPage:
    """One page of synthetic items (dicts, oldest first) and how many match in all."""

    items: list[dict[str, Any]]
    total: int
    offset: int
    limit: int | None


def _when(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


def list_synthetic(
    ctx: Context,
    *,
    review: str = "pending",
    label: str | None = None,
    leaf: str | None = None,
    offset: int = 0,
    limit: int | None = 50,
) -> SyntheticPage:
    """The synthetic items in ``review`` state (``pending``, ``accepted``, ``rejected`` or
    ``all``), of ``label`` and taxonomy ``leaf`` when given, ``limit`` of them (None: all)
    from ``offset``.

    Examples
    --------
    >>> import duolabel, tempfile
    >>> list_synthetic(duolabel.init_project(tempfile.mkdtemp(), labels=["a", "b"])).total
    0
    """
    if review not in REVIEW_STATES:
        raise ProjectError(f"review {shown(review)}: one of {', '.join(REVIEW_STATES)}")
    if label is not None and label not in ctx.config.task.label_names:
        raise ProjectError(f"label {shown(label)}: not one of {', '.join(ctx.config.task.label_names)}")
    if offset < 0 or (limit is not None and not 1 <= limit <= MAX_LIMIT):
        raise ProjectError(f"offset must be >= 0 and limit between 1 and {MAX_LIMIT}")
    where: list[ColumnElement[bool]] = []
    if review == "pending":
        where.append(SyntheticItem.review.is_(None))
    elif review != "all":
        where.append(SyntheticItem.review == review)
    if label is not None:
        where.append(SyntheticItem.label == label)
    if leaf is not None:
        where.append(SyntheticItem.leaf == leaf)
    reviewer = aliased(Annotator)
    with ctx.store.read() as session:
        total = session.scalar(select(func.count()).select_from(SyntheticItem).where(*where)) or 0
        rows = session.execute(
            select(Item.id, Item.text, SyntheticItem, reviewer.name)
            .join(SyntheticItem, SyntheticItem.item_id == Item.id)
            .outerjoin(reviewer, reviewer.id == SyntheticItem.reviewed_by)
            .where(*where)
            .order_by(Item.seq)
            .offset(offset)
            .limit(limit)
        ).all()
    items = [
        {
            "id": item_id,
            "text": text,
            "label": row.label,
            "leaf": row.leaf,
            "mode": row.mode,
            "judged_label": row.judged_label,
            "agreement": row.agreement,
            "logprob": row.logprob,
            "review": row.review or "pending",
            "reviewed_by": name,
            "reviewed_at": _when(row.reviewed_at),
        }
        for item_id, text, row, name in rows
    ]
    return SyntheticPage(items, total, offset, limit)


@dataclass(frozen=True)
class Decided:
    """A synthetic item's stored decision after a review; ``changed`` False when it was
    already so (the stored reviewer and time are kept)."""

    item_id: str
    review: str
    reviewed_by: str | None
    reviewed_at: str | None
    changed: bool


def decide_synthetic(ctx: Context, item_id: str, decision: str, *, reviewer_id: int | None) -> Decided:
    """Accept or reject synthetic item ``item_id`` as account ``reviewer_id``; idempotent.

    Examples
    --------
    >>> import duolabel, tempfile
    >>> decide_synthetic(duolabel.init_project(tempfile.mkdtemp()), "x", "accept", reviewer_id=None)
    Traceback (most recent call last):
    ...
    duolabel.errors.ProjectError: no synthetic item 'x'
    """
    stored = normalise_decision(decision)
    with ctx.store.write() as session:
        row = session.get(SyntheticItem, item_id)
        if row is None:
            raise ProjectError(f"no synthetic item {shown(item_id)}")
        changed = row.review != stored
        if changed:
            row.review, row.reviewed_by, row.reviewed_at = stored, reviewer_id, utcnow()
        account = session.get(Annotator, row.reviewed_by) if row.reviewed_by is not None else None
        return Decided(item_id, stored, account.name if account else None, _when(row.reviewed_at), changed)


# -- files for outside reviewers ---------------------------------------------------------------


def _file_format(path: Path, fmt: str | None, outcome: str) -> str:
    kind = detect_format(path, fmt, outcome=outcome)
    if kind not in ("csv", "jsonl"):
        raise DataError([Problem(str(path), None, None, f"expected a .csv or .jsonl file, not {kind}")],
                        outcome=outcome)  # fmt: skip
    return kind


def export_pending(
    ctx: Context, path: str | Path, *, fmt: str | None = None, label: str | None = None
) -> int:
    """Write the synthetic items nobody has reviewed (of ``label`` when given) to a CSV or
    JSONL file for outside reviewers, with empty ``decision`` and ``reviewer`` columns to
    fill in; returns how many. CSV cells are defused against formula injection.

    Examples
    --------
    >>> import duolabel, tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> export_pending(duolabel.init_project(folder, labels=["a", "b"]), folder / "review.csv")
    0
    >>> (folder / "review.csv").read_text().strip()
    'id,text,label,leaf,mode,judged_label,decision,reviewer'
    """
    path = Path(path)
    kind = _file_format(path, fmt, "Nothing was exported.")
    # One query (a page at a time would skip items reviewed meanwhile); they are training
    # items, few next to the project's items.
    page = list_synthetic(ctx, label=label, limit=None)
    rows = [{c: item.get(c) for c in FILE_COLUMNS} for item in page.items]
    with (
        atomic_write(path, outcome="Nothing was exported.") as tmp,
        tmp.open("w", encoding="utf-8", newline="") as handle,
    ):
        if kind == "jsonl":
            handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        else:
            writer = csv.writer(handle)
            writer.writerow(FILE_COLUMNS)
            writer.writerows(
                [defuse_formula("" if r[c] is None else r[c]) for c in FILE_COLUMNS] for r in rows
            )
    return len(rows)


@dataclass
class DecisionImport:
    """What ``import_decisions`` did: rows read, decisions that changed an item (by
    decision), decisions already stored, and rows left undecided (empty ``decision``)."""

    file: str
    rows: int = 0
    changed: Counter[str] = field(default_factory=Counter)
    unchanged: int = 0
    undecided: int = 0


def _text(value: Any) -> str | None:
    """A cell as stripped text, None when empty; ``TypeError`` for a number, list or object."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(repr(value)[:40])
    return value.strip() or None


def _reviewers(ctx: Context) -> dict[str, int]:
    with ctx.store.read() as session:
        rows = session.execute(
            select(Annotator.name, Annotator.id).where(
                Annotator.role.in_(REVIEWER_ROLES), Annotator.status == "active"
            )
        ).all()
    return {name: id_ for name, id_ in rows}


def import_decisions(
    ctx: Context, path: str | Path, *, reviewer: str | None = None, fmt: str | None = None
) -> DecisionImport:
    """Record the decisions of a reviewed file (columns ``id``, ``decision`` = accept or
    reject, optional ``reviewer``; others, such as the exported text, are ignored).

    A row with an empty decision is left undecided. ``reviewer`` (a row's, else the
    argument) must name an active expert or admin account; with neither, the decision is
    stored without a reviewer. Every problem in the file is reported at once, naming its
    row and column, and then nothing is recorded; otherwise all decisions are recorded in
    one transaction (idempotent: a decision already stored is left as it is).

    Examples
    --------
    >>> import duolabel, tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "decided.csv").write_text("id,decision\\nsynthetic-x,accept\\n")
    >>> import_decisions(duolabel.init_project(folder, labels=["a", "b"]), folder / "decided.csv")
    Traceback (most recent call last):
    ...
    duolabel.errors.DataError: ...decided.csv, row 2, column 'id': no synthetic item 'synthetic-x' in...
    No decision was recorded.
    """
    path = Path(path)
    _file_format(path, fmt, NOTHING)
    header, rows = read_records(path, fmt)
    source = str(path)
    if header is not None:
        missing = [c for c in ("id", "decision") if c not in header]
        if missing:
            have = ", ".join(repr(h) for h in header) or "no columns"
            raise DataError([Problem(source, 1, c, f"missing column; the file has {have}") for c in missing],
                            outcome=NOTHING)  # fmt: skip
    problems: list[Problem] = []
    more = 0

    def problem(row: int | None, column: str | None, message: str) -> None:
        nonlocal more
        if len(problems) < MAX_PROBLEMS:
            problems.append(Problem(source, row, column, message))
        else:
            more += 1

    accounts = _reviewers(ctx)
    if reviewer is not None and reviewer not in accounts:
        raise ProjectError(f"--reviewer {reviewer!r}: {_no_reviewer(reviewer)}")
    with ctx.store.read() as session:
        known = dict(session.execute(select(SyntheticItem.item_id, SyntheticItem.review)).all())
    result = DecisionImport(source)
    wanted: dict[str, tuple[str, int | None]] = {}
    seen: dict[str, int] = {}
    for row in rows:
        result.rows += 1
        if row.problem is not None:
            problem(row.problem.row, row.problem.column, row.problem.message)
            continue
        values = row.values or {}
        cells: dict[str, str | None] = {}
        for column in ("id", "decision", "reviewer"):
            try:
                cells[column] = _text(values.get(column))
            except TypeError as exc:
                problem(row.number, column, f"got {exc}, expected text")
        if len(cells) < 3:
            continue
        item_id, decision, name = cells["id"], cells["decision"], cells["reviewer"] or reviewer
        if item_id is None:
            problem(row.number, "id", "got an empty id, expected a synthetic item's id")
            continue
        if item_id in seen:
            problem(row.number, "id", f"{item_id!r} is decided again (row {seen[item_id]})")
            continue
        seen[item_id] = row.number
        if item_id not in known:
            problem(row.number, "id", f"no synthetic item {item_id!r} in the project")
            continue
        if decision is None:
            result.undecided += 1
            continue
        try:
            stored = normalise_decision(decision)
        except ProjectError:
            problem(row.number, "decision", f"got {decision!r}, expected accept or reject")
            continue
        if name is not None and name not in accounts:
            problem(row.number, "reviewer", _no_reviewer(name))
            continue
        wanted[item_id] = (stored, accounts.get(name) if name is not None else None)
    if not problems and not result.rows:
        problem(None, None, "the file has no rows")
    if problems:
        raise DataError(problems, more=more, outcome=NOTHING)
    now = utcnow()
    with ctx.store.write() as session:
        for item_id, (stored, account) in wanted.items():
            # The same condition in the statement: a decision stored meanwhile is not overwritten.
            done = session.execute(
                update(SyntheticItem)
                .where(SyntheticItem.item_id == item_id)
                .where(SyntheticItem.review.is_(None) | (SyntheticItem.review != stored))
                .values(review=stored, reviewed_by=account, reviewed_at=now)
            )
            if getattr(done, "rowcount", 0):
                result.changed[stored] += 1
            else:
                result.unchanged += 1
    return result


def _no_reviewer(name: str) -> str:
    return (
        f"no active expert or admin account {name!r}; add one with "
        f"'duolabel annotators add {name} --role expert', or leave the reviewer empty"
    )


# -- the acceptance summary --------------------------------------------------------------------


def review_summary(ctx: Context) -> dict[str, Any]:
    """Synthetic items, pending, accepted, rejected and the acceptance rate (accepted /
    reviewed; None before any review) in all, per label and per (label, taxonomy leaf).

    Examples
    --------
    >>> import duolabel, tempfile
    >>> review_summary(duolabel.init_project(tempfile.mkdtemp()))["total"]
    {'items': 0, 'pending': 0, 'accepted': 0, 'rejected': 0, 'rate': None}
    """
    with ctx.store.read() as session:
        rows = session.execute(
            select(SyntheticItem.label, SyntheticItem.leaf, SyntheticItem.review, func.count())
            .group_by(SyntheticItem.label, SyntheticItem.leaf, SyntheticItem.review)
        ).all()  # fmt: skip
    total: Counter[str] = Counter()
    labels: dict[str, Counter[str]] = {}
    leaves: dict[tuple[str, str], Counter[str]] = {}
    for label, leaf, review, n in rows:
        state = review or "pending"
        for counts in (total, labels.setdefault(label, Counter())):
            counts[state] += n
        if leaf:
            leaves.setdefault((label, leaf), Counter())[state] += n
    return {
        "total": _figures(total),
        "by_label": [{"label": label, **_figures(c)} for label, c in sorted(labels.items())],
        "by_leaf": [{"label": a, "leaf": b, **_figures(c)} for (a, b), c in sorted(leaves.items())],
    }


def _figures(counts: Counter[str]) -> dict[str, Any]:
    reviewed = counts["accepted"] + counts["rejected"]
    return {
        "items": reviewed + counts["pending"],
        "pending": counts["pending"],
        "accepted": counts["accepted"],
        "rejected": counts["rejected"],
        "rate": round(counts["accepted"] / reviewed, 4) if reviewed else None,
    }
