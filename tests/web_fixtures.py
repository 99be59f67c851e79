"""Shared helpers for the queue, web and browser tests: a project with routed items."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from duolabel.config import PROJECT_FILE, render_config
from duolabel.project import Project, init_project
from duolabel.store import Item, Route, Run

LABELS = ["billing", "shipping", "other"]
PASSWORD = "correct horse battery"


def make_project(
    folder: Path, *, database_url: str | None = None, quality: dict[str, Any] | None = None, **sections: Any
) -> Project:
    """A fresh project with LABELS; on PostgreSQL when ``database_url`` is given.

    ``quality`` overrides settings of the quality section (the default here: no exam,
    no controls, so tests that do not look at them see only routed items). Routing is the
    threshold policy unless ``routing`` says otherwise: the items these tests route by hand
    keep the overlap they are given (the dynamic policy would ask one more person on items
    without a model prediction after each answer, tests/test_live_follow_up.py).
    """
    project = init_project(folder, labels=LABELS)
    project.close()
    settings = {"exam_size": 0, "control_rate": 0.0, **(quality or {})}
    sections = {"routing": {"policy": "threshold", **sections.pop("routing", {})}, **sections}
    update: dict[str, Any] = {"quality": project.config.quality.model_copy(update=settings)}
    if database_url is not None:
        update["database_url"] = database_url
    for name, values in sections.items():
        update[name] = getattr(project.config, name).model_copy(update=values)
    config = project.config.model_copy(update=update)
    # Through the YAML file, so every override is validated like a user's.
    (folder / PROJECT_FILE).write_text(render_config(config), encoding="utf-8")
    return Project.open(folder)


def add_gold_items(project: Project, n: int, *, start: int = 0, role: str = "golden") -> list[str]:
    """Insert ``n`` items with a known label (LABELS in turn), unrouted: exam and control items."""
    ids = [f"gold-{i:03d}" for i in range(start, start + n)]
    with project.store.write() as session:
        for offset, item_id in enumerate(ids):
            session.add(
                Item(
                    id=item_id,
                    seq=10_000 + start + offset,
                    text=f"known text {item_id}",
                    fields={},
                    content_hash="g",
                    batch="golden",
                    role=role,
                    gold_label=LABELS[(start + offset) % len(LABELS)],
                    gold_source="expert",
                )
            )
    return ids


def gold_of(project: Project, item_ids: list[str]) -> dict[str, str]:
    with project.store.read() as session:
        rows = session.execute(select(Item.id, Item.gold_label).where(Item.id.in_(item_ids))).all()
    return {item_id: gold for item_id, gold in rows}


def add_routed_items(
    project: Project,
    n: int,
    *,
    overlap: int,
    gold: str | None = None,
    start: int = 0,
    decision: str = "humans",
) -> list[str]:
    """Insert ``n`` items routed with ``decision`` and ``overlap``; returns their ids in order."""
    ids = [f"item-{i:03d}" for i in range(start, start + n)]
    with project.store.write() as session:
        run = Run(kind="route")
        session.add(run)
        session.flush()
        for offset, item_id in enumerate(ids):
            session.add(
                Item(
                    id=item_id,
                    seq=start + offset,
                    text=f"text of {item_id}: my parcel <b>never</b> arrived",
                    fields={},
                    content_hash="x",
                    batch="b",
                    role="regular",
                    gold_label=gold,
                )
            )
        session.flush()
        for item_id in ids:
            session.add(
                Route(
                    item_id=item_id,
                    decision=decision,
                    overlap=overlap,
                    policy_version="t",
                    run_id=run.id,
                )
            )
    return ids


def routed_project(folder: Path, items: int, task_type: str) -> Project:
    """A ``task_type`` project with LABELS, ``items`` items routed to one person, and alice."""
    from duolabel.people.accounts import add_annotator

    project = make_project(folder, task={"type": task_type})
    add_routed_items(project, items, overlap=1)
    add_annotator(project.store, "alice", PASSWORD)
    return project
