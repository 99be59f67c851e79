"""The web app through FastAPI's TestClient: labeling, controls, exam, experts, admins, API."""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from duolabel.errors import ProjectError
from duolabel.people.accounts import add_annotator, create_invitation
from duolabel.people.experts import enqueue_expert
from duolabel.project import Project
from duolabel.store import (
    Annotation,
    Annotator,
    Assignment,
    ExpertTask,
    FinalLabel,
    Item,
    Prediction,
    Route,
    Run,
    Store,
)
from duolabel.web import create_app
from duolabel.web.app import SECRET_FILE, session_secret
from tests.web_fixtures import LABELS, PASSWORD, add_gold_items, add_routed_items, gold_of, make_project

GOLD = "gold-label-that-must-stay-hidden"


def csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def assignment_id(html: str) -> str:
    found = re.search(r'name="assignment_id" value="(\d+)"', html)
    assert found, "no assignment in the page"
    return found.group(1)


class Person:
    """One browser: a TestClient with its own cookies."""

    def __init__(self, app: Any) -> None:
        self.client = TestClient(app, follow_redirects=False)
        self.token = ""

    def login(self, name: str, password: str = PASSWORD) -> Any:
        self.token = csrf(self.client.get("/login").text)
        response = self.client.post(
            "/login", data={"name": name, "password": password, "csrf_token": self.token}
        )
        if response.status_code == 303:
            self.token = csrf(self.get("/help").text)
        return response

    def get(self, path: str) -> Any:
        return self.client.get(path, follow_redirects=True)

    def shown(self, text: str) -> str:
        """`text` without this session's random CSRF token, which may by chance contain any short string."""
        return text.replace(self.token, "")

    def post(self, path: str, **data: Any) -> Any:
        return self.client.post(path, data={"csrf_token": self.token, **data})

    def answer(self, label: str, seconds: str = "2.5") -> Any:
        page = self.get("/label").text
        return self.post("/answer", assignment_id=assignment_id(page), label=label, seconds=seconds)

    def api(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"x-csrf-token": self.token}
        return self.client.request(method, "/api/v1" + path, json=body, headers=headers)

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("DUOLABEL_SECRET", raising=False)
    return tmp_path / "proj"


@pytest.fixture
def project(folder: Path) -> Iterator[Project]:
    project = make_project(folder)
    add_routed_items(project, 3, overlap=1, gold=GOLD)
    add_annotator(project.store, "alice", PASSWORD)
    add_annotator(project.store, "bob", PASSWORD)
    try:
        yield project
    finally:
        project.close()


@pytest.fixture
def alice(project: Project) -> Iterator[Person]:
    person = Person(create_app(project))
    assert person.login("alice").status_code == 303
    yield person
    person.close()


def annotations(project: Project) -> list[tuple[Any, ...]]:
    with project.store.read() as session:
        rows = session.execute(
            select(Annotation.item_id, Annotator.name, Annotation.label, Annotation.seconds, Annotation.kind)
            .join(Annotator, Annotator.id == Annotation.annotator_id)
            .order_by(Annotation.id)
        ).all()
    return [tuple(row) for row in rows]


# -- labeling --------------------------------------------------------------------------


def test_an_answer_is_stored_and_the_next_item_shown(alice: Person, project: Project) -> None:
    html = alice.get("/").text
    assert "text of item-000" in html and '<span id="answers">0</span> answers' in html
    assert "item-000" not in html.replace("text of item-000", "")  # no item id on the page
    for shortcut, label in enumerate(LABELS, start=1):
        assert f'data-key="{shortcut}"' in html and f'value="{label}"' in html
    assert "Choose the label that best describes the text." in html and "The item is shipping." in html
    assert 'data-key="s"' in html and 'data-key="u"' in html and 'href="/help"' in html
    form = {"assignment_id": assignment_id(html), "label": "shipping", "seconds": "3.25"}
    response = alice.post("/answer", **form)
    assert response.status_code == 303 and response.headers["location"] == "/label"
    ((item, name, label, seconds, kind),) = annotations(project)
    assert (item, name, label, kind) == ("item-000", "alice", "shipping", "regular")
    assert seconds != 3.25 and 0 <= seconds < 30  # timed by the server, not the page's field
    html = alice.get("/label").text
    assert "text of item-001" in html and '<span id="answers">1</span> answer ' in html
    assert 'earned <span id="earnings">0.05 USD</span>' in html
    again = alice.post("/answer", **form)  # the same form again: one line, nothing written
    assert again.status_code == 400
    assert "was already answered" in again.text and "Traceback" not in again.text
    assert len(annotations(project)) == 1


