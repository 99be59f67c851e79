"""Swapped-duplicate controls from the CLI (``duolabel import FILE --role control --swapped``):
each control pair comes in with its twin (responses exchanged, gold flipped) under an id that
neither says what it is nor reaches a worker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select
from typer.testing import CliRunner

from duolabel.cli import app
from duolabel.config import PROJECT_FILE
from duolabel.integrations.pair_controls import twin_id
from duolabel.project import Project
from duolabel.store import Item
from tests.test_pairwise import pair_project, routed_pairs

CONTROLS = [
    {"key": "c1", "text": "Name a primary colour.", "first": "red", "second": "grey", "answer": "A"},
    {"key": "c2", "text": "Add 1 and 1.", "first": "3", "second": "2", "answer": "B"},
]
MAP = ["--map", "key=id", "--map", "first=response_a", "--map", "second=response_b"]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _import(folder: Path, path: Path, *extra: str):
    args = ["import", str(path), "-p", str(folder), "--role", "control", "--gold", "answer", *MAP, *extra]
    return CliRunner().invoke(app, args, prog_name="duolabel")


def _controls(project: Project) -> dict[str, tuple[str, str, str | None]]:
    with project.store.read() as session:
        rows = session.execute(select(Item.id, Item.fields, Item.gold_label).where(Item.role == "control"))
        return {i: (f["response_a"], f["response_b"], g) for i, f, g in rows}


def test_swapped_import_adds_each_control_and_its_twin(tmp_path: Path):
    path = _write(tmp_path / "controls.jsonl", CONTROLS)
    pair_project(tmp_path / "p").close()
    result = _import(tmp_path / "p", path, "--swapped")
    assert result.exit_code == 0, result.output
    assert "4 new items" in result.output
    with Project.open(tmp_path / "p") as project:
        assert _controls(project) == {
            "c1": ("red", "grey", "A"),
            twin_id("c1"): ("grey", "red", "B"),
            "c2": ("3", "2", "B"),
            twin_id("c2"): ("2", "3", "A"),
        }
    assert not any("swap" in twin_id(c["key"]) for c in CONTROLS)
    again = _import(tmp_path / "p", path, "--swapped")  # the same twins: nothing new
    assert again.exit_code == 0 and "0 new items, 4 already imported" in again.output, again.output


def test_swapped_import_refuses_what_it_cannot_twin(tmp_path: Path):
    import subprocess
    import sys

    from duolabel.errors import DataError, ProjectError

    path = _write(tmp_path / "controls.jsonl", CONTROLS)
    pair_project(tmp_path / "p").close()
    args = ["import", str(path), "-p", str(tmp_path / "p"), *MAP, "--swapped"]
    command = [sys.executable, "-c", "from duolabel.cli import main; main()", *args]
    regular = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert regular.returncode == 2 and "--role control" in regular.stderr
    assert "Traceback" not in regular.stderr
    # A row without its second response: one problem, on that row, and nothing imported.
    broken = _write(tmp_path / "broken.jsonl", [CONTROLS[0], {**CONTROLS[1], "second": ""}])
    bad = _import(tmp_path / "p", broken, "--swapped")
    assert isinstance(bad.exception, DataError)
    assert [(p.row, p.column) for p in bad.exception.problems] == [(2, "response_b")]
    with Project.open(tmp_path / "p") as project:
        assert _controls(project) == {}
    # Not a pairwise project.
    single = tmp_path / "s"
    single.mkdir()
    (single / PROJECT_FILE).write_text(yaml.safe_dump({"task": {"labels": [{"name": "A"}, {"name": "B"}]}}))
    other = _import(single, path, "--swapped")
    assert isinstance(other.exception, ProjectError) and "pairwise project" in str(other.exception)


def test_a_twin_reaches_a_worker_without_its_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from duolabel.people.accounts import add_annotator
    from duolabel.web import create_app
    from tests.test_web import Person, assignment_id
    from tests.web_fixtures import PASSWORD

    monkeypatch.delenv("DUOLABEL_SECRET", raising=False)
    path = _write(tmp_path / "controls.jsonl", CONTROLS[:1])
    with pair_project(tmp_path / "p", quality={"exam_size": 0, "control_rate": 1.0}) as project:
        routed_pairs(project, [("r1", "Spell cat.", "c-a-t", "k-a-t")])
        project.import_file(
            path,
            role="control",
            gold_column="answer",
            columns={"key": "id", "first": "response_a", "second": "response_b"},
            swapped=True,
        )
        add_annotator(project.store, "alice", PASSWORD)
        alice = Person(create_app(project))
        alice.login("alice")
        seen = []
        for _ in range(3):
            html = alice.get("/label").text
            task = alice.api("GET", "/task").json()["task"]
            seen.append((task["response_a"], task["response_b"]))
            for shown in (alice.shown(html), json.dumps(task)):
                assert twin_id("c1") not in shown and "c1" not in shown and "swap" not in shown.lower()
            alice.post("/answer", assignment_id=assignment_id(html), label="A")
        assert ("grey", "red") in seen  # the twin was served
