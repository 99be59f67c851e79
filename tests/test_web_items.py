"""The admin item browser (issue 15 item 7): the filter queries on SQLite and PostgreSQL, one
item's detail and history, correcting a final label through the expert-answer path, the
"aggregate now" and "draw an audit" buttons, and the inline SVG charts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import select

from duolabel.errors import ProjectError
from duolabel.people.accounts import add_annotator
from duolabel.people.assignments import Note
from duolabel.project import Project
from duolabel.store import Annotation, Annotator, ExpertTask, FinalLabel
from duolabel.web import create_app
from duolabel.web.charts import charts
from duolabel.web.items import ItemFilter, correct_label, find_items, item_detail
from tests.test_web import Person, assignment_id, csrf
from tests.web_fixtures import PASSWORD, add_gold_items
from tests.webui_fixtures import fielded_project


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("DUOLABEL_SECRET", raising=False)
    return tmp_path / "proj"


def answer_all(project: Project, names: list[str], labels: dict[str, list[str]]) -> None:
    """Each of ``names`` answers every routed item they are given, ``labels[item][i]`` for the i-th name."""
    app = create_app(project)
    for i, name in enumerate(names):
        person = Person(app)
        assert person.login(name).status_code == 303
        while "Nothing to do" not in (html := person.get("/label").text):
            item = re.search(r'<div class="text">Case (\w+)</div>', html).group(1)
            item_id = {"two": "r2", "three": "r3"}[item]
            person.post("/answer", assignment_id=assignment_id(html), label=labels[item_id][i])


def ids(project: Project, **filters: object) -> list[str]:
    return [row["id"] for row in find_items(project, ItemFilter(**filters)).rows]  # type: ignore[arg-type]


@pytest.fixture
def answered(folder: Path, database_url: str | None) -> Project:
    """r2 answered alike by two people, r3 split; r1 accepted, r4 sent to an expert."""
    project = fielded_project(folder, database_url=database_url, overlap=2)
    add_annotator(project.store, "bob", PASSWORD)
    answer_all(project, ["alice", "bob"], {"r2": ["shipping", "shipping"], "r3": ["billing", "other"]})
    project.aggregate()
    return project


def test_filters_on_sqlite_and_postgresql(answered: Project) -> None:
    project = answered
    assert ids(project) == ["r1", "r2", "r3", "r4"]
    assert ids(project, text="IBUPROFEN") == ["r2"]  # case-insensitive, in the text
    assert ids(project, text="r3") == ["r3"]  # or the id
    assert ids(project, text="100%") == [] and ids(project, text="_") == []  # LIKE wildcards are text
    assert ids(project, route="humans") == ["r2", "r3"]
    assert ids(project, route="expert") == ["r4"] and ids(project, route="unrouted") == []
    assert ids(project, min_confidence=0.5, max_confidence=0.95) == ["r1", "r2"]
    assert ids(project, batch="medrel") == ["r1", "r2", "r3", "r4"] and ids(project, batch="other") == []
    assert ids(project, agreement="unanimous") == ["r2"]
    assert ids(project, agreement="split") == ["r3"]
    assert ids(project, agreement="none") == ["r1", "r4"]
    final = {row["id"]: row["label"] for row in find_items(project, ItemFilter()).rows}
    assert final["r2"] == "shipping"
    assert ids(project, label="shipping") == ["r2"]
    assert ids(project, source="humans") == ["r2", "r3"]  # the split one too: a vote decides
    assert ids(project, source="expert") == [] and ids(project, source="model") == []
    assert ids(project, route="humans", agreement="split", text="nausea") == ["r3"]
    row = find_items(project, ItemFilter(text="r2")).rows[0]
    assert row["model"] == {"label": "shipping", "confidence": 0.55} and row["answers"] == 2
    page = find_items(project, ItemFilter(page=2), per_page=3)
    assert (page.total, page.pages, page.page, [r["id"] for r in page.rows]) == (4, 2, 2, ["r4"])
    assert find_items(project, ItemFilter(page=9), per_page=3).page == 2  # past the end: the last page
    project.close()


def test_bad_filters_are_named() -> None:
    with pytest.raises(ProjectError, match="min_confidence must be a number between 0 and 1, got 'high'"):
        ItemFilter.of({"min_confidence": "high"})
    with pytest.raises(ProjectError, match="agreement must be one of none, single, unanimous, split"):
        ItemFilter.of({"agreement": "most"})
    with pytest.raises(ProjectError, match="page must be a whole number"):
        ItemFilter.of({"page": "-1"})


def test_known_labels_are_never_shown_matched_or_corrected(folder: Path) -> None:
    project = fielded_project(folder)
    add_gold_items(project, 2, role="control")
    with project.store.write() as session:
        session.add(FinalLabel.from_expert("gold-000", "billing"))
    assert ids(project, role="control") == ["gold-000", "gold-001"]
    row = find_items(project, ItemFilter(text="gold-000")).rows[0]
    assert row["label"] is None and row["source"] is None
    assert ids(project, label="billing") == []  # the filter does not give the key away
    detail = item_detail(project, "gold-000")
    assert detail["final"] is None and detail["known"] and "billing" not in str(detail["history"])
    with project.store.read() as session:
        admin = session.scalar(select(Annotator.id).where(Annotator.name == "ada"))
    with pytest.raises(ProjectError, match="is a control item: its label is the known one"):
        correct_label(project, admin, "gold-000", "other")
    project.close()


def test_correcting_a_label_is_an_expert_answer_and_the_final_label_follows(
    folder: Path, database_url: str | None
) -> None:
    project = fielded_project(folder, database_url=database_url)
    with project.store.read() as session:
        ada = session.scalar(select(Annotator.id).where(Annotator.name == "ada"))
    with pytest.raises(ProjectError, match="label 'nonsense' is not"):
        correct_label(project, ada, "r1", "nonsense")
    with project.store.read() as session:  # a refused label wrote nothing
        assert session.scalar(select(ExpertTask.id)) is None
    final = correct_label(project, ada, "r1", "other", Note.of(comment="the model missed it"))
    assert final == {"label": "other", "source": "expert"}
    with project.store.read() as session:
        row = session.execute(select(Annotation.label, Annotation.kind, Annotation.comment)).one()
        task = session.execute(select(ExpertTask.reason, ExpertTask.state)).one()
        stored = session.get(FinalLabel, "r1")
        assert stored is not None and stored.annotators == ["ada"]
    assert tuple(row) == ("other", "expert", "the model missed it") and tuple(task) == ("escalated", "done")
    with pytest.raises(ProjectError, match="you already answered item 'r1' \\(other\\); another admin"):
        correct_label(project, ada, "r1", "billing")
    history = [event["event"] for event in item_detail(project, "r1")["history"]]
    assert history[0] == "imported into batch 'medrel' as regular"
    assert "expert answer by ada: other" in history and history[-1] == "final label other (expert)"
    project.close()


def test_browser_pages_buttons_and_charts(folder: Path) -> None:
    project = fielded_project(folder, overlap=2)
    add_annotator(project.store, "bob", PASSWORD)
    answer_all(project, ["alice", "bob"], {"r2": ["shipping", "billing"], "r3": ["other", "other"]})
    ada = Person(create_app(project))
    ada.login("ada")
    page = ada.get("/admin/items?route=humans&text=case").text
    assert "2 items found" in page and "<svg" in page and "Answers per annotator" in page
    assert 'href="/admin/item?id=r2"' in page and 'href="/admin/item?id=r1"' not in page
    bad = ada.get("/admin/items?min_confidence=lots")
    assert bad.status_code == 400 and "min_confidence must be a number" in bad.text
    item = ada.get("/admin/item?id=r3").text
    assert "Ibuprofen" not in item and "Paracetamol" in item and "No final label yet." in item
    token = csrf(item)
    done = ada.client.post("/admin/aggregate", data={"csrf_token": token})
    message = re.search(r'id="message">([^<]+)<', done.text).group(1)
    assert done.status_code == 200 and message.startswith("Aggregated: 2 items finalized from 4 answers"), (
        message
    )
    assert "other" in re.search(r"id=r3.*?</tr>", done.text, re.S).group(0)  # r3's final label is listed
    corrected = ada.client.post(
        "/admin/item/label",
        data={"csrf_token": token, "item_id": "r2", "label": "billing", "comment": "<i>x</i>"},
    )
    assert "The final label is now billing (expert)" in corrected.text
    assert "&lt;i&gt;x&lt;/i&gt;" in corrected.text and "<i>x</i>" not in corrected.text
    again = ada.client.post(
        "/admin/item/label", data={"csrf_token": token, "item_id": "r2", "label": "other"}
    )
    assert again.status_code == 200 and "you already answered item" in again.text
    audit = ada.client.post("/admin/audit", data={"csrf_token": token})
    assert re.search(r"Audit drawn: \d+ shipped labels put in the experts&#39; queue", audit.text)
    titles = [chart.title for chart in charts(project)]
    assert titles == ["Answers over time (cumulative)", "Answers per annotator", "Accuracy on controls"]
    answers, per_person, controls = charts(project)
    assert [(bar.caption, bar.value) for bar in per_person.bars] == [
        ("alice", "2"),
        ("bob", "2"),
        ("ada", "1"),
    ]
    assert controls.empty and answers.axis["top"] == "5"  # 4 answers and the correction
    project.close()


def test_the_controls_chart_shows_each_annotators_accuracy(folder: Path) -> None:
    project = fielded_project(folder)
    golds = add_gold_items(project, 4, role="control")  # gold labels: billing, shipping, other, billing
    with project.store.write() as session:
        alice = session.scalar(select(Annotator.id).where(Annotator.name == "alice"))
        for item_id, label in zip(golds, ["billing", "shipping", "billing", "other"], strict=True):
            session.add(Annotation(item_id=item_id, annotator_id=alice, label=label, kind="control"))
    chart = charts(project)[2]
    assert [(bar.caption, bar.value) for bar in chart.bars] == [("alice", "0.50")]
    assert chart.axis["top"] == "1.00" and chart.bars[0].height == pytest.approx((170 - 14 - 34) / 2, abs=0.1)
    project.close()


def test_the_label_filter_looks_inside_multi_label_answers(folder: Path) -> None:
    from tests.web_fixtures import add_routed_items, make_project

    project = make_project(folder, task={"type": "multi_label"})
    add_routed_items(project, 3, overlap=1)
    with project.store.write() as session:
        for item_id, labels in (("item-000", '["billing", "other"]'), ("item-001", '["shipping"]')):
            session.add(FinalLabel(item_id=item_id, label=labels, source="humans", confidence=1.0))
    assert ids(project, label="other") == ["item-000"]
    assert ids(project, label="shipping") == ["item-001"]
    assert ids(project, label="ship") == []  # a whole label, not a part of one
    project.close()