def test_bad_answers_are_one_line_errors(alice: Person, project: Project) -> None:
    assignment = assignment_id(alice.get("/label").text)
    cases = [
        ({"assignment_id": assignment, "label": "postal"}, "label &#39;postal&#39; is not one of"),
        ({"assignment_id": "x", "label": "billing"}, "assignment_id must be a number"),
        ({"assignment_id": "999999", "label": "billing"}, "assignment 999999 is not one of yours"),
    ]
    for form, message in cases:
        response = alice.post("/answer", seconds="1", **form)
        assert response.status_code == 400
        assert message in response.text and "Traceback" not in response.text
    assert annotations(project) == []


def test_nobody_can_open_or_answer_another_annotators_task(project: Project, alice: Person) -> None:
    bob = Person(alice.client.app)
    bob.login("bob")
    alices = assignment_id(alice.get("/label").text)
    bob.get("/label")
    opened = bob.client.get(f"/task/{alices}")
    assert opened.status_code == 404 and f"task {alices} is not one of yours" in opened.text
    assert "text of item-000" not in opened.text
    assert bob.api("GET", f"/task/{alices}").status_code == 404
    response = bob.post("/answer", assignment_id=alices, label="billing")
    assert response.status_code == 400 and f"assignment {alices} is not one of yours" in response.text
    assert bob.post("/skip", assignment_id=alices).status_code == 400
    assert annotations(project) == []
    with project.store.read() as session:
        assert session.get(Assignment, int(alices)).state == "leased"


def test_skip_gives_the_item_back_and_never_again(alice: Person, project: Project) -> None:
    first = assignment_id(alice.get("/label").text)
    assert alice.post("/skip", assignment_id=first).status_code == 303
    html = alice.get("/label").text
    assert "text of item-001" in html
    bob = Person(alice.client.app)
    bob.login("bob")
    assert "text of item-000" in bob.get("/label").text  # the slot went back to the pool


def test_undo_within_the_window_only(folder: Path) -> None:
    project = make_project(folder, quality={"undo_seconds": 30})
    add_routed_items(project, 3, overlap=1)
    add_annotator(project.store, "alice", PASSWORD)
    alice = Person(create_app(project))
    alice.login("alice")
    alice.answer("billing")
    response = alice.post("/undo")
    assert response.status_code == 303
    html = alice.get(response.headers["location"]).text
    assert "text of item-000" in html and annotations(project) == []
    alice.post("/answer", assignment_id=assignment_id(html), label="other")
    assert [row[2] for row in annotations(project)] == ["other"]
    project.close()


def test_undo_after_the_window_is_refused(folder: Path) -> None:
    project = make_project(folder, quality={"undo_seconds": 0})
    add_routed_items(project, 2, overlap=1)
    add_annotator(project.store, "alice", PASSWORD)
    alice = Person(create_app(project))
    alice.login("alice")
    alice.answer("billing")
    response = alice.post("/undo")
    assert response.status_code == 400 and "answers can be undone for 0 s" in response.text
    assert len(annotations(project)) == 1
    project.close()


def test_nothing_to_do_page(alice: Person) -> None:
    for _ in range(3):
        alice.answer("other")
    html = alice.get("/label").text
    assert "Nothing to do right now" in html
    assert alice.api("GET", "/task").json() == {"task": None}


