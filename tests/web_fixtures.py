"""Shared helpers for the queue, web and browser tests: a project with routed items."""

from __future__ import annotations

from pathlib import Path

from duolabel.config import PROJECT_FILE, render_config
from duolabel.project import Project, init_project
from duolabel.store import Item, Route, Run

LABELS = ["billing", "shipping", "other"]
PASSWORD = "correct horse battery"


def make_project(folder: Path, *, database_url: str | None = None) -> Project:
    """A fresh project with LABELS; on PostgreSQL when ``database_url`` is given."""
    project = init_project(folder, labels=LABELS)
    if database_url is None:
        return project
    project.close()
    config = project.config.model_copy(update={"database_url": database_url})
    (folder / PROJECT_FILE).write_text(render_config(config), encoding="utf-8")
    return Project.open(folder)


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
