"""Synthetic items (issue 16): the pure checks, and generation against the real bundled
Gemma 3 270M run by llama.cpp (weak: these check the mechanism, never the items' quality)."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from sqlalchemy import func, select

from duolabel import Project
from duolabel.core.diversity import coverage, distinct_n, mean_pairwise_distance, near_duplicates
from duolabel.labelers import encoder_for
from duolabel.labelers.base import TextItem
from duolabel.store import Item, LLMCache, Run, SyntheticItem
from duolabel.synthetic import diversity_figures, generation_prompt, synthetic_summary
from tests.test_labelers_in_project import REVIEWS

LABELS = ["book", "not_book"]
GOLDEN = REVIEWS


# -- pure logic ----------------------------------------------------------------------


def test_distinct_n_counts_repeated_ngrams_once():
    assert distinct_n(["the cat sat", "the cat ran"], 1) == pytest.approx(4 / 6)
    assert distinct_n(["the cat sat", "the cat ran"], 2) == pytest.approx(3 / 4)
    assert distinct_n(["same words", "same words"], 2) == 0.5
    assert distinct_n(["one"], 2) == 0.0


def test_mean_pairwise_distance_is_zero_for_copies_and_one_for_orthogonal_vectors():
    same = np.array([[1.0, 0.0]] * 3)
    assert mean_pairwise_distance(same) == pytest.approx(0.0)
    assert mean_pairwise_distance(np.eye(3)) == pytest.approx(1.0)
    assert mean_pairwise_distance(np.eye(3)[:1]) == 0.0


def test_near_duplicates_keeps_the_first_of_a_group_and_drops_those_near_the_reference():
    v = np.array([[1.0, 0.0], [0.999, 0.0447], [0.0, 1.0], [0.6, 0.8]])
    assert near_duplicates(v, 0.99).tolist() == [False, True, False, False]
    assert near_duplicates(v, 0.99, reference=np.array([[0.0, 1.0]])).tolist() == [False, True, True, False]
    assert near_duplicates(np.zeros((0, 2)), 0.9).tolist() == []


def test_coverage_counts_leaves_per_label():
    taxonomy = {"book": ["poetry", "cooking"], "not_book": ["cooking"]}
    assert coverage([("book", "cooking")], taxonomy) == pytest.approx(1 / 3)
    assert coverage([("not_book", "cooking"), ("book", "poetry")], taxonomy) == pytest.approx(2 / 3)
    assert coverage([], {}) == 0.0


def test_diversity_figures_average_the_distance_within_labels():
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    figures = diversity_figures(["a b", "c d", "e f", "e f"], vectors, ["x", "x", "y", "y"])
    assert figures["pairwise_distance"] == pytest.approx(0.5)  # (1.0 + 0.0) / 2
    assert figures["distinct_1"] == pytest.approx(6 / 8)
    assert "taxonomy_coverage" not in figures


def test_generation_prompt_names_the_label_leaf_and_examples():
    prompt = generation_prompt(
        instructions="Is it  a book?", label="book", description="a book", leaf="poetry", examples=["x  y"]
    )
    assert prompt.splitlines() == [
        "Is it a book?",
        'Below are new, varied example texts labelled "book" (a book), about: poetry.',
        "",
        "Text: x y",
        "Text:",
    ]


# -- against the real model ------------------------------------------------------------


def _project(tmp_path, **synthetic) -> Project:
    folder = tmp_path / "proj"
    folder.mkdir()
    config = {
        "task": {
            "labels": [{"name": "book", "description": "the product is a book"},
                       {"name": "not_book", "description": "any other product"}],
            "instructions": "Decide whether the Amazon review is about a book.",
        },
        "labeler": [{"backend": "llama", "n_threads": 1, "few_shot": 0}],
        "synthetic": {"max_tokens": 16, **synthetic},
    }  # fmt: skip
    (folder / "duolabel.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    project = Project.open(folder)
    import pandas as pd

    rows = [
        {"id": f"g-{lab}-{i}", "text": t, "gold": lab} for lab, ts in GOLDEN.items() for i, t in enumerate(ts)
    ]
    project.add_items(pd.DataFrame(rows), role="golden", gold_column="gold")
    return project


@pytest.mark.slow
def test_zero_shot_generation_stores_flagged_items_costs_them_and_a_rerun_pays_nothing(tmp_path):
    pytest.importorskip("llama_cpp")
    with _project(tmp_path) as project:
        result = project.generate(per_label=1, mode="zero-shot")
        assert result.kept == {"book": 1, "not_book": 1}
        with project.store.read() as session:
            rows = session.execute(
                select(Item.role, Item.gold_label, SyntheticItem)
                .join(SyntheticItem, SyntheticItem.item_id == Item.id)
            ).all()  # fmt: skip
            run = session.scalars(select(Run).where(Run.kind == "generate")).one()
        assert sorted(r.SyntheticItem.label for r in rows) == LABELS
        # Flagged by role; the intended label is not a gold label.
        assert {(r.role, r.gold_label, r.SyntheticItem.mode) for r in rows} == {
            ("synthetic", None, "zero-shot")
        }
        assert all(r.SyntheticItem.logprob < 0 for r in rows)  # llama gives them
        assert all(0.0 <= r.SyntheticItem.agreement <= 1.0 for r in rows)  # the llama labeler checked them
        assert run.status == "done" and run.cost > 0 and run.usage["output_tokens"] > 0
        assert run.config["figures"]["items"] == 2 and "agreement_mean" in run.config["figures"]
        # Asking for one more per label replays the cached attempts and pays only for new ones.
        with project.store.read() as session:
            answers = session.scalar(select(func.count()).select_from(LLMCache))
        again = project.generate(per_label=2, mode="zero-shot")
        assert sum(again.kept.values()) == 2 and again.cached >= 2
        with project.store.read() as session:
            assert session.scalar(select(func.count()).select_from(LLMCache)) > answers
        summary = synthetic_summary(project)
        assert summary is not None and summary["by_label"] == {"book": 2, "not_book": 2}


@pytest.mark.slow
def test_a_budget_stops_the_run_and_the_next_run_continues_without_paying_twice(tmp_path):
    pytest.importorskip("llama_cpp")
    with _project(tmp_path, budget=0.0) as project:
        stopped = project.generate(per_label=1)
        assert stopped.stopped and "synthetic.budget" in stopped.stopped and stopped.kept == {}
        with project.store.read() as session:
            assert session.scalar(select(func.count()).select_from(LLMCache)) == 0  # nothing asked
    cfg = yaml.safe_load((tmp_path / "proj" / "duolabel.yaml").read_text())
    cfg["synthetic"]["budget"] = 1e-9  # one answer passes it
    (tmp_path / "proj" / "duolabel.yaml").write_text(yaml.safe_dump(cfg))
    with Project.open(tmp_path / "proj") as project:
        partial = project.generate(per_label=1)
        assert partial.stopped
        with project.store.read() as session:
            paid = session.scalar(select(func.count()).select_from(LLMCache))
        assert paid == 1
    cfg["synthetic"]["budget"] = None
    (tmp_path / "proj" / "duolabel.yaml").write_text(yaml.safe_dump(cfg))
    with Project.open(tmp_path / "proj") as project:
        done = project.generate(per_label=1)
        assert done.stopped is None and done.cached >= 1
        with project.store.read() as session:
            assert session.scalar(select(func.count()).select_from(SyntheticItem)) == 2


@pytest.mark.slow
def test_taxonomy_leaves_from_the_project_file_and_few_shot_items_that_copy_no_golden_item(tmp_path):
    pytest.importorskip("llama_cpp")
    taxonomy = {"book": ["cookbooks", "poetry"], "not_book": ["kitchen tools", "socks"]}
    with _project(tmp_path, taxonomy=taxonomy) as project:
        result = project.generate(per_label=2, mode="taxonomy")
        assert result.taxonomy == taxonomy
        with project.store.read() as session:
            leaves = session.execute(select(SyntheticItem.label, SyntheticItem.leaf)).all()
        assert all(leaf in taxonomy[label] for label, leaf in leaves)
        assert result.figures["taxonomy_coverage"] == pytest.approx(len({tuple(r) for r in leaves}) / 4)
        shots = project.generate(per_label=1, mode="few-shot")
        assert sum(shots.kept.values()) >= 1
        with project.store.read() as session:
            texts = session.scalars(
                select(Item.text).join(SyntheticItem, SyntheticItem.item_id == Item.id)
                .where(SyntheticItem.mode == "few-shot")
            ).all()  # fmt: skip
        encoder = encoder_for(project)
        encoder.cache = None
        golden = encoder.encode([TextItem(str(i), t) for i, t in enumerate(sum(GOLDEN.values(), []))])[0]
        made = encoder.encode([TextItem(str(i), t) for i, t in enumerate(texts)])[0]
        assert (made @ golden.T).max() < project.config.synthetic.near_duplicate


@pytest.mark.slow
def test_a_taxonomy_asked_of_the_model_is_written_for_the_user_to_edit(tmp_path):
    pytest.importorskip("llama_cpp")
    with _project(tmp_path, leaves_per_label=2) as project:
        result = project.generate(per_label=1, mode="taxonomy")
        written = yaml.safe_load((tmp_path / "proj" / "synthetic_taxonomy.yaml").read_text())
        assert written == result.taxonomy and all(1 <= len(v) <= 2 for v in written.values())
        # The user's edit is what the next run uses.
        (tmp_path / "proj" / "synthetic_taxonomy.yaml").write_text(
            yaml.safe_dump({"book": ["atlases"], "not_book": ["lamps"]})
        )
        edited = project.generate(per_label=2, mode="taxonomy")
        assert edited.taxonomy == {"book": ["atlases"], "not_book": ["lamps"]}


def test_generate_without_an_llm_labeler_is_one_clear_error(tmp_path):
    from duolabel.errors import ProjectError

    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "duolabel.yaml").write_text(
        yaml.safe_dump({"task": {"labels": [{"name": "a"}, {"name": "b"}]}})
    )
    with Project.open(folder) as project, pytest.raises(ProjectError, match="llama or openai labeler"):
        project.generate(per_label=1)


@pytest.mark.slow
def test_the_cli_generates_through_the_openai_server_and_status_shows_the_items(tmp_path, llm_server):
    import subprocess
    import sys

    from tests.llm_server import MODEL_ALIAS

    folder = tmp_path / "p"
    folder.mkdir()
    config = {
        "task": {"labels": [{"name": "book"}, {"name": "not_book"}], "instructions": "Amazon reviews."},
        "labeler": [{"backend": "openai", "model": MODEL_ALIAS, "base_url": llm_server.base_url}],
        "synthetic": {"max_tokens": 12, "taxonomy": {"book": ["poetry"], "not_book": ["socks"]}},
        "costs": {"llm_input_per_million": 1.0, "llm_output_per_million": 2.0},
    }
    (folder / "duolabel.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")

    def cli(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-c", "from duolabel.cli import main; main()", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=600)

    made = cli("generate", "-p", str(folder), "--per-label", "1", "--mode", "taxonomy")
    assert made.returncode == 0, made.stderr
    assert "Taxonomy book: poetry" in made.stdout and "distinct_1" in made.stdout
    with Project.open(folder) as project, project.store.read() as session:
        run = session.scalars(select(Run).where(Run.kind == "generate")).one()
        assert run.cost > 0 and run.usage["input_tokens"] > 0  # priced from the server's usage
        leaves = set(session.execute(select(SyntheticItem.label, SyntheticItem.leaf)).all())
        # no synthetic.min_logprob: the server was not asked for log-probabilities
        logprobs = session.scalars(select(SyntheticItem.logprob)).all()
        assert logprobs and all(lp is None for lp in logprobs)
    assert leaves <= {("book", "poetry"), ("not_book", "socks")} and leaves
    shown = cli("status", str(folder))
    assert shown.returncode == 0, shown.stderr
    assert "synthetic training items" in shown.stdout and "poetry (" in shown.stdout


@pytest.mark.parametrize("asked", [True, False])
def test_the_openai_generator_asks_for_log_probabilities_only_when_told(asked: bool):
    """Pure logic: which parameters reach the client (the real server's run is the test above)."""
    from types import SimpleNamespace

    from duolabel.labelers.generation import generator_for
    from duolabel.labelers.openai import OpenAILabeler

    sent: dict = {}

    def create(**params):
        sent.update(params)
        return SimpleNamespace(model_dump=lambda: {"choices": [{"text": "A review."}], "usage": {}})

    labeler = OpenAILabeler(labels=["a", "b"], model="m", base_url="http://127.0.0.1:9/v1")
    gen = generator_for(labeler, logprobs=asked)
    gen._client = SimpleNamespace(completions=SimpleNamespace(create=create))
    made = gen.generate("Write one.", max_tokens=8, temperature=1.0, seed=0)
    assert made.text == "A review." and made.logprob is None
    assert ("logprobs" in sent) is asked