# -- controls and gold -----------------------------------------------------------------------


def control_project(folder: Path, **quality: Any) -> Project:
    project = make_project(folder, quality={"control_rate": 1.0, **quality})
    add_routed_items(project, 4, overlap=2)
    add_gold_items(project, 3)
    add_annotator(project.store, "alice", PASSWORD)
    return project


def test_controls_look_like_any_other_task(folder: Path) -> None:
    project = control_project(folder)
    alice = Person(create_app(project))
    alice.login("alice")
    pages, api_tasks = [], []
    for _ in range(5):
        html = alice.get("/label").text
        pages.append(html)
        task = alice.api("GET", "/task").json()["task"]
        api_tasks.append(task)
        alice.post("/answer", assignment_id=assignment_id(html), label="billing")
    kinds = [row[4] for row in annotations(project)]
    assert kinds == ["control"] * 3 + ["regular"] * 2  # rate 1: a control whenever one is left
    golds = set(gold_of(project, [f"gold-{i:03d}" for i in range(3)]).values())
    skeletons = set()
    # "n left" counts one down per task closed, control or regular (issue 12), and stays at
    # least 1 while a task is on screen: 4 open routed items less the controls she closed.
    left = [int(re.search(r'id="left"><strong>(\d+)</strong>', html).group(1)) for html in pages]
    assert left == [4, 3, 2, 1, 1]
    for html, task in zip(pages, api_tasks, strict=True):
        assert set(task) == {"assignment_id", "text", "blocks", "highlight", "lease_expires"}
        body = re.sub(r'id="item-text">[^<]*<', "", html)
        body = re.sub(r'value="\d+"|id="left"><strong>\d+<', "", body)
        skeletons.add(re.sub(r'"answers">\d+</span> answers?|"earnings">[^<]*<', "", body))
        assert "gold" not in alice.shown(html).replace("known text gold-", "").lower()
    assert len(skeletons) == 1  # control and regular pages differ only in the text
    assert golds <= set(LABELS)
    project.close()


def answer_shown(person: Person, project: Project, *, right: bool) -> None:
    """Answer the task on screen right or wrong, looking its gold label up in the store."""
    html = person.get("/label").text
    text = re.search(r'id="item-text">known text ([^<]+)<', html).group(1)
    gold = gold_of(project, [text])[text]
    label = gold if right else next(x for x in LABELS if x != gold)
    person.post("/answer", assignment_id=assignment_id(html), label=label)


def test_a_wrong_control_lowers_accuracy_and_suspends(folder: Path) -> None:
    project = control_project(folder, min_controls=2, min_control_accuracy=0.9, confidence_level=0.9)
    alice = Person(create_app(project))
    alice.login("alice")
    answer_shown(alice, project, right=True)
    with project.store.read() as session:
        skills = session.scalar(select(Annotator.skills).where(Annotator.name == "alice"))
    assert skills["controls"] == 1 and skills["control_correct"] == 1 and skills["accuracy"] == 1.0
    assert skills["low"] < 1.0 == skills["high"] and skills["interval"] == "wilson"
    answer_shown(alice, project, right=False)  # 1 of 2: the upper bound (0.88) < 0.9
    with project.store.read() as session:
        person = session.scalar(select(Annotator).where(Annotator.name == "alice"))
    assert person.skills["accuracy"] == 0.5 and 0.85 < person.skills["high"] < 0.9
    assert person.status == "suspended" and "suspended_because" in person.skills
    assert alice.get("/label").url.path == "/login"  # logged out at once
    assert len(annotations(project)) == 2  # answers kept
    project.close()


