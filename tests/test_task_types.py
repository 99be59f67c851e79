"""Task types: the two built-ins on their own, and an ordinal project end to end.

The pure tests pin what each type answers (validation, prediction, agreement, default
aggregator, widget, export columns). The project tests check that every stage asks the
project's task type: import, the web widget and answers, aggregation, export, the dashboard;
the slow one runs on the real PolitiFact crowd (``shared/data/politifact_truth``).
"""

from __future__ import annotations

import csv
import json
import math
import random
import re
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from sqlalchemy import select

from duolabel.config import PROJECT_FILE, AggregationConfig, TaskConfig, parse_config
from duolabel.core.aggregation import AGGREGATORS
from duolabel.core.quality import fleiss_kappa, krippendorff_alpha
from duolabel.core.tasks import TASK_TYPES, AnswerError, Ordinal, SingleLabel, TaskType, task_type
from duolabel.errors import ConfigError, DataError, ProjectError
from duolabel.people.accounts import add_annotator
from duolabel.project import Project
from duolabel.store import Annotation, Annotator, FinalLabel, Route, Run
from duolabel.web import actions, create_app
from duolabel.web.dashboard import dashboard_table
from tests.conftest import shared_data
from tests.test_web import Person, assignment_id, csrf
from tests.web_fixtures import LABELS, PASSWORD, add_routed_items, make_project

SCALE = ["low", "mid", "high"]
WIDGETS = Path(__file__).resolve().parent.parent / "src" / "duolabel" / "web" / "templates"

# -- the two types on their own ----------------------------------------------------------


def test_both_built_ins_are_registered_task_types():
    assert {"single_label", "ordinal"} <= set(TASK_TYPES.names())
    for name in TASK_TYPES.names():
        kind = task_type(name)
        assert isinstance(kind, TaskType) and kind.name == name
        assert kind.default_aggregator in AGGREGATORS  # a default the project can run
        assert (WIDGETS / kind.widget).is_file()  # and a widget the web page can include
    with pytest.raises(
        ConfigError,
        match="unknown task type 'span'; choose one of: multi_label, ordinal, pairwise, single_label, spans",
    ):
        task_type("span")


@pytest.mark.parametrize("kind", [SingleLabel(), Ordinal()])
def test_answers_are_exactly_one_of_the_labels(kind: TaskType):
    assert kind.check_answer("mid", SCALE) == "mid"
    for bad in ("medium", " mid", "", None, 1):
        with pytest.raises(AnswerError) as caught:
            kind.check_answer(bad, SCALE)
        assert caught.value.got == bad and caught.value.expected == "one of 'low', 'mid', 'high'"
        assert str(caught.value) == f"got {bad!r}, expected one of 'low', 'mid', 'high'"


@pytest.mark.parametrize("kind", [SingleLabel(), Ordinal()])
def test_the_models_answer_is_its_likeliest_label(kind: TaskType):
    probs = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3], [0.1, 0.1, 0.8]])
    assert kind.predicted(probs).tolist() == [1, 0, 2]


def near_misses() -> pd.DataFrame:
    """Two raters who disagree only by one step on the scale, on half the items."""
    pairs = [
        ("low", "low"),
        ("low", "mid"),
        ("mid", "mid"),
        ("mid", "high"),
        ("high", "high"),
        ("high", "mid"),
    ]
    rows = [(i, w, label) for i, pair in enumerate(pairs) for w, label in zip("ab", pair, strict=True)]
    return pd.DataFrame(rows, columns=["task", "worker", "label"])


def test_agreement_is_nominal_for_single_label_and_ordinal_for_ordinal():
    answers = near_misses()
    nominal, ordinal = SingleLabel().agreement(answers, SCALE), Ordinal().agreement(answers, SCALE)
    assert nominal == {
        "Krippendorff's alpha (nominal)": pytest.approx(krippendorff_alpha(answers, SCALE)),
        "Fleiss' kappa": pytest.approx(fleiss_kappa(answers, SCALE)),
    }
    assert ordinal == {
        "Krippendorff's alpha (ordinal)": pytest.approx(krippendorff_alpha(answers, SCALE, level="ordinal")),
        "Fleiss' kappa": pytest.approx(fleiss_kappa(answers, SCALE)),
    }
    # near misses are nearly agreement on a scale, plain disagreement without one
    assert ordinal["Krippendorff's alpha (ordinal)"] > nominal["Krippendorff's alpha (nominal)"] + 0.2


@pytest.mark.parametrize("kind", [SingleLabel(), Ordinal()])
def test_agreement_without_two_answers_on_an_item_is_nan_not_an_error(kind: TaskType):
    one_each = pd.DataFrame([("a", 1, "low"), ("b", 1, "high")], columns=["task", "worker", "label"])
    figures = kind.agreement(one_each, SCALE)
    assert len(figures) == 2 and all(math.isnan(v) for v in figures.values())


