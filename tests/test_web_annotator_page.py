"""The annotator's and expert's page (issue 15 item 6): text fields in blocks, marked terms,
"n left", an "unsure / comment" note stored with the answer and exported, experts seeing the
model's label and skipping."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import select

from duolabel.errors import ConfigError
from duolabel.people.assignments import Note
from duolabel.people.experts import enqueue_expert
from duolabel.project import Project
from duolabel.store import Annotation, Assignment
from duolabel.web import create_app
from duolabel.web.itemview import mark_terms
from tests.test_web import Person, assignment_id
from tests.web_fixtures import make_project
from tests.webui_fixtures import fielded_project, item_of


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("DUOLABEL_SECRET", raising=False)
    return tmp_path / "proj"


def logged_in(project: Project, name: str) -> Person:
    person = Person(create_app(project))
    assert person.login(name).status_code == 303
    return person


def test_import_keeps_each_text_field_and_the_page_shows_them_in_blocks(folder: Path) -> None:
    project = fielded_project(folder)
    item = item_of(project, "r2")
    assert item.text == "Case two\n\nIbuprofen helped; no hives at all."  # as before: joined
    assert item.text_parts == {"title": "Case two", "body": "Ibuprofen helped; no hives at all."}
    alice = logged_in(project, "alice")
    html = alice.get("/label").text
    fields = re.findall(
        r'<section class="field" data-field="(\w+)">\s*<h2 class="field-name">(\w+)</h2>', html
    )
    assert fields == [("title", "title"), ("body", "body")]
    assert '<div class="text">Case two</div>' in html
    assert '<div class="text"><mark>Ibuprofen</mark> helped; no <mark>hives</mark> at all.</div>' in html
    task = alice.api("GET", "/task").json()["task"]
    assert task["blocks"] == [
        {"field": "title", "text": "Case two"},
        {"field": "body", "text": item.text_parts["body"]},
    ]
    assert task["highlight"] == ["ibuprofen", "hives"]
    project.close()


def test_one_text_field_is_one_block_without_a_heading(folder: Path) -> None:
    project = make_project(folder)
    path = folder / "items.csv"
    path.write_text("id,text\na1,My parcel never came\n", encoding="utf-8")
    project.import_file(path)
    assert item_of(project, "a1").text_parts is None  # nothing new stored for one field
    project.close()


def test_mark_terms_takes_the_longest_term_and_ignores_case() -> None:
    assert mark_terms("Acetylsalicylic acid, acid.", ["acid", "acetylsalicylic acid"]) == [
        ("Acetylsalicylic acid", True),
        (", ", False),
        ("acid", True),
        (".", False),
    ]
    assert mark_terms("a.b", [".*"]) == [("a.b", False)]  # a term is text, not a pattern


def test_highlight_may_not_name_the_text_or_the_id(folder: Path) -> None:
    with pytest.raises(ConfigError, match="task.highlight names 'body'"):
        make_project(folder, task={"text_fields": ["title", "body"], "highlight": ["body"]})


def test_items_left_is_the_same_on_regular_and_control_pages(folder: Path) -> None:
    """Two routed items; alice sees "2 left" on the first regular page, and after answering it
    "1 left"; test_web.test_controls_look_like_any_other_task checks a control page counts alike."""
    project = fielded_project(folder)
    alice = logged_in(project, "alice")
    left = []
    for _ in range(2):
        html = alice.get("/label").text
        left.append(re.search(r'id="left"><strong>(\d+)</strong> left in this batch', html).group(1))
        alice.post("/answer", assignment_id=assignment_id(html), label="billing")
    assert left == ["2", "1"]
    assert alice.api("GET", "/me").json()["left"] == 0
    project.close()


def test_unsure_and_comment_are_stored_with_the_answer_and_exported(
    folder: Path, database_url: str | None
) -> None:
    project = fielded_project(folder, database_url=database_url)
    alice = logged_in(project, "alice")
    html = alice.get("/label").text
    assert 'name="unsure"' in html and 'name="comment"' in html
    form = {
        "assignment_id": assignment_id(html),
        "label": "other",
        "unsure": "1",
        "comment": "  two readings  ",
    }
    assert alice.post("/answer", **form).status_code == 303
    html = alice.get("/label").text
    alice.post("/answer", assignment_id=assignment_id(html), label="billing")  # no note
    with project.store.read() as session:
        rows = session.execute(select(Annotation.item_id, Annotation.unsure, Annotation.comment)).all()
    assert sorted(rows) == [("r2", True, "two readings"), ("r3", None, None)]
    answers = project.to_pandas("answers").set_index("item")
    assert answers.loc["r2", "comment"] == "two readings" and bool(answers.loc["r2", "unsure"]) is True
    assert pd.isna(answers.loc["r3", "comment"]) and pd.isna(answers.loc["r3", "unsure"])
    project.close()


def test_a_comment_over_the_limit_is_refused_with_its_length(folder: Path) -> None:
    with pytest.raises(Exception, match="comment is 2,001 characters long; keep it to 2,000"):
        Note.of(comment="x" * 2001)
    project = fielded_project(folder)
    alice = logged_in(project, "alice")
    html = alice.get("/label").text
    response = alice.post("/answer", assignment_id=assignment_id(html), label="other", comment="x" * 2001)
    assert response.status_code == 400 and "keep it to 2,000" in response.text
    project.close()


def test_the_api_takes_a_note_too(folder: Path) -> None:
    project = fielded_project(folder)
    alice = logged_in(project, "alice")
    task = alice.api("GET", "/task").json()["task"]
    body = {"assignment_id": task["assignment_id"], "label": "other", "unsure": True, "comment": "hmm"}
    assert alice.api("POST", "/answer", body).status_code == 200
    with project.store.read() as session:
        assert session.execute(select(Annotation.unsure, Annotation.comment)).one() == (True, "hmm")
    project.close()


def test_experts_see_the_model_label_add_a_note_and_can_skip(folder: Path) -> None:
    project = fielded_project(folder)
    with project.store.write() as session:
        enqueue_expert(session, ["r4", "r1"], "escalated")
    erin = logged_in(project, "erin")
    page = erin.get("/expert/next?reason=escalated").text
    assert "item r4" in page and 'id="model-label"' in page
    assert "The model's label: <strong>billing</strong> (confidence 0.97)" in page
    assert erin.post("/expert/skip", assignment_id=assignment_id(page)).status_code == 303
    page = erin.get("/expert/next?reason=escalated").text  # r4 is not offered to her again
    assert "item r1" in page and "(confidence 0.91)" in page
    form = {
        "assignment_id": assignment_id(page),
        "label": "shipping",
        "unsure": "on",
        "comment": "model wrong",
    }
    assert erin.post("/expert/answer", **form).status_code == 303
    assert erin.get("/expert/next?reason=escalated").url.path == "/expert"  # nothing else for her
    with project.store.read() as session:
        notes = session.execute(
            select(Annotation.item_id, Annotation.kind, Annotation.unsure, Annotation.comment)
        ).all()
        states = dict(session.execute(select(Assignment.item_id, Assignment.state)).all())
    assert notes == [("r1", "expert", True, "model wrong")]
    assert states == {"r4": "skipped", "r1": "done"}
    api = erin.api("POST", "/expert/skip", {"assignment_id": 999})
    assert api.status_code == 400 and "not one of yours" in api.json()["error"]["message"]
    project.close()