def test_model_suggestion_only_in_co_pilot_mode(folder: Path) -> None:
    for co_pilot in (False, True):
        project = make_project(folder / str(co_pilot), quality={"show_model_suggestion": co_pilot})
        (item_id,) = add_routed_items(project, 1, overlap=1)
        with project.store.write() as session:
            run_id = session.scalar(select(Run.id))
            session.add(
                Prediction(
                    item_id=item_id,
                    labeler="embedding",
                    model_version="v",
                    run_id=run_id,
                    probs={"shipping": 0.9},
                    label="shipping",
                    raw_confidence=0.9,
                )
            )
        add_annotator(project.store, "alice", PASSWORD)
        alice = Person(create_app(project))
        alice.login("alice")
        html = alice.get("/label").text
        assert ("The model suggests" in html) is co_pilot
        assert ("suggestion" in alice.api("GET", "/task").json()["task"]) is co_pilot
        project.close()


# -- the exam --------------------------------------------------------------------------------


def exam_project(folder: Path, **quality: Any) -> Project:
    project = make_project(folder, quality={"exam_size": 3, "pass_mark": 0.66, "exam_retries": 1, **quality})
    add_routed_items(project, 2, overlap=1)
    add_gold_items(project, 9)
    return project


def sign_up(project: Project, name: str = "carol") -> Person:
    person = Person(create_app(project))
    token = create_invitation(project.store, role="annotator")
    page = person.client.get(f"/invite/{token}")
    assert page.status_code == 200 and "Create your annotator account" in page.text
    response = person.client.post(
        f"/invite/{token}", data={"csrf_token": csrf(page.text), "name": name, "password": PASSWORD}
    )
    assert response.status_code == 303
    person.token = csrf(person.get("/help").text)
    return person


def take_exam(person: Person, project: Project, right: int) -> Any:
    for n in range(3):
        html = person.get("/exam").text
        assert "Onboarding exam" in html
        text = re.search(r'id="item-text">known text ([^<]+)<', html).group(1)
        gold = gold_of(project, [text])[text]
        label = gold if n < right else next(x for x in LABELS if x != gold)
        response = person.post("/exam/answer", assignment_id=assignment_id(html), label=label)
    return person.get(response.headers["location"])


def test_exam_fail_retry_pass(folder: Path) -> None:
    project = exam_project(folder)
    carol = sign_up(project)
    assert carol.get("/").url.path == "/exam"
    assert carol.client.get("/label").status_code == 403  # no work before the exam
    result = take_exam(carol, project, right=1)
    assert "1 of 3 right" in result.text and "Retry the exam" in result.text
    assert result.text.count('class="wrong"') == 2  # which answers were wrong, not the key
    assert carol.post("/exam/retry").status_code == 303
    result = take_exam(carol, project, right=3)
    assert "3 of 3 right" in result.text and "You passed" in result.text
    assert result.text.count('class="right"') == 3
    with project.store.read() as session:
        person = session.scalar(select(Annotator).where(Annotator.name == "carol"))
        assert person.status == "active" and person.exam_attempt == 2
        assert [e["correct"] for e in person.skills["exams"]] == [1, 3]
    assert "text of item-000" in carol.get("/label").text
    project.close()


def test_exam_failed_twice_declines(folder: Path) -> None:
    project = exam_project(folder, control_rate=1.0)
    carol = sign_up(project)
    take_exam(carol, project, right=0)
    carol.post("/exam/retry")
    result = take_exam(carol, project, right=1)
    assert "no retry is left: your account is declined" in result.text
    # the exam's items (gold-000..005) are never controls, and no control was shown
    assert "known text gold-0" in result.text and "gold-006" not in result.text
    assert carol.get("/label").url.path == "/login"
    again = Person(carol.client.app).login("carol")
    assert again.status_code == 403 and "your account is declined" in again.text
    project.close()


