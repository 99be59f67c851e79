"""The dynamic policy in the web app: an answered item is followed up at once (one more
person, or an expert), not only at the next ``aggregate``; an undo takes back what its answer
led to. On SQLite and on the real PostgreSQL server. And what the status expects such items to
cost."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from duolabel.ledger import answer_price
from duolabel.people.accounts import add_annotator, set_status
from duolabel.project import Project
from duolabel.stages.route import follow_up_project
from duolabel.store import ExpertTask, Route
from duolabel.web import create_app
from tests.test_web import Person, assignment_id
from tests.web_fixtures import PASSWORD, add_gold_items, add_routed_items, make_project

# No model prediction on these items: the prior is uniform over the 3 labels, so one answer
# (a person right 9 times in 10) leaves the posterior at 0.9, below the target: ask one more.
DYNAMIC = {"policy": "dynamic", "posterior_target": 0.95, "max_overlap": 3}


@pytest.fixture
def project(tmp_path: Path, database_url: str | None) -> Iterator[Project]:
    project = make_project(tmp_path / "proj", database_url=database_url, routing=DYNAMIC)
    add_routed_items(project, 1, overlap=1)
    for name in ("alice", "bob", "carol"):
        add_annotator(project.store, name, PASSWORD)
    try:
        yield project
    finally:
        project.close()


def route(project: Project, item_id: str = "item-000") -> tuple[str, int]:
    with project.store.read() as session:
        found = session.get(Route, item_id)
        assert found is not None
        return found.decision, found.overlap


def escalations(project: Project) -> list[str]:
    with project.store.read() as session:
        return list(session.scalars(select(ExpertTask.item_id).where(ExpertTask.state == "open")))


def people(project: Project, *names: str) -> list[Person]:
    """Each of ``names`` signed in, in a browser of their own on one app of the project."""
    app = create_app(project)
    signed_in = []
    for name in names:
        someone = Person(app)
        assert someone.login(name).status_code == 303
        signed_in.append(someone)
    return signed_in


def test_an_unsure_item_is_offered_to_one_more_person_at_once(project: Project) -> None:
    alice, bob, carol = people(project, "alice", "bob", "carol")
    assert alice.answer("billing").status_code == 303
    assert route(project) == ("humans", 2)  # unsure after one answer: one more, now
    # Bob disagrees through the API: still unsure, and the last of max_overlap is asked.
    task = bob.api("GET", "/task").json()["task"]
    assert task is not None and task["text"].startswith("text of item-000")
    answered = bob.api("POST", "/answer", {"assignment_id": task["assignment_id"], "label": "shipping"})
    assert answered.status_code == 200, answered.text
    assert set(answered.json()) == {"annotation_id"}  # the response is what it always was
    assert route(project) == ("humans", 3)
    assert escalations(project) == []
    assert carol.answer("other").status_code == 303
    assert route(project) == ("expert", 3)  # three people, three labels: an expert decides
    assert escalations(project) == ["item-000"]
    assert follow_up_project(project) == {}  # aggregate's follow-up finds nothing left to do
    assert route(project) == ("expert", 3) and escalations(project) == ["item-000"]


def test_agreeing_people_settle_an_item_and_nobody_else_is_asked(project: Project) -> None:
    alice, bob, carol = people(project, "alice", "bob", "carol")
    alice.answer("billing")
    bob.answer("billing")
    assert route(project) == ("humans", 2)  # sure: it waits for aggregation, as it is
    assert "Nothing to do" in carol.get("/label").text


def test_an_undone_answer_takes_back_the_person_it_asked_for(project: Project) -> None:
    alice, bob = people(project, "alice", "bob")
    alice.answer("billing")
    assert route(project) == ("humans", 2)
    undone = alice.post("/undo")
    assert undone.status_code == 303
    assert route(project) == ("humans", 1)  # back to one answer wanted: alice's, again
    assert "Nothing to do" in bob.get("/label").text
    page = alice.get("/label").text
    assert "text of item-000" in page
    alice.post("/answer", assignment_id=assignment_id(page), label="billing")
    assert route(project) == ("humans", 2)
    # The same through the API.
    assert alice.api("POST", "/undo").status_code == 200
    assert route(project) == ("humans", 1)


def test_a_control_answer_changes_no_route(tmp_path: Path, database_url: str | None) -> None:
    project = make_project(
        tmp_path / "proj", database_url=database_url, routing=DYNAMIC, quality={"control_rate": 1.0}
    )
    try:
        add_gold_items(project, 2)
        add_routed_items(project, 1, overlap=1)
        add_annotator(project.store, "alice", PASSWORD)
        (alice,) = people(project, "alice")
        for _ in range(2):
            assert alice.answer("billing").status_code == 303  # controls first (rate 1)
        assert route(project) == ("humans", 1)
    finally:
        project.close()


def test_other_policies_are_not_followed_up(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj", routing={"policy": "threshold"})
    try:
        add_routed_items(project, 1, overlap=1)
        add_annotator(project.store, "alice", PASSWORD)
        people(project, "alice")[0].answer("billing")
        assert route(project) == ("humans", 1)
    finally:
        project.close()


def test_a_suspended_persons_answer_is_replaced_not_waited_for(project: Project) -> None:
    alice, bob, carol = people(project, "alice", "bob", "carol")
    alice.answer("billing")
    assert route(project) == ("humans", 2)
    set_status(project.store, "alice", "suspended")
    # Bob's answer fills the last slot, and alice's answer no longer counts: one more person
    # is asked beyond the two slots taken (the follow-up used to wait for a second usable
    # answer, with no slot left for anyone to give it).
    bob.answer("billing")
    assert route(project) == ("humans", 3)
    assert "text of item-000" in carol.get("/label").text


def test_an_item_routed_to_several_people_at_once_keeps_its_overlap(
    tmp_path: Path, database_url: str | None
) -> None:
    # A sample certificate's items are routed to routing.overlap people at once, whatever
    # the policy (stages/route_sample.py): neither an answer nor an undo shrinks that.
    project = make_project(tmp_path / "proj", database_url=database_url, routing=DYNAMIC)
    try:
        add_routed_items(project, 1, overlap=3)
        add_annotator(project.store, "alice", PASSWORD)
        assert follow_up_project(project) == {} and route(project) == ("humans", 3)
        (alice,) = people(project, "alice")
        alice.answer("billing")
        assert route(project) == ("humans", 3)
        alice.post("/undo")
        assert route(project) == ("humans", 3)
    finally:
        project.close()


def test_the_status_prices_what_the_dynamic_policy_is_expected_to_ask(tmp_path: Path) -> None:
    for policy in ("threshold", "dynamic"):
        project = make_project(tmp_path / policy, routing={**DYNAMIC, "policy": policy, "overlap": 2})
        try:
            add_routed_items(project, 4, overlap=2 if policy == "threshold" else 1)
            # threshold: 2 answers per item; dynamic: one person asked now, but (1 + max_overlap)
            # / 2 = 2 expected per item, as plan counts (it used to price the one answer asked).
            price = answer_price(project.config.costs)
            assert project.status().comparison.hybrid == pytest.approx(4 * 2 * price)
        finally:
            project.close()
