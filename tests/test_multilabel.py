"""The multi_label task type: answers as lists, per-label aggregation and agreement, the widget.

Pure tests pin the answer forms, agreement per label and the binary-relevance aggregator (checked
against crowd-kit's ``BinaryRelevance``); project tests import golden items and recorded answers
with list labels in CSV, JSONL and Parquet, aggregate, export, and answer in the web app.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from sqlalchemy import select

from duolabel.config import PROJECT_FILE
from duolabel.core.multilabel import BinaryRelevance, per_label
from duolabel.core.quality import fleiss_kappa
from duolabel.core.tasks import AnswerError, MultiLabel, task_type
from duolabel.core.wholelist import LIST_CHANCE
from duolabel.errors import DataError, ProjectError
from duolabel.project import Project
from duolabel.store import Annotation, FinalLabel, Item, Run
from duolabel.web import create_app
from duolabel.web.dashboard import dashboard_table
from tests.test_web import Person, assignment_id
from tests.test_wholelist import refit_chances
from tests.web_fixtures import LABELS, routed_project

EMOTIONS = ["joy", "love", "fear"]
KIND = MultiLabel()

# -- the type on its own -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        (["love", "joy"], '["joy", "love"]'),  # the project's label order, whatever the order given
        (("fear",), '["fear"]'),
        ([], "[]"),
        ('["fear", "joy"]', '["joy", "fear"]'),  # a JSON cell
        (" [ ] ", "[]"),
        ("fear, joy", '["joy", "fear"]'),  # a comma-separated cell
        ("love", '["love"]'),  # one label, as a single-label file would write it
    ],
)
def test_answers_are_stored_as_a_json_list_in_label_order(given: Any, stored: str):
    assert KIND.check_answer(given, EMOTIONS) == stored
    assert KIND.check_answer(stored, EMOTIONS) == stored  # canonical form is a fixed point


@pytest.mark.parametrize(
    ("given", "got", "expected"),
    [
        (["joy", "anger"], "anger", "each one of 'joy', 'love', 'fear'"),
        ("joy, Joy", "Joy", "each one of"),
        ('["joy", 3]', 3, "each one of"),
        (["joy", "joy"], ["joy", "joy"], "each at most once ('joy' is twice)"),
        ('["joy",', '["joy",', "is not valid JSON"),
        ('{"joy": 1}', '{"joy": 1}', "a list of labels"),
        ("", "", "[] for none"),
        (None, None, "a list of labels"),
        (7, 7, "a list of labels"),
    ],
)
def test_a_bad_answer_names_the_bad_label(given: Any, got: Any, expected: str):
    with pytest.raises(AnswerError) as caught:
        KIND.check_answer(given, EMOTIONS)
    assert caught.value.got == got and expected in caught.value.expected


def test_registered_with_a_widget_and_per_label_majority_vote():
    kind = task_type("multi_label")
    assert isinstance(kind, MultiLabel) and kind.list_valued and kind.default_aggregator == "majority_vote"
    assert isinstance(kind.aggregator("dawid_skene", labels=EMOTIONS, n_iter=5), BinaryRelevance)
    assert not task_type("single_label").list_valued
    assert KIND.model_answer([0.7, 0.49, 0.5], EMOTIONS) == '["joy", "fear"]'
    assert KIND.model_answer([0.1, 0.2, 0.3], EMOTIONS) == "[]"


def test_export_columns_one_per_label():
    assert KIND.export_columns('["joy", "fear"]', EMOTIONS) == {"is_joy": 1, "is_love": 0, "is_fear": 1}
    assert KIND.export_columns("[]", EMOTIONS) == {"is_joy": 0, "is_love": 0, "is_fear": 0}
    assert KIND.export_columns(None, EMOTIONS) == {"is_joy": None, "is_love": None, "is_fear": None}


ANSWERS = pd.DataFrame(
    [
        ("a", "p", '["joy"]'), ("a", "q", '["joy"]'), ("a", "r", '["joy", "love"]'),
        ("b", "p", '["fear"]'), ("b", "q", '["fear", "love"]'), ("b", "r", "[]"),
        ("c", "p", '["love"]'), ("c", "q", '["joy", "love"]'),
    ],
    columns=["task", "worker", "label"],
)  # fmt: skip


def test_agreement_is_kappa_per_label_and_the_mean():
    figures = KIND.agreement(ANSWERS, EMOTIONS)
    frames = per_label(ANSWERS, EMOTIONS)
    kappas = [fleiss_kappa(frames[label], ["no", "yes"]) for label in EMOTIONS]
    assert [figures[f"Fleiss' kappa: {label}"] for label in EMOTIONS] == pytest.approx(kappas)
    assert figures["Fleiss' kappa (mean over labels)"] == pytest.approx(sum(kappas) / 3)
    assert math.isfinite(figures["Krippendorff's alpha (mean over labels)"])
    # joy: a, c split 2-1 and 1-1 on the same side mostly; the figures differ per label
    assert len(set(round(k, 6) for k in kappas)) == 3


def test_agreement_skips_a_label_nobody_chose_and_is_nan_without_two_answers():
    figures = KIND.agreement(ANSWERS, [*EMOTIONS, "anger"])
    assert math.isnan(figures["Fleiss' kappa: anger"])  # all "no": chance agreement is 1
    assert figures["Fleiss' kappa (mean over labels)"] == pytest.approx(
        KIND.agreement(ANSWERS, EMOTIONS)["Fleiss' kappa (mean over labels)"]
    )
    one_each = ANSWERS.drop_duplicates("task")
    assert all(math.isnan(v) for v in KIND.agreement(one_each, EMOTIONS).values())


def _crowdkit_lists(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(label=[json.loads(v) for v in frame["label"]])


# crowd-kit 1.4.2 uses pandas keywords (inplace=, copy=) that pandas 3.1 deprecates.
@pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")
@pytest.mark.parametrize("method", ["majority_vote", "dawid_skene"])
def test_per_label_aggregation_matches_crowd_kits_binary_relevance(method: str):
    from crowdkit.aggregation import BinaryRelevance as CrowdKitBR
    from crowdkit.aggregation import DawidSkene, MajorityVote

    # No ties per label here, so the tie rules (which differ) do not matter.
    answers = ANSWERS[ANSWERS["task"] != "c"]
    ours = BinaryRelevance(method, labels=EMOTIONS, **({"n_iter": 50} if method != "majority_vote" else {}))
    ours.fit(answers)
    base = MajorityVote() if method == "majority_vote" else DawidSkene(n_iter=50)
    theirs = CrowdKitBR(base).fit_predict(_crowdkit_lists(answers))
    assert {t: json.loads(v) for t, v in ours.labels_.items()} == {
        t: [label for label in EMOTIONS if label in v] for t, v in theirs.items()
    }
    assert ours.labels_.to_dict() == {"a": '["joy"]', "b": '["fear"]'}
    # the whole list's confidence: product of each label's chosen side (a: joy 1, love 2/3, fear 1)
    if method == "majority_vote":
        assert ours.confidence_["a"] == pytest.approx(2 / 3)
        assert ours.probas_.loc["a"].tolist() == pytest.approx([1.0, 1 / 3, 0.0])


def test_known_lists_anchor_and_the_model_breaks_ties_per_label():
    agg = BinaryRelevance("majority_vote", labels=EMOTIONS)
    # c: joy 1-1 and fear 0-2: the model says joy applies (0.8) -> joy in
    agg.fit(ANSWERS, known={"a": '["love"]'}, model_probas={"c": {"joy": 0.8, "love": 0.9, "fear": 0.6}})
    assert agg.labels_["a"] == '["love"]'  # given
    assert agg.labels_["c"] == '["joy", "love"]'
    against = BinaryRelevance("majority_vote", labels=EMOTIONS)
    against.fit(ANSWERS, model_probas={"c": {"joy": 0.2, "love": 0.9, "fear": 0.6}})
    assert against.labels_["c"] == '["love"]'


def test_fused_dawid_skene_marks_items_the_model_voted_on():
    agg = BinaryRelevance("dawid_skene", labels=EMOTIONS, n_iter=20, fuse_model=True)
    probas = {t: {"joy": 0.9, "love": 0.1, "fear": 0.1} for t in "abc"}
    agg.fit(ANSWERS, known={"a": '["joy"]'}, model_probas=probas)
    assert agg.model_used_ == {"a": True, "b": True, "c": True}
    assert agg.labels_["a"] == '["joy"]'  # known
    plain = BinaryRelevance("dawid_skene", labels=EMOTIONS, n_iter=20).fit(ANSWERS, known={"a": '["joy"]'})
    assert not any(getattr(plain, "model_used_", {}).values())
    # the model's vote moves each label's posterior: joy's up, love's down
    assert agg.probas_.loc["b", "joy"] > plain.probas_.loc["b", "joy"]
    assert agg.probas_.loc["c", "love"] < plain.probas_.loc["c", "love"]


# -- a project ---------------------------------------------------------------------------------


def multi_project(folder: Path, **sections: Any) -> Project:
    folder.mkdir(parents=True)
    settings = {"task": {"type": "multi_label", "labels": [{"name": n} for n in EMOTIONS]}, **sections}
    (folder / PROJECT_FILE).write_text(yaml.safe_dump(settings))
    return Project.open(folder)


GOLD = {"g1": ["joy"], "g2": ["love", "joy"], "g3": []}


def write_gold(path: Path, fmt: str) -> None:
    rows = [{"id": k, "text": f"text {k}", "gold": v} for k, v in GOLD.items()]
    if fmt == "csv":
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "text", "gold"])
            writer.writerows([r["id"], r["text"], json.dumps(r["gold"])] for r in rows)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        table = pa.Table.from_pylist(rows, schema=pa.schema([("id", pa.string()), ("text", pa.string()),
                                                            ("gold", pa.list_(pa.string()))]))  # fmt: skip
        pq.write_table(table, path)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_golden_items_with_list_gold_in_every_format(tmp_path: Path, fmt: str):
    with multi_project(tmp_path / "p") as project:
        path = tmp_path / f"golden.{fmt}"
        write_gold(path, fmt)
        project.import_file(path, role="golden", gold_column="gold")
        with project.store.read() as session:
            gold = dict(session.execute(select(Item.id, Item.gold_label)).all())
        assert gold == {"g1": '["joy"]', "g2": '["joy", "love"]', "g3": "[]"}


def test_bad_list_gold_is_reported_per_row_and_nothing_is_imported(tmp_path: Path):
    with multi_project(tmp_path / "p") as project:
        bad = tmp_path / "bad.jsonl"
        rows = [
            {"id": "a", "text": "one", "gold": ["joy", "anger"]},
            {"id": "b", "text": "two", "gold": "joy, fear"},
            {"id": "c", "text": "three", "gold": {"joy": True}},
            {"id": "d", "text": "four", "gold": ["joy", "joy"]},
        ]
        bad.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        with pytest.raises(DataError) as caught:
            project.import_file(bad, role="golden", gold_column="gold")
        text = str(caught.value)
        assert (
            f"{bad}, row 1, column 'gold': got 'anger', expected a list of labels, each one of 'joy'" in text
        )
        assert "row 3, column 'gold': got an object" in text
        assert "row 4, column 'gold': got ['joy', 'joy'], expected" in text and "'joy' is twice" in text
        assert "row 2" not in text  # the comma-separated cell is a valid answer
        assert project.status().items == 0


def write_answers(path: Path, rows: list[tuple[str, str, Any]]) -> None:
    if path.suffix == ".csv":
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["item", "worker", "label"])
            writer.writerows([i, w, json.dumps(v) if isinstance(v, list) else v] for i, w, v in rows)
    else:
        path.write_text(
            "".join(json.dumps({"item": i, "worker": w, "label": v}) + "\n" for i, w, v in rows),
            encoding="utf-8",
        )


CROWD = [
    ("x1", "w1", ["joy"]), ("x1", "w2", ["joy", "love"]), ("x1", "w3", ["love", "joy"]),
    ("x2", "w1", []), ("x2", "w2", ["fear"]), ("x2", "w3", ["fear"]),
]  # fmt: skip


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_import_answers_aggregate_and_export_lists(tmp_path: Path, fmt: str):
    with multi_project(tmp_path / "p") as project:
        project.add_items(pd.DataFrame({"id": ["x1", "x2"], "text": ["one", "two"]}))
        path = tmp_path / f"answers.{fmt}"
        write_answers(path, CROWD)
        project.import_answers(path)
        with project.store.read() as session:
            stored = sorted(session.scalars(select(Annotation.label)))
        assert stored == sorted(
            ['["joy"]', '["joy", "love"]', '["joy", "love"]', "[]", '["fear"]', '["fear"]']
        )
        assert project.aggregate().finalized == 2
        with project.store.read() as session:
            finals = {f.item_id: f for f in session.scalars(select(FinalLabel))}
            method = session.scalars(select(Run.config).where(Run.kind == "aggregate")).one()["method"]
        assert method == "majority_vote"
        assert {k: f.label for k, f in finals.items()} == {"x1": '["joy", "love"]', "x2": '["fear"]'}
        # x1: joy 3/3, love 2/3, fear 3/3 said no -> the whole list is right with 2/3
        assert finals["x1"].confidence == pytest.approx(2 / 3)
        assert finals["x1"].votes == {'["joy", "love"]': 2, '["joy"]': 1}

        out = tmp_path / "labels.csv"
        assert project.export(out) == 2
        with out.open(encoding="utf-8") as handle:
            rows = {r["id"]: r for r in csv.DictReader(handle)}
        assert json.loads(rows["x1"]["label"]) == ["joy", "love"]  # JSON in the cell
        assert (rows["x1"]["is_joy"], rows["x1"]["is_love"], rows["x1"]["is_fear"]) == ("1", "1", "0")
        assert (rows["x2"]["is_joy"], rows["x2"]["is_fear"]) == ("0", "1")
        pq_out = tmp_path / "labels.parquet"
        project.export(pq_out)
        table = pq.read_table(pq_out)
        assert str(table.schema.field("is_fear").type) == "int64"

        figures = dashboard_table(project, "agreement")
        assert "Fleiss' kappa (mean over labels)" in set(figures["figure"])


def test_import_answers_names_a_bad_label(tmp_path: Path):
    with multi_project(tmp_path / "p") as project:
        project.add_items(pd.DataFrame({"id": ["x1"], "text": ["one"]}))
        path = tmp_path / "answers.jsonl"
        write_answers(path, [("x1", "w1", ["joy", "Fear"]), ("x1", "w2", "[]")])
        with pytest.raises(DataError) as caught:
            project.import_answers(path)
        assert "row 1, column 'label': got 'Fear', expected a list of labels, each one of" in str(
            caught.value
        )
        assert "row 2" not in str(caught.value)


# -- the web widget ------------------------------------------------------------------------------


def multi_label_web_project(folder: Path, items: int) -> Project:
    """A multi_label project with LABELS, ``items`` items routed to one person, and alice."""
    return routed_project(folder, items, "multi_label")


def test_the_page_shows_checkboxes_and_stores_the_ticked_list(tmp_path: Path):
    project = multi_label_web_project(tmp_path / "p", 4)
    person = Person(create_app(project))
    person.login("alice")
    try:
        html = person.get("/label").text
        boxes = re.findall(r'type="checkbox" name="labels" value="([^"]+)" data-toggle="(\d)"', html)
        assert boxes == [(label, str(key)) for key, label in enumerate(LABELS, start=1)]
        assert '<input type="hidden" name="labels" value="">' in html and "data-submit" in html
        assert 'name="label" value=' not in html  # no single-label buttons
        # as a browser sends the form: the empty marker, then each ticked box
        ok = person.post(
            "/answer", assignment_id=assignment_id(html), labels=["", "other", "billing"], seconds="1"
        )
        assert ok.status_code == 303
        html = person.get("/label").text
        none = person.post("/answer", assignment_id=assignment_id(html), labels=[""], seconds="1")
        assert none.status_code == 303  # nothing ticked is an answer: no label applies
        html = person.get("/label").text
        bad = person.post("/answer", assignment_id=assignment_id(html), labels=["", "postal"], seconds="1")
        assert bad.status_code == 400 and "label &#39;postal&#39; is not a list of labels" in bad.text
        api = person.api("GET", "/task").json()["task"]
        answered = person.api(
            "POST", "/answer", {"assignment_id": api["assignment_id"], "label": ["shipping"]}
        )
        assert answered.status_code == 200
        api = person.api("GET", "/task").json()["task"]
        as_json = person.api("POST", "/answer", {"assignment_id": api["assignment_id"], "label": '["other"]'})
        assert as_json.status_code == 200
        with project.store.read() as session:
            stored = sorted(session.scalars(select(Annotation.label)))
        assert stored == sorted(['["billing", "other"]', "[]", '["shipping"]', '["other"]'])
    finally:
        person.close()
        project.close()


def test_people_functions_take_lists(tmp_path: Path):
    from duolabel.people.assignments import check_answer

    assert check_answer(["fear", "joy"], EMOTIONS, 1.0, KIND) == '["joy", "fear"]'
    with pytest.raises(ProjectError, match="label 'hope' is not a list of labels, each one of"):
        check_answer(["hope"], EMOTIONS, 1.0, KIND)


@pytest.mark.browser
def test_label_with_keyboard_toggles_in_chromium(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from playwright.sync_api import expect

    from tests.browser import first_task, stored_labels, submit_and_wait

    monkeypatch.delenv("DUOLABEL_SECRET", raising=False)
    project = multi_label_web_project(tmp_path / "p", 3)
    try:
        with first_task(project) as (page, text):
            # 3 and 1 on, 2 on and off again; a clicked box keeps taking the keys
            for key in "3122":
                page.keyboard.press(key)
            expect(page.locator('input[data-toggle="1"]')).to_be_checked()
            expect(page.locator('input[data-toggle="2"]')).not_to_be_checked()
            submit_and_wait(page, text, "item-001")
            page.click('input[data-toggle="2"]')  # the mouse, then the keyboard on the focused box
            page.keyboard.press("3")
            submit_and_wait(page, text, "item-002")
            page.keyboard.press("Enter")  # nothing ticked: no label applies
            expect(page.get_by_text("Nothing to do right now")).to_be_visible()
        stored = stored_labels(project)
        assert stored == {
            "item-000": '["billing", "other"]',
            "item-001": '["shipping", "other"]',
            "item-002": "[]",
        }
        assert page.errors == []  # the strict CSP lets the script run and nothing else fails
    finally:
        project.close()


# -- the model side ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_one_vs_rest_embedding_heads_on_real_goemotions(tmp_path: Path):
    from sklearn.metrics import roc_auc_score

    from duolabel.labelers import EmbeddingLabeler, TextItem
    from duolabel.labelers.embedding import MemoryEmbeddingCache
    from tests.conftest import shared_data

    data = shared_data("goemotions")
    rows = [json.loads(line) for line in (data / "items.jsonl").read_text(encoding="utf-8").splitlines()]
    chosen = ["joy", "love", "neutral"]
    pick = [r for r in rows if set(r["gold"]) & set(chosen)][:90]
    items = [TextItem(r["id"], r["text"], r["id"]) for r in pick]
    gold = [KIND.check_answer([g for g in r["gold"] if g in chosen], chosen) for r in pick]
    labeler = EmbeddingLabeler(labels=chosen, multi_label=True, cv_folds=3, cache=MemoryEmbeddingCache())
    labeler.fit(items[:60], gold[:60])
    probs, _ = labeler.predict_proba(items[60:])
    assert probs.shape == (30, 3) and ((probs >= 0) & (probs <= 1)).all()
    assert not np.allclose(probs.sum(axis=1), 1.0)  # per-label probabilities, not a distribution
    assert labeler.oof_proba_.shape == (60, 3) and labeler.fit_info_["folds"] == 3
    # each head ranks the held-out comments that carry its label above those that do not
    truth = np.array([[int(label in json.loads(g)) for label in chosen] for g in gold[60:]])
    assert truth.sum(axis=0).min() >= 2  # every label occurs among the held-out comments
    aucs = [roc_auc_score(truth[:, j], probs[:, j]) for j in range(len(chosen))]
    assert min(aucs) > 0.7, aucs
    # a different task type is a different model version
    single = EmbeddingLabeler(labels=chosen, cache=labeler.cache)
    single.fit(items[:60], [json.loads(g)[0] for g in gold[:60]])
    assert single.version_ != labeler.version_


def test_one_vs_rest_refuses_what_it_cannot_train():
    from duolabel.errors import LabelerError, SetupError
    from duolabel.labelers import EmbeddingLabeler, TextItem

    with pytest.raises(SetupError, match="numeric regularization"):
        EmbeddingLabeler(labels=EMOTIONS, multi_label=True, regularization="cv")
    labeler = EmbeddingLabeler(labels=EMOTIONS, multi_label=True)
    items = [TextItem("a", "x", "a"), TextItem("b", "y", "b")]
    with pytest.raises(LabelerError, match=r"training labels \['anger'\] are not among"):
        labeler.fit(items, ['["joy", "anger"]', "[]"])
    with pytest.raises(LabelerError, match="no training examples for label\\(s\\) 'fear'"):
        labeler.fit(items, ['["joy", "love"]', '["joy"]'])


def test_the_label_stage_stores_the_model_list_and_its_whole_list_confidence():
    from duolabel.stages.label import _prediction_rows

    items = [type("I", (), {"id": "a"})(), type("I", (), {"id": "b"})()]
    probs = np.array([[0.9, 0.2, 0.6], [0.1, 0.3, 0.4]])
    rows = _prediction_rows(
        items, probs, EMOTIONS, task=KIND, name="embedding", version="v", run_id=1,
        out_of_fold=False, seconds_per_item=0.0,
    )  # fmt: skip
    assert [r.label for r in rows] == ['["joy", "fear"]', "[]"]
    assert rows[0].raw_confidence == pytest.approx(0.9 * 0.8 * 0.6)
    assert rows[0].probs == {"joy": 0.9, "love": 0.2, "fear": 0.6}


@pytest.mark.slow
def test_a_project_labels_calibrates_per_label_and_routes(tmp_path: Path):
    from duolabel.store import Prediction
    from tests.conftest import shared_data

    data = shared_data("goemotions")
    rows = [json.loads(line) for line in (data / "items.jsonl").read_text(encoding="utf-8").splitlines()]
    chosen = ["joy", "love", "fear"]
    # ten comments per label (a comment with two of them once), the regular ones after them
    golden = list(
        {r["id"]: r for label in chosen for r in [r for r in rows if label in r["gold"]][:10]}.values()
    )
    regular = [r for r in rows if r not in golden][:10]
    with multi_project(tmp_path / "p") as project:
        for name, part, role in (("golden.jsonl", golden, "golden"), ("items.jsonl", regular, "regular")):
            path = tmp_path / name
            lines = []
            for r in part:
                row = {"id": r["id"], "text": r["text"]}
                if role == "golden":  # a list in a JSONL gold column
                    row["gold"] = [g for g in r["gold"] if g in chosen]
                lines.append(json.dumps(row) + "\n")
            path.write_text("".join(lines), encoding="utf-8")
            project.import_file(path, role=role, gold_column="gold" if role == "golden" else None)
        project.label()
        with project.store.read() as session:
            predictions = list(session.scalars(select(Prediction)))
        assert len(predictions) == len(golden) + 10
        for pred in predictions:
            assert set(json.loads(pred.label)) <= set(chosen) and set(pred.probs) == set(chosen)
            assert pred.raw_confidence == pytest.approx(
                KIND.model_confidence([pred.probs[c] for c in chosen])
            )
        results = project.calibrate()
        assert [r.method for r in results] == ["per label (temperature)"]
        assert results[0].after["nll"] <= results[0].before["nll"] + 0.05  # honest, out of fold
        with project.store.read() as session:
            predictions = list(session.scalars(select(Prediction)))
        for pred in predictions:
            calibrated = [pred.calibrated[c] for c in chosen]
            assert pred.label == KIND.model_answer(calibrated, chosen)
            # The confidence is the whole list's chance, calibrated on the golden items.
            assert pred.confidence == pred.features[LIST_CHANCE]
        ids = {r["id"] for r in golden}
        gold = {r["id"]: KIND.check_answer([g for g in r["gold"] if g in chosen], chosen) for r in golden}
        mine = [p for p in predictions if p.item_id in ids]
        others = [p for p in predictions if p.item_id not in ids]
        expected = refit_chances(
            [(p.calibrated, p.label, gold[p.item_id]) for p in mine],
            [(p.calibrated, p.label) for p in others],
            chosen,
            KIND,
        )
        assert [p.confidence for p in others] == pytest.approx(expected.tolist())
        assert set(results[0].params) == {"list_ece_before", "list_ece_after", "list_right"}
        # Routing reads each item's chance of being entirely right (tests/test_multilabel_routing.py).
        routed = project.route()
        assert sum(routed.decided.values()) == 10
        assert {"confidence", "margin", "combined"} <= set(project.error_ranking())


def test_per_label_calibrator_auto_picks_a_method_per_label_and_cross_fits():
    from duolabel.core.multilabel import PerLabelCalibrator

    rng = np.random.default_rng(1)
    Y = rng.integers(0, 2, size=(120, 3))
    probs = np.clip(0.5 + 0.3 * (2 * Y - 1) + rng.normal(0, 0.2, Y.shape), 0.01, 0.99)
    cal = PerLabelCalibrator("auto").fit(probs, Y)
    assert len(cal.methods_) == 3 and all(isinstance(m, str) for m in cal.methods_)
    honest = cal.cross_validated(probs, Y)
    assert honest.shape == probs.shape and ((honest >= 0) & (honest <= 1)).all()
    assert not np.allclose(honest, cal.transform(probs))  # out of fold, not in-sample
