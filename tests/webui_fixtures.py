"""A project whose items have two text fields and terms to highlight, with predictions, routes
and the three kinds of account: what the annotator's page and admin item browser tests share."""

from __future__ import annotations

import csv
from pathlib import Path

from duolabel.people.accounts import add_annotator
from duolabel.project import Project
from duolabel.store import Item, Prediction, Route, Run
from tests.web_fixtures import LABELS, PASSWORD, make_project

ROWS = [
    # id, title, body, drug, effect
    ("r1", "Case one", "She took aspirin and got a rash the next day.", "aspirin", "rash"),
    ("r2", "Case two", "Ibuprofen helped; no hives at all.", "ibuprofen", "hives"),
    ("r3", "Case three", "Paracetamol, then nausea | or not?", "paracetamol", "nausea"),
    ("r4", "Case four", "Nothing to see here: a refund for my parcel.", "", ""),
]
# The model's label and confidence of each item, and how it was routed.
MODEL = {"r1": ("billing", 0.91), "r2": ("shipping", 0.55), "r3": ("other", 0.42), "r4": ("billing", 0.97)}
ROUTED = {"r1": "accept", "r2": "humans", "r3": "humans", "r4": "expert"}


def fielded_project(folder: Path, *, database_url: str | None = None, overlap: int = 1) -> Project:
    """The project: items imported from a CSV with ``title`` and ``body`` as text fields and
    ``drug`` / ``effect`` as the terms to mark; a prediction and a route for each; accounts
    alice (annotator), erin (expert) and ada (admin)."""
    project = make_project(
        folder,
        database_url=database_url,
        task={"text_fields": ["title", "body"], "highlight": ["drug", "effect"]},
    )
    path = folder / "items.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "title", "body", "drug", "effect"])
        writer.writerows(ROWS)
    project.import_file(path, batch="medrel")
    with project.store.write() as session:
        run = Run(kind="route")
        session.add(run)
        session.flush()
        for item_id, (label, confidence) in MODEL.items():
            probs = {name: (confidence if name == label else (1 - confidence) / 2) for name in LABELS}
            session.add(
                Prediction(
                    item_id=item_id,
                    labeler="embedding",
                    model_version="m1",
                    run_id=run.id,
                    probs=probs,
                    calibrated=probs,
                    label=label,
                    raw_confidence=confidence,
                    confidence=confidence,
                )
            )
            decision = ROUTED[item_id]
            session.add(
                Route(
                    item_id=item_id,
                    decision=decision,
                    overlap=overlap if decision == "humans" else 0,
                    confidence=confidence,
                    policy_version="t",
                    run_id=run.id,
                )
            )
    add_annotator(project.store, "alice", PASSWORD)
    add_annotator(project.store, "erin", PASSWORD, role="expert")
    add_annotator(project.store, "ada", PASSWORD, role="admin")
    return project


def item_of(project: Project, item_id: str) -> Item:
    with project.store.read() as session:
        item = session.get(Item, item_id)
        assert item is not None
        return item
