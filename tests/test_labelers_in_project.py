"""LLM labelers inside a project, through the CLI, against the real local server."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select

from duolabel import Project
from duolabel.store import LLMCache, Prediction, Run
from tests.llm_server import MODEL_ALIAS

pytestmark = pytest.mark.slow

LABELS = ["book", "not_book"]


@pytest.fixture(scope="module")
def server(llm_server):
    return llm_server


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from duolabel.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


#: Three short reviews per label (the golden items of the small projects here and elsewhere).
REVIEWS = {
    "book": [
        "A gripping novel, I read it in one night.",
        "The author's prose is lovely, great chapters.",
        "This paperback fell apart but the story was good.",
    ],
    "not_book": [
        "The blender is loud but crushes ice.",
        "These headphones broke after a week.",
        "Nice warm socks for winter.",
    ],
}


def small_project(folder: Path, labeler: dict) -> Path:
    folder.mkdir()
    texts = REVIEWS
    with (folder / "golden.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", "label"])
        for label, rows in texts.items():
            writer.writerows([f"g-{label}-{i}", text, label] for i, text in enumerate(rows))
    with (folder / "items.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        writer.writerows(
            [
                [f"i{i}", text]
                for i, text in enumerate(
                    [
                        "The plot twists kept me reading.",
                        "The toaster burns one side.",
                        "A cookbook with clear recipes.",
                        "The kettle leaks.",
                        "Poems I return to often.",
                        "Sturdy garden hose.",
                    ]
                )
            ]
        )
    config = {
        "task": {
            "labels": [
                {"name": "book", "description": "the review is about a book"},
                {"name": "not_book", "description": "any other product"},
            ],
            "instructions": "Decide whether the product reviewed is a book.",
        },
        "data": [{"path": "golden.csv", "role": "golden", "gold_column": "label"}, {"path": "items.csv"}],
        "labeler": labeler,
        "costs": {"llm_input_per_million": 1000.0, "llm_output_per_million": 1000.0},
    }
    (folder / "duolabel.yaml").write_text(yaml.safe_dump(config))
    return folder


def test_openai_labeler_runs_the_loop_and_a_rerun_costs_nothing(tmp_path, server):
    folder = small_project(
        tmp_path / "p",
        {
            "backend": "openai",
            "model": MODEL_ALIAS,
            "base_url": server.base_url,
            "few_shot": 2,
            "answer_tokens": 1,
            "concurrency": 2,
        },
    )
    result = cli("run", str(folder))
    assert result.returncode == 0, result.stderr
    with Project.open(folder) as project, project.store.read() as session:
        assert session.scalar(select(func.count()).select_from(Prediction)) == 12
        assert session.scalar(select(func.count()).select_from(LLMCache)) == 12
        run = session.scalars(select(Run).where(Run.kind == "label")).one()
        assert run.usage["input_tokens"] > 0 and run.cost > 0
        assert run.usage["requests"] == 12  # one answered request per item, counted once
    server.stop()  # everything is cached: a re-run needs no server and pays nothing
    try:
        again = cli("label", str(folder))
        assert again.returncode == 0, again.stderr
        assert "0 items labelled, 12 already done" in again.stdout
    finally:
        server.start()


def test_budget_cap_stops_the_run_and_keeps_what_was_answered(tmp_path, server):
    folder = small_project(
        tmp_path / "p",
        {
            "backend": "openai",
            "model": MODEL_ALIAS,
            "base_url": server.base_url,
            "few_shot": 0,
            "answer_tokens": 1,
            "concurrency": 1,
            "budget": 0.15,
        },
    )
    cli("import", str(folder / "golden.csv"), "-p", str(folder), "--role", "golden", "--gold", "label")
    result = cli("label", str(folder))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "budget" in result.stderr
    with Project.open(folder) as project, project.store.read() as session:
        kept = session.scalar(select(func.count()).select_from(Prediction))
        run = session.scalars(select(Run).where(Run.kind == "label")).one()
    assert 0 < kept < 6 and run.status == "failed"


def test_a_missing_gguf_is_one_line(tmp_path):
    folder = small_project(tmp_path / "p", {"backend": "llama", "model_path": "nowhere/model.gguf"})
    result = cli("run", str(folder))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "nowhere/model.gguf" in result.stderr


def test_a_prompt_longer_than_the_context_is_an_abstention(server):
    from duolabel.labelers import TextItem
    from duolabel.labelers.openai import OpenAILabeler

    labeler = OpenAILabeler(
        labels=LABELS, model=MODEL_ALIAS, base_url=server.base_url, few_shot=0, answer_tokens=1
    )
    long_text = " ".join(["word"] * 3000)  # far past the server's 1,024-token window
    probs, usage = labeler.predict_proba([TextItem("long", long_text), TextItem("short", "A fine novel.")])
    assert all(p != p for p in probs[0])  # NaN row: an abstention, and the run went on
    assert usage.extra["abstained"] >= 1 and usage.input_tokens > 0  # the short item was answered


def test_the_labeling_bar_moves_with_each_answer(tmp_path, server):
    """An LLM's bar advances per answered item, not once per committed chunk (an openai bar
    used to sit at 0/378 for 96 answered requests), and ends at its total."""
    from contextlib import contextmanager

    folder = small_project(
        tmp_path / "p",
        {"backend": "openai", "model": MODEL_ALIAS, "base_url": server.base_url, "answer_tokens": 1},
    )
    steps: dict[str, list[int]] = {}
    totals: dict[str, int | None] = {}

    @contextmanager
    def recording(description: str, total: int | None):
        totals[description] = total
        steps[description] = []
        yield steps[description].append

    with Project.open(folder) as project:
        project.import_data()
        project.label(progress=recording)
    [bar] = [d for d in steps if d.startswith("Labeling with")]
    assert totals[bar] == 12 and sum(steps[bar]) == 12
    assert steps[bar].count(1) >= 10  # one step per answer, not one step of 12