def test_export_columns():
    assert SingleLabel().export_columns("mid", SCALE) == {}
    assert [Ordinal().export_columns(label, SCALE) for label in SCALE] == [
        {"rank": 0},
        {"rank": 1},
        {"rank": 2},
    ]
    assert Ordinal().export_columns(None, SCALE) == {"rank": None}  # pending
    assert Ordinal().export_columns("retired", SCALE) == {"rank": None}  # no longer on the scale


# -- configuration ---------------------------------------------------------------------------


def config(**sections: Any) -> dict[str, Any]:
    # The threshold policy: the answers fed below fill the fixed overlap they are routed with.
    routing = {"policy": "threshold", **sections.pop("routing", {})}
    task = {"labels": [{"name": n} for n in SCALE], **sections.pop("task", {})}
    return {"task": task, "routing": routing, **sections}


def test_task_type_setting_and_the_default_aggregator():
    plain = parse_config(config())
    assert plain.task.type == "single_label" and plain.aggregation.method is None
    assert parse_config(config(task={"type": "ordinal"})).task.type == "ordinal"
    with pytest.raises(ConfigError) as caught:
        parse_config(config(task={"type": "ranking"}))
    expected = "expected one of 'multi_label', 'ordinal', 'pairwise', 'single_label'"
    assert f"key 'task.type': got 'ranking', {expected}" in str(caught.value)
    # the descriptions (and so the generated docs) name every built-in choice
    described = TaskConfig.model_fields["type"].description or ""
    assert all(name in described for name in TASK_TYPES.names())
    methods = AggregationConfig.model_fields["method"].description or ""
    assert "median" in methods and "majority_vote" in methods
    explicit = parse_config(config(task={"type": "ordinal"}, aggregation={"method": "majority_vote"}))
    assert explicit.aggregation.method == "majority_vote"
    with pytest.raises(ConfigError, match="fuse_model needs method: dawid_skene"):
        parse_config(config(aggregation={"fuse_model": True}))


# -- a small ordinal project, every stage ----------------------------------------------------


def ordinal_project(folder: Path, **sections: Any) -> Project:
    folder.mkdir(parents=True)
    (folder / PROJECT_FILE).write_text(yaml.safe_dump(config(task={"type": "ordinal"}, **sections)))
    return Project.open(folder)


def test_gold_labels_on_import_are_checked_by_the_task_type(tmp_path: Path):
    with ordinal_project(tmp_path / "p") as project:
        bad = tmp_path / "bad.csv"
        bad.write_text("id,text,gold\na,one,low\nb,two,medium\nc,three,\n", encoding="utf-8")
        with pytest.raises(DataError) as caught:
            project.import_file(bad, role="golden", gold_column="gold")
        text = str(caught.value)
        assert f"{bad}, row 3, column 'gold': got 'medium', expected one of 'low', 'mid', 'high'" in text
        assert f"{bad}, row 4, column 'gold': got an empty gold label, expected one of 'low', 'mid'" in text
        assert project.status().items == 0  # a bad row imports nothing


def feed(project: Project, answers: list[tuple[str, str, str]], *, overlap: int) -> None:
    """Route every item to people with ``overlap`` and record ``answers`` (task, worker, label)."""
    with project.store.write() as session:
        run = Run(kind="route")
        session.add(run)
        session.flush()
        for item in sorted({task for task, _, _ in answers}):
            session.add(
                Route(item_id=item, decision="humans", overlap=overlap, policy_version="p", run_id=run.id)
            )
    feed_answers(project, answers)


