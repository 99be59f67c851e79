"""The pairwise task type: fixed labels, pairs on import and export, answers, aggregation, Bradley-Terry.

Pure tests pin the answer forms and the pair helpers; project tests import real LLMBar pairs
(prompt + two responses), recorded answers, aggregate and export them.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import ValidationError
from sqlalchemy import select

from duolabel.config import PROJECT_FILE
from duolabel.config.sections import TaskConfig
from duolabel.core.pairwise import (
    bradley_terry,
    pair_features,
    swap_consistent,
    swapped_answer,
    swapped_columns,
    swapped_control,
)
from duolabel.core.tasks import AnswerError, Pairwise, task_type
from duolabel.errors import DataError
from duolabel.project import Project
from duolabel.store import Annotation, FinalLabel, Item
from tests.conftest import shared_data

KIND = Pairwise()

# -- the type on its own -------------------------------------------------------------------


@pytest.mark.parametrize(("given", "stored"), [("A", "A"), ("b", "B"), (" Tie ", "tie"), ("TIE", "tie")])
def test_answers_are_read_case_insensitively(given: str, stored: str):
    assert KIND.check_answer(given, ["A", "B", "tie"]) == stored


@pytest.mark.parametrize("given", ["tie", "C", "", None, 1])
def test_an_answer_outside_the_labels_is_refused(given: Any):
    with pytest.raises(AnswerError):
        KIND.check_answer(given, ["A", "B"])


def test_the_labels_are_fixed():
    assert TaskConfig(type="pairwise", labels=[{"name": "A"}, {"name": "B"}]).label_names == ["A", "B"]
    TaskConfig(type="pairwise", labels=[{"name": "A"}, {"name": "B"}, {"name": "tie"}])
    with pytest.raises(ValidationError, match="labels are A, B and optionally tie"):
        TaskConfig(type="pairwise", labels=[{"name": "better"}, {"name": "worse"}])
    with pytest.raises(ValidationError, match="labels are A, B"):
        TaskConfig(type="pairwise", labels=[{"name": "B"}, {"name": "A"}])
    # Other task types keep any labels.
    TaskConfig(type="single_label", labels=[{"name": "better"}, {"name": "worse"}])


def test_task_type_is_registered_and_single_label_underneath():
    kind = task_type("pairwise")
    assert kind.widget == "widgets/pairwise.html" and kind.default_aggregator == "majority_vote"
    assert not kind.list_valued
    assert kind.model_answer([0.3, 0.7], ["A", "B"]) == "B"


def test_swapping_flips_answers_and_distributions():
    assert [swapped_answer(a) for a in ["A", "B", "tie"]] == ["B", "A", "tie"]
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])
    assert swapped_columns(swapped_columns(probs)).tolist() == probs.tolist()
    assert swapped_columns(probs)[:, 2].tolist() == [0.1, 0.3]


def test_swap_consistency_needs_the_same_winner_and_no_abstention():
    shown = np.array([[0.9, 0.1], [0.6, 0.4], [np.nan, np.nan]])
    back = np.array([[0.6, 0.4], [0.45, 0.55], [0.5, 0.5]])
    assert swap_consistent(shown, back).tolist() == [True, False, False]


def test_pair_features_flip_sign_with_the_order_except_the_distance():
    rng = np.random.default_rng(0)
    p, a, b = rng.normal(size=(3, 4, 8))
    ab, ba = pair_features(p, a, b), pair_features(p, b, a)
    assert np.allclose(ab[:, :17], -ba[:, :17]) and np.allclose(ab[:, 17:], ba[:, 17:])
    assert np.allclose(ab[:, 16], (p * a).sum(axis=1) - (p * b).sum(axis=1))  # nearer the prompt


def test_swapped_control_flips_gold_and_keeps_everything_else():
    row = {"id": "x", "text": "p", "response_a": "one", "response_b": "two", "gold": "B", "subset": "s"}
    out = swapped_control(row)
    assert out == {"id": "x-swapped", "text": "p", "response_a": "two", "response_b": "one", "gold": "A",
                   "subset": "s"}  # fmt: skip
    assert row["gold"] == "B"  # the original is untouched


def test_bradley_terry_ranks_the_system_that_wins():
    # x beats y and z; y beats z; one tie between y and z
    labels = ["A", "A", "B", "A", "B", "tie"]
    left = ["x", "x", "z", "y", "y", "y"]
    right = ["y", "z", "x", "z", "x", "z"]
    scores = bradley_terry(labels, left, right)
    assert scores.index.tolist() == ["x", "y", "z"]
    assert scores.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="one answer and two system names"):
        bradley_terry(["A"], ["x"], [])


# -- in a project --------------------------------------------------------------------------


def pair_project(folder: Path, *, tie: bool = False, **sections: Any) -> Project:
    folder.mkdir(parents=True)
    labels = [{"name": "A"}, {"name": "B"}] + ([{"name": "tie"}] if tie else [])
    settings = {"task": {"type": "pairwise", "labels": labels}, **sections}
    (folder / PROJECT_FILE).write_text(yaml.safe_dump(settings))
    return Project.open(folder)


def llmbar_rows(n: int) -> list[dict[str, Any]]:
    path = shared_data("llmbar") / "items.jsonl"
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for _, line in zip(range(n), handle, strict=False)]


def test_llmbar_pairs_import_and_export_with_both_responses(tmp_path: Path):
    rows = llmbar_rows(12)
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pair_project(tmp_path / "p") as project:
        project.import_file(path, gold_column="gold")  # regular items with a known answer
        with project.store.read() as session:
            items = {i.id: i for i in session.scalars(select(Item))}
        first = items[rows[0]["id"]]
        assert first.text == rows[0]["text"].strip()
        assert first.fields["response_a"] == rows[0]["response_a"].strip()
        assert first.fields["response_b"] == rows[0]["response_b"].strip()
        assert first.fields["subset"] == rows[0]["subset"]
        assert {i.gold_label for i in items.values()} <= {"A", "B"}

        answers = tmp_path / "answers.csv"
        with answers.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["item", "worker", "label"])
            for r in rows[:3]:
                writer.writerows([[r["id"], "w1", r["gold"].lower()], [r["id"], "w2", r["gold"]],
                                  [r["id"], "w3", swapped_answer(r["gold"])]])  # fmt: skip
        project.import_answers(answers)
        with project.store.read() as session:
            assert set(session.scalars(select(Annotation.label))) == {"A", "B"}
        assert project.aggregate().finalized == 3
        with project.store.read() as session:
            finals = dict(session.execute(select(FinalLabel.item_id, FinalLabel.label)).all())
        assert finals == {r["id"]: r["gold"] for r in rows[:3]}  # two of three answers agree with gold

        out = tmp_path / "labels.csv"
        assert project.export(out) == 3
        with out.open(encoding="utf-8") as handle:
            exported = {r["id"]: r for r in csv.DictReader(handle)}
        assert exported[rows[0]["id"]]["response_a"] == rows[0]["response_a"].strip()
        assert exported[rows[0]["id"]]["response_b"] == rows[0]["response_b"].strip()
        assert exported[rows[0]["id"]]["label"] == rows[0]["gold"]


def test_a_missing_or_empty_response_is_named_by_file_row_and_field(tmp_path: Path):
    with pair_project(tmp_path / "p") as project:
        no_column = tmp_path / "no_b.csv"
        pd.DataFrame({"id": ["x"], "text": ["p"], "response_a": ["a"]}).to_csv(no_column, index=False)
        with pytest.raises(DataError) as caught:
            project.import_file(no_column)
        assert f"{no_column}, row 1, column 'response_b': missing column" in str(caught.value)

        empty = tmp_path / "empty.jsonl"
        rows = [{"id": "x", "text": "p", "response_a": "a", "response_b": "b"},
                {"id": "y", "text": "p", "response_a": "  ", "response_b": "b"},
                {"id": "z", "text": "p", "response_a": "a"}]  # fmt: skip
        empty.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        with pytest.raises(DataError) as caught:
            project.import_file(empty)
        text = str(caught.value)
        assert "row 2, column 'response_a': got an empty response_a" in text
        assert "row 3, column 'response_b': missing field" in text
        assert project.status().items == 0

        renamed = tmp_path / "renamed.csv"
        frame = pd.DataFrame({"id": ["x"], "prompt": ["p"], "chosen": ["a"], "rejected": ["b"]})
        frame.to_csv(renamed, index=False)
        project.import_file(
            renamed, columns={"prompt": "text", "chosen": "response_a", "rejected": "response_b"}
        )
        with project.store.read() as session:
            assert session.scalars(select(Item.fields)).one() == {"response_a": "a", "response_b": "b"}


def test_tie_answers_aggregate_with_dawid_skene(tmp_path: Path):
    with pair_project(tmp_path / "p", tie=True, aggregation={"method": "dawid_skene"}) as project:
        project.add_items(pd.DataFrame({"id": ["x", "y"], "text": ["p", "q"], "response_a": ["a", "c"],
                                        "response_b": ["b", "d"]}))  # fmt: skip
        path = tmp_path / "answers.jsonl"
        votes = [("x", "w1", "tie"), ("x", "w2", "tie"), ("x", "w3", "A"), ("y", "w1", "B"), ("y", "w2", "B"),
                 ("y", "w3", "B")]  # fmt: skip
        path.write_text("".join(json.dumps({"item": i, "worker": w, "label": v}) + "\n" for i, w, v in votes))
        project.import_answers(path)
        assert project.aggregate().finalized == 2
        with project.store.read() as session:
            finals = dict(session.execute(select(FinalLabel.item_id, FinalLabel.label)).all())
        assert finals == {"x": "tie", "y": "B"}


# -- people: the page and swapped-duplicate controls ---------------------------------------


def routed_pairs(project: Project, pairs: list[tuple[str, str, str, str]]) -> None:
    """Pairs ``(id, prompt, response_a, response_b)`` as regular items routed to people."""
    from duolabel.store import Route, Run

    with project.store.write() as session:
        run = Run(kind="route")
        session.add(run)
        session.flush()
        for seq, (item_id, prompt, a, b) in enumerate(pairs):
            fields = {"response_a": a, "response_b": b}
            session.add(
                Item(id=item_id, seq=seq, text=prompt, fields=fields, content_hash=item_id, batch="b")
            )
            session.flush()
            session.add(
                Route(item_id=item_id, decision="humans", overlap=1, policy_version="t", run_id=run.id)
            )


def test_swapped_duplicate_controls_look_like_any_task_and_catch_a_position_bias(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import re

    from duolabel.people.accounts import add_annotator
    from duolabel.web import create_app
    from tests.test_web import Person, annotations, assignment_id
    from tests.web_fixtures import PASSWORD

    monkeypatch.delenv("DUOLABEL_SECRET", raising=False)
    with pair_project(tmp_path / "p", quality={"exam_size": 0, "control_rate": 1.0}) as project:
        routed_pairs(project, [("r1", "Add 2 and 2.", "4", "5"), ("r2", "Spell cat.", "c-a-t", "k-a-t")])
        control = {
            "id": "c1",
            "text": "Name a primary colour.",
            "response_a": "red",
            "response_b": "grey",
            "gold": "A",
        }
        path = tmp_path / "controls.jsonl"
        path.write_text(
            "".join(json.dumps(r) + "\n" for r in [control, swapped_control(control)]), encoding="utf-8"
        )
        project.import_file(path, role="control", gold_column="gold")
        with project.store.read() as session:
            golds = dict(
                session.execute(select(Item.id, Item.gold_label).where(Item.role == "control")).all()
            )
        assert golds == {"c1": "A", "c1-swapped": "B"}

        add_annotator(project.store, "alice", PASSWORD)
        alice = Person(create_app(project))
        alice.login("alice")
        skeletons, shown = set(), []
        for _ in range(4):
            html = alice.get("/label").text
            task = alice.api("GET", "/task").json()["task"]
            assert set(task) == {
                "assignment_id",
                "text",
                "lease_expires",
                "response_a",
                "response_b",
                "blocks",
                "highlight",
            }
            shown.append((task["response_a"], task["response_b"]))
            body = re.sub(r'(id="item-text"|class="text")>[^<]*<', "", html)
            # "n left" falls by one per answer, control or not (tests/test_web.py checks its values)
            body = re.sub(r'id="left"><strong>\d+<', "", body)
            skeletons.add(re.sub(r'value="\d+"|"answers">\d+</span> answers?|"earnings">[^<]*<', "", body))
            assert "swapped" not in alice.shown(html) and "gold" not in alice.shown(html).lower()
            alice.post("/answer", assignment_id=assignment_id(html), label="A")  # always the left one
        assert len(skeletons) == 1  # controls and regular pairs differ only in their texts
        assert ("red", "grey") in shown and ("grey", "red") in shown
        controls = {row[0]: row[2] for row in annotations(project) if row[4] == "control"}
        # Always answering A, whatever the responses: right on one of the two controls.
        assert sorted(label == golds[item] for item, label in controls.items()) == [False, True]
