"""Distillation: the decision rule, the configuration's checks, and the loop against a real
LLM teacher (llama.cpp's OpenAI-compatible server on loopback) with a real MiniLM student."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml
from sqlalchemy import select

from duolabel import Project
from duolabel.config import parse_config
from duolabel.core.distillation import decide_distillation
from duolabel.errors import ConfigError
from duolabel.store import Item, Prediction, Run
from tests.llm_server import MODEL_ALIAS
from tests.test_labelers_in_project import cli

BOOKS = [
    "A gripping novel, I read it in one night.",
    "The author's prose is lovely and the chapters fly by.",
    "This paperback fell apart but the story was good.",
    "The plot twists kept me reading until dawn.",
    "A cookbook with clear recipes and lovely photos.",
    "Poems I return to often; the collection is wonderful.",
    "The biography of the composer is thorough and well written.",
    "A children's picture book my daughter asks for every night.",
    "The mystery novel's ending surprised me.",
    "This history book explains the war clearly.",
    "The sequel is weaker than the first novel in the series.",
    "A fantasy saga with great characters and a slow middle part.",
    "The textbook has many exercises with worked solutions.",
    "I loved the short stories in this anthology.",
    "The memoir is honest and funny.",
    "A science fiction novel with a clever premise.",
    "The hardcover edition of this novel is beautiful.",
    "The author's second book is even better than her first.",
    "A travel guide book with good maps of the city.",
    "This thriller novel kept me guessing.",
    "The essays in this book changed how I think.",
    "A romance novel with a predictable plot.",
    "The graphic novel's art is stunning.",
    "This self-help book repeats itself a lot.",
]
OTHERS = [
    "The blender is loud but crushes ice.",
    "These headphones broke after a week.",
    "Nice warm socks for winter.",
    "The toaster burns one side of the bread.",
    "The kettle leaks from the bottom.",
    "A sturdy garden hose that does not kink.",
    "The phone case cracked when I dropped it.",
    "This vacuum cleaner has strong suction.",
    "The running shoes are comfortable from day one.",
    "The coffee maker brews quickly and quietly.",
    "My dog loves this chew toy.",
    "The frying pan is non-stick and easy to clean.",
    "The desk lamp is bright but the switch feels cheap.",
    "This backpack has many pockets and a laptop sleeve.",
    "The electric toothbrush battery lasts two weeks.",
    "A soft pillow that keeps its shape.",
    "The wireless mouse stopped working after a month.",
    "The winter jacket is warm and waterproof.",
    "This shampoo smells nice and does not dry my hair.",
    "The drill came with a case and two batteries.",
    "The yoga mat is thick and does not slip.",
    "The kitchen scale is accurate to the gram.",
    "These sunglasses feel flimsy.",
    "The bicycle lock is heavy but secure.",
]


# -- the decision (pure) -------------------------------------------------------


def test_a_student_at_least_as_accurate_and_cheaper_wins() -> None:
    student = np.array([1, 1, 1, 1, 0, 1, 1, 0], bool)
    teacher = np.array([1, 0, 1, 1, 0, 1, 0, 1], bool)
    d = decide_distillation(student, teacher, student_cost_per_item=1e-5, teacher_cost_per_item=1e-3)
    assert d.winner == "student" and d.student_accuracy == 0.75 and d.teacher_accuracy == 0.625
    low, high = d.student_interval
    assert low < 0.75 < high and d.teacher_interval[0] < 0.625 < d.teacher_interval[1]
    assert "student labels" in d.reason and "0.750" in d.reason


def test_a_tie_goes_to_the_cheaper_student() -> None:
    same = np.array([1, 0, 1], bool)
    assert (
        decide_distillation(same, same, student_cost_per_item=0.0, teacher_cost_per_item=0.1).winner
        == "student"
    )


@pytest.mark.parametrize(
    ("student", "teacher", "student_cost", "why"),
    [
        ([1, 0, 0, 1], [1, 1, 0, 1], 0.0, "less accurate"),
        ([1, 1, 1, 1], [1, 1, 1, 1], 0.5, "dearer"),
    ],
)
def test_the_teacher_keeps_labeling(student, teacher, student_cost, why) -> None:
    d = decide_distillation(
        np.array(student, bool),
        np.array(teacher, bool),
        student_cost_per_item=student_cost,
        teacher_cost_per_item=0.1,
    )
    assert d.winner == "teacher" and why in d.reason


def test_the_comparison_needs_the_same_golden_items() -> None:
    with pytest.raises(ValueError, match="one answer per golden item"):
        decide_distillation(
            np.ones(3, bool), np.ones(4, bool), student_cost_per_item=0, teacher_cost_per_item=0
        )
    with pytest.raises(ValueError, match="no golden item"):
        decide_distillation(
            np.ones(0, bool), np.ones(0, bool), student_cost_per_item=0, teacher_cost_per_item=0
        )


# -- the configuration ---------------------------------------------------------

LABELS = ["book", "not_book"]
DESCRIPTIONS = {"book": "the review is about a book", "not_book": "any other product"}
TASK = {"labels": [{"name": name, "description": text} for name, text in DESCRIPTIONS.items()]}
LLM = {"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"}


def test_the_teacher_defaults_to_the_only_llm_labeler_and_the_student_to_embedding() -> None:
    config = parse_config({"task": TASK, "labeler": [LLM], "distill": {"enabled": True}})
    assert config.distill.teacher == "openai"
    assert config.distill.student.backend == "embedding" and config.distill.student.label_name == "distilled"


@pytest.mark.parametrize(
    ("labeler", "distill", "message"),
    [
        ([LLM], {"teacher": "gpt"}, "key 'distill.teacher': 'gpt' is not a labeler of this project"),
        ([{"backend": "embedding"}], {"enabled": True}, "key 'distill.teacher': name the LLM labeler"),
        ([LLM, {"backend": "embedding"}], {"teacher": "embedding"}, "'embedding' is not an LLM labeler"),
        ([LLM], {"enabled": True, "student": LLM}, "key 'distill.student.backend': 'openai' does not train"),
        (
            [LLM],
            {"enabled": True, "student": {"name": "openai"}},
            "key 'distill.student.name': 'openai' is taken",
        ),
        (
            [LLM],
            {"student": {"regularisation": 2}},
            "unknown key 'distill.student.regularisation'; allowed here: name",
        ),
    ],
)
def test_distill_names_are_checked(labeler, distill, message) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"task": TASK, "labeler": labeler, "distill": distill})
    assert message in str(error.value) and "\n" not in str(error.value)


# -- the loop, with a real LLM teacher and the real MiniLM student -------------------


def distill_project(folder: Path, base_url: str, batches: dict[str, int], **distill: object) -> Path:
    """Six golden reviews per label, then ``batches`` (name: reviews per label) in order.
    Every model label is accepted (fixed threshold 0), so a batch finishes without people."""
    folder.mkdir()
    pairs = list(zip(BOOKS, OTHERS, strict=True))
    sizes = {"golden": 6, **batches}
    data: list[dict[str, object]] = []
    for name, size in sizes.items():
        part, pairs = pairs[:size], pairs[size:]
        rows = [
            (f"{name}-{i}-{label}", text, label)
            for i, pair in enumerate(part)
            for text, label in zip(pair, LABELS, strict=True)
        ]
        with (folder / f"{name}.csv").open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows([("id", "text", "label"), *rows])
        data.append(
            {
                "path": f"{name}.csv",
                **({"role": "golden", "gold_column": "label"} if name == "golden" else {}),
            }
        )
    config = {
        "task": {**TASK, "instructions": "Decide whether the product reviewed is a book."},
        "data": data,
        "labeler": {
            "backend": "openai",
            "name": "llm",
            "model": MODEL_ALIAS,
            "base_url": base_url,
            "few_shot": 2,
            "answer_tokens": 1,
            "concurrency": 2,
        },
        "routing": {"mode": "fixed", "threshold": 0.0},
        "costs": {"llm_input_per_million": 1000.0, "llm_output_per_million": 1000.0},
        "distill": {"enabled": True, "min_confidence": 0.5, **distill},
    }
    (folder / "duolabel.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return folder


def labelers_of(project: Project, batch: str) -> set[str]:
    with project.store.read() as session:
        return set(
            session.scalars(
                select(Prediction.labeler)
                .join(Item, Item.id == Prediction.item_id)
                .where(Item.batch == batch)
            )
        )


def distill_runs(project: Project) -> list[Run]:
    with project.store.read() as session:
        return list(session.scalars(select(Run).where(Run.kind == "distill").order_by(Run.id)))


@pytest.mark.slow
def test_the_student_takes_over_once_it_is_as_good_and_a_rerun_repeats_nothing(tmp_path, llm_server):
    folder = distill_project(tmp_path / "p", llm_server.base_url, {"first": 4, "second": 4})
    result = cli("run", str(folder))
    assert result.returncode == 0, result.stderr
    with Project.open(folder) as project:
        # The teacher labelled the first batch; the student, taught by it, the second alone.
        assert labelers_of(project, "first") >= {"llm"}
        assert labelers_of(project, "second") == {"distilled"}
        [run] = distill_runs(project)
        usage = run.usage
        assert run.status == "done" and usage["winner"] == "student" and usage["taught"] == 8
        assert usage["student_accuracy"] >= usage["teacher_accuracy"]
        low, high = usage["student_interval"]
        assert low <= usage["student_accuracy"] <= high and usage["golden"] == 12
        # Both costs per item come from measurements: the teacher's ledger, the student's clock.
        assert 0 < usage["student_cost_per_item"] < usage["teacher_cost_per_item"]
        assert run.cost > 0
        # Routing and calibration worked from the student's own out-of-fold golden predictions.
        with project.store.read() as session:
            golden_oof = session.scalars(
                select(Prediction)
                .join(Item, Item.id == Prediction.item_id)
                .where(
                    Item.role == "golden", Prediction.labeler == "distilled", Prediction.out_of_fold.is_(True)
                )
            ).all()
        assert len(golden_oof) == 12 and all(p.confidence is not None for p in golden_oof)
        assert project.status().labeling.startswith("distilled labels: the student labels")
    status = cli("status", str(folder))
    assert "Labeling: distilled labels" in status.stdout and "golden accuracy on 12 items" in status.stdout
    # A second run and a hand-run distillation repeat nothing and call no model.
    llm_server.stop()
    try:
        again = cli("distill", str(folder))
        assert again.returncode == 0, again.stderr
        assert "recorded earlier for the same training data" in again.stdout
        assert cli("run", str(folder)).returncode == 0
    finally:
        llm_server.start()
    with Project.open(folder) as project:
        assert len(distill_runs(project)) == 1


@pytest.mark.slow
def test_a_student_taught_wrong_labels_loses_and_the_teacher_keeps_labeling(tmp_path, llm_server):
    # People label the first batch backwards; the student learns from them (the teacher's own
    # labels are left out: min_confidence 1), so on the golden items it falls behind.
    folder = distill_project(
        tmp_path / "p", llm_server.base_url, {"first": 8, "second": 3, "third": 3}, min_confidence=1.0
    )
    assert cli("import", str(folder / "first.csv"), "-p", str(folder)).returncode == 0
    with (folder / "first.csv").open(encoding="utf-8") as handle:
        first = list(csv.DictReader(handle))
    flipped = [(row["id"], "crowd", LABELS[1 - LABELS.index(row["label"])]) for row in first]
    with (folder / "answers.csv").open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("item", "worker", "label"), *flipped])
    assert cli("import-answers", str(folder / "answers.csv"), "-p", str(folder)).returncode == 0
    result = cli("run", str(folder))
    assert result.returncode == 0, result.stderr
    with Project.open(folder) as project:
        [run] = distill_runs(project)
        assert run.usage["winner"] == "teacher" and run.usage["taught"] >= 16
        assert run.usage["student_accuracy"] < run.usage["teacher_accuracy"]
        # The teacher labelled both later batches; the student labelled nothing.
        assert labelers_of(project, "second") == {"llm"} and labelers_of(project, "third") == {"llm"}
        assert "distilled" not in labelers_of(project, "first")
        assert project.status().labeling.startswith("llm labels: the teacher keeps labeling")


@pytest.mark.slow
def test_a_self_training_student_labels_with_the_model_the_distillation_measured(tmp_path, llm_server):
    # A self-training student also learns from the unlabelled items; the labeling stage must fit
    # it on the same data as the distillation stage did, or it would label with a model nobody
    # compared with the teacher (and pay for a second fit).
    folder = distill_project(
        tmp_path / "p", llm_server.base_url, {"first": 4, "second": 4}, student={"self_training": True}
    )
    result = cli("run", str(folder))
    assert result.returncode == 0, result.stderr
    with Project.open(folder) as project:
        [run] = distill_runs(project)
        assert run.usage["winner"] == "student"
        with project.store.read() as session:
            versions = set(
                session.scalars(
                    select(Prediction.model_version)
                    .join(Item, Item.id == Prediction.item_id)
                    .where(Item.batch == "second", Prediction.labeler == "distilled")
                )
            )
    assert versions == {run.usage["student_version"]}