def feed_answers(project: Project, answers: list[tuple[str, str, str]]) -> None:
    """Record ``answers`` (task, worker, label) as active people's answers, the way the web app does."""
    with project.store.write() as session:
        people = {}
        for name in sorted({worker for _, worker, _ in answers}):
            person = Annotator(name=name, password_hash="-", status="active")
            session.add(person)
            session.flush()
            people[name] = person.id
        for task, worker, label in answers:
            session.add(Annotation(item_id=task, annotator_id=people[worker], label=label))


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_ordinal_project_aggregates_by_median_and_exports_the_rank(tmp_path: Path, fmt: str):
    with ordinal_project(tmp_path / "p") as project:
        project.add_items(pd.DataFrame({"id": list("abc"), "text": ["one", "two", "three"]}))
        feed(
            project,
            [
                ("a", "w1", "low"), ("a", "w2", "high"), ("a", "w3", "high"),  # median high
                ("b", "w1", "low"), ("b", "w2", "low"), ("b", "w3", "high"),  # median low
                ("c", "w1", "low"), ("c", "w2", "mid"), ("c", "w3", "high"),  # majority: a tie
            ],
            overlap=3,
        )  # fmt: skip
        result = project.aggregate()
        assert result.finalized == 3
        with project.store.read() as session:
            finals = {f.item_id: f.label for f in session.scalars(select(FinalLabel))}
            method = session.scalars(select(Run.config).where(Run.kind == "aggregate")).one()["method"]
        assert method == "median" and finals == {"a": "high", "b": "low", "c": "mid"}
        out = tmp_path / f"labels.{fmt}"
        assert project.export(out) == 3
        if fmt == "csv":
            with out.open(encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
            assert list(rows[0])[:4] == ["id", "text", "label", "rank"]
            ranks = {r["id"]: int(r["rank"]) for r in rows}
        elif fmt == "jsonl":
            rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
            ranks = {r["id"]: r["rank"] for r in rows}
        else:
            table = pq.read_table(out)
            assert str(table.schema.field("rank").type) == "int64"
            ranks = dict(zip(table["id"].to_pylist(), table["rank"].to_pylist(), strict=True))
        assert ranks == {"a": 2, "b": 0, "c": 1}


def test_single_label_export_has_no_extra_column(tmp_path: Path):
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / PROJECT_FILE).write_text(yaml.safe_dump(config()))
    with Project.open(folder) as project:
        project.add_items(pd.DataFrame({"id": ["a"], "text": ["one"]}))
        feed(project, [("a", "w1", "low"), ("a", "w2", "high"), ("a", "w3", "high")], overlap=3)
        project.aggregate()
        with project.store.read() as session:
            assert session.scalars(select(Run.config).where(Run.kind == "aggregate")).one()["method"] == (
                "majority_vote"
            )
        project.export(tmp_path / "out.csv")
        header = (tmp_path / "out.csv").read_text(encoding="utf-8").splitlines()[0]
        # No task-type column (ordinal's rank) between label and source; the distribution's
        # p_<label> columns close the row for every task type.
        assert header == (
            "id,text,label,source,confidence,human_votes,annotators,model_label,model_probability,gold_label,batch,"
            "p_low,p_mid,p_high"
        )


# -- the web widget ----------------------------------------------------------------------------

# label.html's buttons before task types: the single_label widget must render exactly these.
OLD_BUTTONS = """  <div class="labels">
    {% for label in labels %}
    <button type="submit" name="label" value="{{ label.name }}"{% if label.key %} data-key="{{ label.key }}"{% endif %}>
      {% if label.key %}<kbd>{{ label.key }}</kbd>{% endif %}
      <span class="name">{{ label.name }}</span>
      {% if label.description %}<span class="description">{{ label.description }}</span>{% endif %}
    </button>
    {% endfor %}
  </div>
"""  # noqa: E501 (the template's line as it was)


def test_single_label_page_renders_the_same_buttons_as_before(tmp_path: Path):
    project = make_project(tmp_path / "p")
    add_routed_items(project, 1, overlap=1)
    add_annotator(project.store, "alice", PASSWORD)
    person = Person(create_app(project))
    try:
        person.login("alice")
        html = person.get("/label").text
        expected = jinja2.Environment(autoescape=True).from_string(OLD_BUTTONS)
        buttons = expected.render(labels=actions.label_buttons(project))
        form = html[html.index('<form id="answer"') : html.index("</form>", html.index('<form id="answer"'))]
        # the buttons are rendered as they were (Jinja drops a template's last newline); only the
        # unsure/comment note (issue 15 item 6) follows them in the form now
        widget_end = form.index(buttons + "\n") + len(buttons) + 1
        assert form[widget_end:].lstrip().startswith('<div class="note">')
        assert 'class="labels scale"' not in html
    finally:
        person.close()
        project.close()


def test_ordinal_page_shows_a_scale_with_the_same_keys_and_fields(tmp_path: Path):
    project = make_project(tmp_path / "p", task={"type": "ordinal"})
    add_routed_items(project, 2, overlap=1)
    add_annotator(project.store, "alice", PASSWORD)
    person = Person(create_app(project))
    try:
        person.login("alice")
        html = person.get("/label").text
        assert (
            'class="labels scale"' in html and 'aria-label="Scale from billing (low) to other (high)"' in html
        )
        values = re.findall(r'name="label" value="([^"]+)" data-key="(\d)"', html)
        assert values == [(label, str(key)) for key, label in enumerate(LABELS, start=1)]  # low to high
        assert html.index('<span class="name">billing</span>') < html.index('<span class="name">other</span>')
        assert 'name="assignment_id"' in html and 'name="seconds"' in html and csrf(html) == person.token
        bad = person.post("/answer", assignment_id=assignment_id(html), label="postal", seconds="1")
        assert bad.status_code == 400 and "label &#39;postal&#39; is not one of" in bad.text
        ok = person.post("/answer", assignment_id=assignment_id(html), label="shipping", seconds="1")
        assert ok.status_code == 303
        api = person.api("GET", "/task").json()["task"]
        answered = person.api("POST", "/answer", {"assignment_id": api["assignment_id"], "label": "other"})
        assert answered.status_code == 200
        with project.store.read() as session:
            assert sorted(session.scalars(select(Annotation.label))) == ["other", "shipping"]
    finally:
        person.close()
        project.close()