def test_exam_through_the_api(folder: Path) -> None:
    project = exam_project(folder)
    carol = sign_up(project)
    for _ in range(3):
        task = carol.api("GET", "/exam/task").json()["task"]
        item = task["text"].removeprefix("known text ")
        gold = gold_of(project, [item])[item]
        ok = carol.api("POST", "/exam/answer", {"assignment_id": task["assignment_id"], "label": gold})
        assert ok.status_code == 200
    result = carol.api("GET", "/exam/result").json()
    assert result["status"] == "active" and result["result"]["passed"] is True
    assert [r["right"] for r in result["result"]["review"]] == [True] * 3
    assert all(set(r) == {"text", "your_label", "right"} for r in result["result"]["review"])
    project.close()


def test_exam_without_items_is_a_clear_error(folder: Path) -> None:
    project = make_project(folder, quality={"exam_size": 3})
    carol = sign_up(project)
    response = carol.client.get("/exam")
    assert response.status_code == 400 and "the exam has no items" in response.text
    project.close()


# -- invitations ------------------------------------------------------------------------------


def test_invitations_are_one_time(project: Project) -> None:
    app = create_app(project)
    token = create_invitation(project.store, role="expert")
    first = Person(app)
    page = first.client.get(f"/invite/{token}")
    data = {"csrf_token": csrf(page.text), "name": "erin", "password": PASSWORD}
    short = first.client.post(f"/invite/{token}", data={**data, "password": "short"})
    assert short.status_code == 400 and "use at least 10" in short.text
    assert first.client.post(f"/invite/{token}", data=data).status_code == 303
    assert first.get("/").url.path == "/expert"  # experts start active, no exam
    second = Person(app)
    used = second.client.get(f"/invite/{token}")
    assert used.status_code == 404 and "unknown, used or expired" in used.text
    assert second.client.get("/invite/not-a-token").status_code == 404
    expired = create_invitation(project.store, hours=0.0001)
    import time

    time.sleep(0.5)
    assert second.client.get(f"/invite/{expired}").status_code == 404


def test_admin_invites_and_the_link_works(project: Project) -> None:
    add_annotator(project.store, "root", PASSWORD, role="admin")
    app = create_app(project)
    admin = Person(app)
    admin.login("root")
    html = admin.post("/admin/invite", role="annotator").text
    link = re.search(r'id="invitation-link" readonly value="([^"]+)"', html).group(1)
    path = link.split("testserver", 1)[1]
    newcomer = Person(app)
    page = newcomer.client.get(path)
    assert page.status_code == 200
    newcomer.client.post(path, data={"csrf_token": csrf(page.text), "name": "dan", "password": PASSWORD})
    assert "text of item-000" in newcomer.get("/").text  # no exam in this project: work at once
    via_api = admin.api("POST", "/admin/invitations", {"role": "expert"}).json()
    assert via_api["role"] == "expert" and "/invite/" in via_api["url"]


# -- admins and experts --------------------------------------------------------------------------


def test_admin_dashboard_tables_and_csv(project: Project, alice: Person) -> None:
    add_annotator(project.store, "root", PASSWORD, role="admin")
    alice.answer("billing")
    admin = Person(alice.client.app)
    admin.login("root")
    html = admin.get("/admin").text
    for title in (
        "Progress per stage",
        "Progress per batch",
        "Queue sizes",
        "Annotators",
        "Cost so far",
        "Agreement",
        "Model that labels",
    ):
        assert title in html
    assert 'hx-get="/admin/tables"' in html and "/static/htmx.min.js" in html
    assert admin.client.get("/static/htmx.min.js").status_code == 200
    csv = admin.client.get("/admin/annotators.csv")
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.splitlines()
    assert lines[0].startswith("name,role,status,answers,controls,control_accuracy")
    assert any(line.startswith("alice,annotator,active,1,") for line in lines)
    for name in ("progress", "batches", "queues", "costs", "agreement"):
        assert admin.client.get(f"/admin/{name}.csv").status_code == 200
    costs = admin.client.get("/admin/costs.csv").text
    assert "people (1 answers),0.06,USD" in costs  # 0.05 plus the 20% platform fee
    queues = admin.api("GET", "/admin/tables/queues").json()
    assert {"queue": "people: answers", "count": 1} in queues
    assert admin.client.get("/admin/nope.csv").status_code == 404
    add_annotator(project.store, "=HYPERLINK(1)", PASSWORD)
    assert "'=HYPERLINK(1),annotator" in admin.client.get("/admin/annotators.csv").text
    assert admin.post("/admin/status", name="alice", status="suspended").status_code == 303
    assert alice.get("/label").url.path == "/login"


