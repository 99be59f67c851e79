"""Pairs out to Label Studio and Hugging Face ``datasets`` and back: both responses travel."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from duolabel.store import Annotation, FinalLabel, Item
from tests.test_pairwise import pair_project

PAIRS = [
    {"id": "p1", "text": "Name a primary colour.", "response_a": "red", "response_b": "grey", "model_a": "x"},
    {"id": "p2", "text": "Add 1 and 1.", "response_a": "3", "response_b": "2\nexactly", "model_a": "y"},
]


def _pairs_with_finals(folder: Path):
    project = pair_project(folder)
    path = folder / "pairs.jsonl"
    path.write_text(
        "".join(json.dumps({**r, "gold": g}) + "\n" for r, g in zip(PAIRS, "AB", strict=True)),
        encoding="utf-8",
    )
    project.import_file(path, role="golden", gold_column="gold")
    with project.store.write() as session:
        for row, label in zip(PAIRS, "AB", strict=True):
            session.add(FinalLabel(item_id=row["id"], label=label, source="expert", confidence=1.0))
    return project


def _items(project) -> dict[str, tuple]:
    # The pair and its metadata (an export's own columns, label and source, come back as
    # fields too, as for any task type).
    keep = ("response_a", "response_b", "model_a")
    with project.store.read() as session:
        return {i.id: (i.text, {k: i.fields.get(k) for k in keep}) for i in session.scalars(select(Item))}


def test_label_studio_round_trip_keeps_both_responses_and_the_answers(tmp_path: Path):
    from duolabel.integrations.label_studio import label_config

    with _pairs_with_finals(tmp_path / "a") as project:
        project.export(tmp_path / "tasks.json")
        config = label_config(project.config.task)
        before = _items(project)
    tasks = json.loads((tmp_path / "tasks.json").read_text(encoding="utf-8"))
    assert tasks[1]["data"]["response_b"] == "2\nexactly" and tasks[1]["annotations"][0]["result"][0][
        "value"
    ] == {"choices": ["B"]}
    for name in ("$text", "$response_a", "$response_b", 'value="A"', 'value="B"'):
        assert name in config
    with pair_project(tmp_path / "b") as other:
        other.import_file(tmp_path / "tasks.json")
        assert _items(other) == before
        with other.store.read() as session:
            answers = dict(session.execute(select(Annotation.item_id, Annotation.label)).all())
        assert answers == {"p1": "A", "p2": "B"}  # the final labels, as recorded answers


def test_hf_round_trip_keeps_both_responses(tmp_path: Path):
    with _pairs_with_finals(tmp_path / "a") as project:
        project.export(tmp_path / "ds", fmt="hf")
        before = _items(project)
    with pair_project(tmp_path / "b") as other:
        other.import_file(tmp_path / "ds")
        assert _items(other) == before