def test_people_functions_refuse_what_the_task_type_refuses(tmp_path: Path):
    from duolabel.people.assignments import check_answer

    assert check_answer("mid", SCALE, 1.0, Ordinal()) == "mid"
    assert check_answer("mid", SCALE, None) == "mid"  # single_label when no type is given
    with pytest.raises(ProjectError, match="label 'medium' is not one of 'low', 'mid', 'high'"):
        check_answer("medium", SCALE, 1.0, Ordinal())


# -- the real PolitiFact crowd, end to end ---------------------------------------------------------


@pytest.mark.slow
def test_politifact_as_an_ordinal_project(tmp_path: Path):
    data = shared_data("politifact_truth")
    scale = json.loads((data / "labels.json").read_text(encoding="utf-8"))["labels"]
    items = [json.loads(line) for line in (data / "items.jsonl").read_text(encoding="utf-8").splitlines()]
    rng = random.Random(0)
    rng.shuffle(items)
    golden: list[dict[str, Any]] = []
    for label in scale:  # 8 per label train and calibrate the model; the controls are golden too
        golden += [r for r in items if r["gold"] == label and not r["control"]][:8]
    golden += [r for r in items if r["control"]]
    regular = [r for r in items if r not in golden]
    folder = tmp_path / "politifact"
    folder.mkdir()
    for name, part in (("golden.jsonl", golden), ("items.jsonl", regular)):
        with (folder / name).open("w", encoding="utf-8") as handle:
            for r in part:
                handle.write(json.dumps({"id": r["id"], "text": r["text"], "gold": r["gold"]}) + "\n")
    settings = {
        "task": {"type": "ordinal", "labels": [{"name": n} for n in scale]},
        "data": [
            {"path": "golden.jsonl", "role": "golden", "gold_column": "gold"},
            {"path": "items.jsonl", "gold_column": "gold"},
        ],
        # every item to people, 9 answers each (the fewest any item has in the crowd data)
        "routing": {"policy": "threshold", "mode": "fixed", "threshold": 1.0, "overlap": 9},
    }
    (folder / PROJECT_FILE).write_text(yaml.safe_dump(settings), encoding="utf-8")
    crowd = [
        json.loads(line) for line in (data / "annotations.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    with Project.open(folder) as project:
        project.import_data()
        project.label()
        project.calibrate()
        project.route()
        with project.store.read() as session:
            routed = set(session.scalars(select(Route.item_id).where(Route.decision == "humans")))
        assert routed == {r["id"] for r in regular}
        answers = [(a["item_id"], a["annotator"], a["label"]) for a in crowd if a["item_id"] in routed]
        feed_answers(project, answers)
        result = project.aggregate()
        assert (result.finalized, result.waiting) == (len(routed), 0)

        # each final label is a median of the item's answers on the scale
        frame = pd.DataFrame(answers, columns=["task", "worker", "label"])
        rank = {label: i for i, label in enumerate(scale)}
        with project.store.read() as session:
            people = select(FinalLabel).where(FinalLabel.source == "humans")
            finals = {f.item_id: f.label for f in session.scalars(people)}
            shipped = len(session.scalars(select(FinalLabel)).all())  # golden items keep their gold
            method = session.scalars(select(Run.config).where(Run.kind == "aggregate")).one()["method"]
        assert method == "median" and set(finals) == routed
        for item, group in frame.groupby("task"):
            ranks = sorted(rank[label] for label in group["label"])
            n = len(ranks)
            assert ranks[(n - 1) // 2] <= rank[finals[item]] <= ranks[n // 2], item

        out = folder / "labels.csv"
        assert project.export(out) == shipped
        with out.open(encoding="utf-8") as handle:
            exported = list(csv.DictReader(handle))
        assert all(int(row["rank"]) == scale.index(row["label"]) for row in exported)
        assert {row["id"] for row in exported} >= routed

        table = dashboard_table(project, "agreement")
        figures = dict(zip(table["figure"], table["value"], strict=True))
        expected = krippendorff_alpha(frame, scale, level="ordinal")
        assert figures["Krippendorff's alpha (ordinal)"] == pytest.approx(expected, abs=1e-4)
        assert "Krippendorff's alpha (nominal)" not in figures
        # a crowd on a 6-level truth scale agrees little, but more than by label identity alone
        assert expected > krippendorff_alpha(frame, scale, level="nominal")