def test_agreement_figures(folder: Path) -> None:
    project = make_project(folder)
    add_routed_items(project, 4, overlap=2)
    for name in ("ann", "ben", "cid"):
        add_annotator(project.store, name, PASSWORD, role="admin" if name == "cid" else "annotator")
    app = create_app(project)
    ann, ben, cid = Person(app), Person(app), Person(app)
    for person, name in ((ann, "ann"), (ben, "ben"), (cid, "cid")):
        person.login(name)
    for label_a, label_b in (
        ("billing", "billing"),
        ("other", "other"),
        ("billing", "other"),
        ("other", "other"),
    ):
        ann.answer(label_a)
        ben.answer(label_b)
    rows = {r["figure"]: r for r in cid.api("GET", "/admin/tables/agreement").json()}
    # 4 items x 2 answers, 3 of 4 agreeing; the values of duolabel.core.quality on the same answers
    from duolabel.core.quality import fleiss_kappa, krippendorff_alpha

    frame = pd.DataFrame(
        [
            (i, w, lab)
            for i, pair in enumerate(
                [("billing", "billing"), ("other", "other"), ("billing", "other"), ("other", "other")]
            )
            for w, lab in zip("ab", pair, strict=True)
        ],
        columns=["task", "worker", "label"],
    )
    assert rows["Fleiss' kappa"]["value"] == pytest.approx(fleiss_kappa(frame, LABELS), abs=1e-4)
    assert rows["Krippendorff's alpha (nominal)"]["value"] == pytest.approx(
        krippendorff_alpha(frame, LABELS), abs=1e-4
    )
    assert (
        0 < rows["Fleiss' kappa"]["value"] < 1 and rows["Fleiss' kappa"]["items_with_2_or_more_answers"] == 4
    )
    assert "Krippendorff" in cid.get("/admin").text
    project.close()


def test_expert_queue_pages(project: Project) -> None:
    add_annotator(project.store, "erin", PASSWORD, role="expert")
    with project.store.write() as session:
        assert enqueue_expert(session, ["item-000", "item-001"], "escalated") == 2
        assert enqueue_expert(session, ["item-000"], "escalated") == 0  # idempotent while open
        assert enqueue_expert(session, ["item-002"], "audit") == 1
    erin = Person(create_app(project))
    erin.login("erin")
    html = erin.get("/expert").text
    assert "Next escalated item (2 open)" in html and "Next audit item (1 open)" in html
    page = erin.get("/expert/next?reason=audit").text
    assert "text of item-002" in page and "Expert task (audit)" in page
    assert erin.post("/expert/answer", assignment_id=assignment_id(page), label="other").status_code == 303
    with project.store.read() as session:
        task = session.scalar(select(ExpertTask).where(ExpertTask.item_id == "item-002"))
        assert task.state == "done" and task.annotation_id is not None
    assert [row[:3] + row[4:] for row in annotations(project)] == [("item-002", "erin", "other", "expert")]
    api = erin.api("GET", "/expert/tasks").json()
    assert api["counts"] == {"escalated": 2, "audit": 0, "golden": 0}
    task = erin.api("GET", "/expert/task?reason=escalated").json()["task"]
    assert task["item_id"] == "item-000" and task["reason"] == "escalated"


