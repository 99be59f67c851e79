"""``duolabel plan`` / ``run --dry-run`` and the sanity warnings, as a user runs them: the CLI
on the bundled example with the real embedding labeler (MiniLM), and on a small project
with the real llama labeler and the real llama.cpp server for the LLM prompts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from duolabel import Project
from duolabel.cli import app
from duolabel.people.accounts import add_annotator
from duolabel.plan import LabelerPlan, _budget_stop, sanity_checks
from duolabel.store import Embedding, Item, LLMCache, Prediction, Route, Run

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, list(args), prog_name="duolabel")
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def stored(folder: Path) -> dict[str, int]:
    with Project.open(folder) as project, project.store.read() as session:
        return {
            table.__tablename__: session.scalar(select(func.count()).select_from(table)) or 0
            for table in (Prediction, Run, Embedding, LLMCache, Route)
        }


@pytest.fixture
def example(example_copy: Path) -> Path:
    with Project.open(example_copy) as project:
        project.import_data()
    return example_copy


def test_plan_before_any_model_measures_the_encoder_and_stores_nothing(example: Path):
    before = stored(example)
    result = invoke("plan", "-p", str(example))
    assert stored(example) == before
    out = result.stdout
    # 60 golden and 300 regular items, none labelled yet, timed on the bundled encoder.
    assert "embedding (embedding)" in out and "360 of 360" in out
    assert "embedding: encoder throughput on 16 items, extrapolated." in out
    # No model yet: what the figures are based on, and the most people could be asked.
    assert "no calibrated model yet: until one is, every item goes to people" in out
    assert "Of 300 items not routed yet, 300 go to people (human share 100%)." in out
    assert "900 answers (300 items x 3 per item), 100 control answers" in out
    assert "an expert audit at audit.sample_rate is 15 final labels" in out
    # 900 + 100 answers at 0.05 + 20% platform fee.
    assert "people: 60.00 USD" in out
    # Nobody can log in yet: the dynamic policy's most people per item (5) cannot be met.
    assert "warning: routing.max_overlap is 5 but the project has 0 active annotator(s)" in result.stderr
    assert "or lower routing.max_overlap" in " ".join(result.stderr.split())


def test_dry_run_is_the_plan(example: Path):
    plan = invoke("plan", "-p", str(example)).stdout
    dry = invoke("run", "--dry-run", str(example)).stdout
    # The same report; only the measured times (and what follows from them) may differ.
    numbers = re.compile(r"[\d.,e-]+ (s|min|h|USD)\b")

    def words(text: str) -> str:  # without the figures and the table's padding
        return re.sub(r"[\s\u2500-\u257f]+", " ", numbers.sub("#", text))

    assert words(plan) == words(dry) and "go to people" in plan
    assert stored(example)["predictions"] == 0


def test_plan_before_the_data_files_are_imported_says_so(example_copy: Path):
    result = invoke("plan", "-p", str(example_copy))
    assert "embedding: nothing to measure on: import items first." in result.stdout
    assert "warning: the project has no items yet" in result.stderr
    assert "'duolabel run' would import golden.csv, tickets.csv first" in " ".join(result.stderr.split())


@pytest.mark.slow
def test_plan_after_a_run_reads_the_golden_curve(example_copy: Path):
    example = example_copy
    ran = invoke("run", str(example))
    # The warnings at the start of the run count the items it imports: 60 golden items
    # are enough for the target, nobody can log in yet.
    assert "warning: routing.max_overlap is 5" in ran.stderr and "golden items even for" not in ran.stderr
    result = invoke("plan", "-p", str(example))
    out = result.stdout
    assert "360 of 360" not in out and "0 of 360" in out  # everything is labelled
    assert "Routing: the golden curve of model " in out and "(60 golden items, cross-fitted)" in out
    assert "expected accuracy of the final labels on the golden curve: " in out
    waiting = re.search(r"Besides, (\d+) items routed earlier still wait for people.", out)
    assert waiting and int(waiting.group(1)) > 0
    status = invoke("status", str(example))
    assert "warning: routing.max_overlap is 5" in status.stderr


def test_overlap_warning_counts_people_who_can_log_in(example: Path):
    with Project.open(example) as project:
        warned = [w for w in sanity_checks(project) if w.startswith("routing.max_overlap")]
        assert warned and "0 active annotator(s)" in warned[0]
        for name in ("ann1", "ann2", "ann3", "ann4"):
            add_annotator(project.store, name, "a long enough passphrase 1", role="annotator")
        assert "4 active annotator(s)" in sanity_checks(project)[0]
        add_annotator(project.store, "ann5", "a long enough passphrase 1", role="annotator")
        assert not any(w.startswith("routing.max_overlap") for w in sanity_checks(project))


def test_a_target_needing_more_golden_items_says_how_many_more(tmp_path: Path):
    folder = tmp_path / "p"
    invoke("init", str(folder), "--labels", "spam,ham", "--labeler", "embedding")
    (tmp_path / "golden.csv").write_text(
        "id,text,label\n" + "".join(f"g{i},text {i},{'spam' if i % 2 else 'ham'}\n" for i in range(10))
    )
    invoke("import", str(tmp_path / "golden.csv"), "-p", str(folder), "--role", "golden", "--gold", "label")
    result = invoke("status", str(folder))
    # 0.9 at risk 0.1 needs 22 golden items even from a model that is never wrong (0.9^22 < 0.1).
    assert (
        "routing.target_accuracy 0.9 at risk 0.1 needs at least 22 golden items even for a model that is "
        "never wrong; the project has 10: import 12 more"
    ) in " ".join(result.stderr.split())


def test_a_labeler_below_the_majority_class_is_named(example: Path):
    with Project.open(example) as project:
        project.label()
        name = project.config.labeler[0].label_name
        assert not any("below" in w for w in sanity_checks(project))
        # Make every stored golden prediction wrong: worse than always answering the most
        # common gold label.
        labels = project.config.task.label_names
        with project.store.write() as session:
            gold = dict(session.execute(select(Item.id, Item.gold_label).where(Item.role == "golden")).all())
            for pred in session.scalars(select(Prediction).where(Prediction.out_of_fold.is_(True))):
                pred.label = next(label for label in labels if label != gold[pred.item_id])
        warned = [w for w in sanity_checks(project) if "below" in w]
    assert len(warned) == 1 and f"labeler {name!r} is right on" in warned[0]
    assert "of always answering" in warned[0] and "(the most common gold label)" in warned[0]


def test_the_budget_stop_is_the_item_where_the_money_runs_out():
    plan = LabelerPlan("gpt", "openai", items=1000, cost_per_item=0.01, cost=10.5)

    class Cfg:
        budget = 3.0

    _budget_stop(Cfg(), plan)  # type: ignore[arg-type]
    # 0.50 of fixed cost, then 0.01 per item: 250 items are paid, the 251st is not.
    assert plan.budget_stop == 251
    Cfg.budget = 20.0
    _budget_stop(Cfg(), plan)  # type: ignore[arg-type]
    assert plan.budget_stop is None


# -- LLM labelers: the prompt as it is sent ------------------------------------


@pytest.mark.slow
def test_plan_shows_the_llama_prompt_and_its_tokens(tmp_path: Path):
    pytest.importorskip("llama_cpp", reason="pip install 'duolabel[llama]'")
    from tests.test_labelers_in_project import small_project

    folder = small_project(tmp_path / "p", {"backend": "llama", "few_shot": 2})
    with Project.open(folder) as project:
        project.import_data()
    before = stored(folder)
    out = invoke("plan", "-p", str(folder)).stdout
    assert stored(folder) == before
    prompt = out.split("Prompt of llama for one item, as it will be sent:")[1]
    # The labeler's own prompt: instructions, labels, two golden examples, then the item.
    assert "Decide whether the product reviewed is a book." in prompt
    assert "- book: the review is about a book" in prompt
    assert prompt.count("Label: ") == 2 and "Text: The plot twists kept me reading.\nLabel:\n" in prompt
    row = next(line for line in out.splitlines() if line.startswith("│ llama (llama)"))
    cells = [c.strip() for c in row.strip("│").split("│")]
    assert cells[1] == "12 of 12" and "estimated" not in cells[2] and int(cells[2]) > 40
    assert "llama: measured on 5 items (4 timed after the first), extrapolated." in out


@pytest.mark.slow
def test_plan_with_an_openai_server_counts_its_tokens_and_the_budget_stop(tmp_path: Path, llm_server):
    from tests.llm_server import MODEL_ALIAS
    from tests.test_labelers_in_project import small_project

    labeler = {
        "backend": "openai",
        "model": MODEL_ALIAS,
        "base_url": llm_server.base_url,
        "few_shot": 0,
        "answer_tokens": 1,
        "budget": 0.3,
    }
    folder = small_project(tmp_path / "p", labeler)
    with Project.open(folder) as project:
        project.import_data()
    out = invoke("plan", "-p", str(folder)).stdout
    assert stored(folder)["llm_cache"] == 0  # the sample's answers are not kept
    assert "Text: The plot twists kept me reading.\nLabel:\n" in out
    row = next(line for line in out.splitlines() if line.startswith("│ openai (openai)"))
    tokens = row.strip("│").split("│")[2].strip()
    assert "estimated" not in tokens and int(tokens) > 20  # the server's own count
    # At 1000 per million tokens, each item costs several cents: 0.5 runs out before 12.
    found = re.search(r"labeler.budget 0.3000 USD would be reached at about item (\d+) of 12", out)
    assert found and 1 < int(found.group(1)) <= 12, out