def test_expert_answer_to_a_suggested_golden_item_makes_it_golden(project: Project) -> None:
    add_annotator(project.store, "erin", PASSWORD, role="expert")
    add_routed_items(project, 1, overlap=1, start=3)  # item-003: in the people's queue, no gold
    with project.store.write() as session:
        assert enqueue_expert(session, ["item-003"], "golden") == 1
        assert enqueue_expert(session, ["item-003"], "escalated") == 1
    erin = Person(create_app(project))
    erin.login("erin")
    assert "Next suggested golden item (1 open)" in erin.get("/expert").text
    page = erin.get("/expert/next?reason=golden").text
    assert "text of item-003" in page and "Expert task (golden)" in page
    assert erin.post("/expert/answer", assignment_id=assignment_id(page), label="other").status_code == 303
    with project.store.read() as session:
        item = session.get(Item, "item-003")
        assert (item.role, item.gold_label, item.gold_source) == ("golden", "other", "expert:erin")
        final = session.get(FinalLabel, "item-003")
        assert (final.label, final.source, final.annotators) == ("other", "expert", ["erin"])
        # The escalation is answered by the same answer; nothing is left open for the item.
        assert session.scalars(select(ExpertTask.state).where(ExpertTask.item_id == "item-003")).all() == [
            "done",
            "done",
        ]
        assert session.get(Route, "item-003") is None
    assert erin.api("GET", "/expert/tasks").json()["counts"] == {"escalated": 0, "audit": 0, "golden": 0}


# -- the API -----------------------------------------------------------------------------------


def test_api_labeling_and_its_one_error_shape(project: Project) -> None:
    person = Person(create_app(project))
    refused = person.client.post("/api/v1/login", json={"name": "alice", "password": "nope"})
    assert refused.status_code == 401
    assert refused.json() == {
        "error": {"type": "AccessError", "message": "wrong name or password", "status": 401}
    }
    me = person.client.post("/api/v1/login", json={"name": "alice", "password": PASSWORD}).json()
    person.token = me.pop("csrf_token")
    assert me == {"name": "alice", "role": "annotator", "status": "active"}
    task = person.api("GET", "/task").json()["task"]
    bad = person.api("POST", "/answer", {"assignment_id": task["assignment_id"], "label": "postal"})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "ProjectError"
    assert "'postal' is not one of" in bad.json()["error"]["message"]
    junk = person.api("POST", "/answer", {"assignment_id": "x"})
    assert junk.status_code == 400 and set(junk.json()["error"]) == {"type", "message", "status"}
    ok = person.api(
        "POST", "/answer", {"assignment_id": task["assignment_id"], "label": "billing", "seconds": 2}
    )
    assert ok.status_code == 200 and "annotation_id" in ok.json()
    me = person.api("GET", "/me").json()
    assert me["answers"] == 1 and not {"controls", "accuracy", "skills"} & set(me)
    assert person.api("POST", "/undo").status_code == 200
    assert person.api("GET", "/me").json()["answers"] == 0
    assert person.api("GET", "/nope").json()["error"]["status"] == 404


def test_gold_labels_never_reach_a_page(alice: Person, project: Project) -> None:
    pages = [alice.get("/login").text, alice.get("/help").text]
    html = alice.get("/label").text
    pages.append(html)
    with project.store.write() as session:  # the page does not change when the gold does
        session.execute(update(Item).values(gold_label="billing", gold_source="expert-x"))
    assert alice.get("/label").text == html
    pages.append(alice.post("/answer", assignment_id=assignment_id(html), label="nope").text)
    for _ in range(3):
        alice.answer("other")
        pages.append(alice.get("/label").text)
        pages.append(alice.api("GET", "/task").text)
    assert "Nothing to do right now" in pages[-2]
    for page in map(alice.shown, pages):
        assert GOLD not in page and "expert-x" not in page and "gold" not in page.lower()


def test_item_text_is_escaped(alice: Person) -> None:
    html = alice.get("/label").text
    assert "my parcel &lt;b&gt;never&lt;/b&gt; arrived" in html and "<b>never</b>" not in html


def test_cookie_and_security_headers(project: Project) -> None:
    client = TestClient(create_app(project), follow_redirects=False)
    response = client.get("/login")
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"
    assert client.get("/static/label.js").status_code == 200
    missing = client.get("/nope")
    assert missing.status_code == 404 and "Not Found" in missing.text
    assert "secure" not in cookie.split("; ")  # plain HTTP (the loopback address): no Secure
    # Over HTTPS (TLS, or a trusted proxy's X-Forwarded-Proto), every cookie is Secure.
    https = TestClient(create_app(project), base_url="https://testserver", follow_redirects=False)
    cookies = https.get("/login").headers.get_list("set-cookie")
    assert cookies and all("secure" in c.lower().split("; ") for c in cookies)


def test_session_secret_is_kept_private_in_the_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DUOLABEL_SECRET", raising=False)
    secret = session_secret(tmp_path)
    path = tmp_path / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == secret and len(secret) >= 32
    assert session_secret(tmp_path) == secret
    assert [p.name for p in tmp_path.iterdir()] == [SECRET_FILE]
    monkeypatch.setenv("DUOLABEL_SECRET", "s" * 40)
    assert session_secret(tmp_path) == "s" * 40
    monkeypatch.setenv("DUOLABEL_SECRET", "short")
    with pytest.raises(ProjectError, match="DUOLABEL_SECRET is 5 characters long"):
        session_secret(tmp_path)


def test_dynamic_overlap_offers_an_item_again(alice: Person, project: Project) -> None:
    for _ in range(3):
        alice.answer("billing")
    bob = Person(alice.client.app)
    bob.login("bob")
    assert "Nothing to do" in bob.get("/label").text
    with project.store.write() as session:
        session.execute(update(Route).where(Route.item_id == "item-001").values(overlap=2))
    assert "text of item-001" in bob.get("/label").text
    assert "Nothing to do" in alice.get("/label").text  # never the same item twice
    with project.store.read() as session:
        assert session.scalar(select(func.count()).select_from(Annotation)) == 3


def test_serve_with_workers_gives_each_worker_the_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12 item 15: ``duolabel serve --workers N`` runs N uvicorn processes, each of
    which opens the project from the environment."""
    import uvicorn

    from duolabel.web.app import PROJECT_ENV, app_from_environment, serve

    monkeypatch.delenv("DUOLABEL_SECRET", raising=False)
    monkeypatch.delenv(PROJECT_ENV, raising=False)
    project = make_project(tmp_path / "proj")
    calls: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    analyzed: list[Store] = []
    monkeypatch.setattr(Store, "analyze", lambda store: analyzed.append(store))
    try:
        with pytest.raises(ProjectError, match="--workers must be at least 1"):
            serve(project, workers=0)
        serve(project, port=8123, workers=3)
    finally:
        project.close()
    ((app, options),) = calls
    assert app == "duolabel.web.app:app_from_environment" and options["factory"] is True
    assert options["workers"] == 3 and options["port"] == 8123
    assert (tmp_path / "proj" / SECRET_FILE).exists()  # made once, before the workers start
    assert analyzed == [project.store]  # the queue's statistics refreshed once, before serving
    worker = app_from_environment()  # what each worker runs
    try:
        assert TestClient(worker).get("/login").status_code == 200
    finally:
        worker.state.web.project.close()


def test_requests_run_on_the_configured_number_of_threads(tmp_path: Path) -> None:
    """Issue 12 item 15: anyio's 40 worker threads made one server process 23% slower on
    PostgreSQL than 8 (the interpreter lock); ``web.threads`` sets them, 8 by default."""
    import anyio.to_thread

    def tokens() -> float:
        return anyio.to_thread.current_default_thread_limiter().total_tokens

    for folder, sections, expected in (("default", {}, 8), ("three", {"web": {"threads": 3}}, 3)):
        project = make_project(tmp_path / folder, **sections)
        try:
            with TestClient(create_app(project)) as client:
                assert client.portal is not None
                assert client.portal.call(tokens) == expected
                assert client.get("/login").status_code == 200
        finally:
            project.close()
