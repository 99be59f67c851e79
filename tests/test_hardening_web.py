"""Issue 12's web findings, each reproduced first: controls told apart by undo, raced login
throttling and lockouts, a shared exam key, client-side timing, out-of-range ids, weak
passwords, look-alike names, and very long items."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select, update

from duolabel.errors import AccessError, ProjectError
from duolabel.people.accounts import add_annotator, log_in, set_status
from duolabel.pipeline import aggregate, run_project
from duolabel.project import Project
from duolabel.store import Annotation, Annotator, Assignment, FinalLabel, Item
from duolabel.store.tables import utcnow
from duolabel.web import create_app
from duolabel.web.actions import suggestion
from tests.test_web import answer_shown, assignment_id, control_project, csrf
from tests.web_fixtures import LABELS, PASSWORD, add_gold_items, add_routed_items, gold_of, make_project


class Person:
    """One browser with its own cookies, logged in."""

    def __init__(self, app: Any, name: str, password: str = PASSWORD) -> None:
        self.client = TestClient(app, follow_redirects=False)
        token = csrf(self.client.get("/login").text)
        response = self.client.post("/login", data={"name": name, "password": password, "csrf_token": token})
        assert response.status_code == 303, response.text
        self.token = csrf(self.client.get("/help").text)

    def get(self, path: str) -> Any:
        return self.client.get(path, follow_redirects=True)

    def post(self, path: str, **data: Any) -> Any:
        return self.client.post(path, data={"csrf_token": self.token, **data})

    def api(self, method: str, path: str, body: Any = None) -> Any:
        return self.client.request(method, "/api/v1" + path, json=body, headers={"x-csrf-token": self.token})


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("DUOLABEL_SECRET", raising=False)
    return tmp_path


# -- 4. undo (and everything else) does not tell a control from real work ---------------------


def _undo_project(folder: Path, control_rate: float, overlap: int = 2) -> Project:
    project = make_project(folder, quality={"control_rate": control_rate, "undo_seconds": 60})
    add_routed_items(project, 6, overlap=overlap)
    gold = add_gold_items(project, 6)
    with project.store.write() as session:  # as the route stage does: a golden item's gold is final
        for item_id, label in gold_of(project, gold).items():
            session.add(FinalLabel.from_expert(item_id, label))
    add_annotator(project.store, "alice", PASSWORD)
    return project


def _shape(value: Any) -> Any:
    """A JSON value with its scalars replaced by their types: what a client can compare."""
    if isinstance(value, dict):
        return {key: _shape(inner) for key, inner in value.items()}
    if isinstance(value, list):
        return [_shape(inner) for inner in value]
    return type(value).__name__


def _skeleton(html: str) -> str:
    html = re.sub(r'id="item-text">[^<]*<', 'id="item-text"><', html)
    html = re.sub(r'name="csrf_token" value="[^"]*"', "", html)
    return re.sub(r'(value|action|href)="/?(task/)?\d+"', "", html)


def _drive(project: Project, statements: list[str]) -> list[Any]:
    """The same sequence of actions through the pages and the API: lease, answer, undo, look at
    the counters, answer again, undo twice, lease again. Returns what a client could observe."""
    alice = Person(create_app(project), "alice")
    seen: list[Any] = []

    def record(*args: Any) -> None:
        statements.append(args[2])

    event.listen(project.store.engine, "before_cursor_execute", record)
    try:
        page = alice.get("/label")
        seen += [page.status_code, _skeleton(page.text)]
        answered = alice.post("/answer", assignment_id=assignment_id(page.text), label="billing")
        seen += [answered.status_code, answered.headers.get("location")]
        seen.append(alice.api("GET", "/me").json()["left"])  # one fewer after either kind
        undone = alice.post("/undo")
        seen += [undone.status_code, re.sub(r"\d+", "N", undone.headers.get("location", undone.text))]
        again = alice.get("/label")
        seen += [again.status_code, _skeleton(again.text)]
        seen.append(alice.post("/answer", assignment_id=assignment_id(again.text), label="other").status_code)
        me = alice.api("GET", "/me").json()
        seen += [me["answers"], me["earnings"], me["left"]]
        task = alice.api("GET", "/task").json()
        seen.append(_shape(task))
        answer = alice.api(
            "POST", "/answer", {"assignment_id": task["task"]["assignment_id"], "label": "other"}
        )
        seen += [answer.status_code, _shape(answer.json())]
        for _ in range(3):
            undo = alice.api("POST", "/undo")
            seen += [undo.status_code, _shape(undo.json())]
            if undo.status_code != 200:
                seen.append(re.sub(r"\d+", "N", undo.json()["error"]["message"]))
        seen.append(_shape(alice.api("GET", "/task").json()))
        me = alice.api("GET", "/me").json()
        seen += [me["answers"], me["earnings"], me["left"]]
        skipped = alice.api(
            "POST", "/skip", {"assignment_id": alice.api("GET", "/task").json()["task"]["assignment_id"]}
        )
        seen += [skipped.status_code, alice.api("GET", "/me").json()["left"]]
    finally:
        event.remove(project.store.engine, "before_cursor_execute", record)
    with project.store.read() as session:
        kinds = set(session.scalars(select(Assignment.kind)))
    seen.append(len(kinds))
    return seen


def test_undo_and_everything_else_look_the_same_for_a_control(folder: Path) -> None:
    control = _undo_project(folder / "control", 1.0)
    regular = _undo_project(folder / "regular", 0.0)
    try:
        statements: dict[str, list[str]] = {"control": [], "regular": []}
        seen_control = _drive(control, statements["control"])
        seen_regular = _drive(regular, statements["regular"])
        with control.store.read() as session:
            assert set(session.scalars(select(Assignment.kind))) == {"control"}
        assert seen_control == seen_regular
        # the same statements, so the response time does not tell them apart either
        assert len(statements["control"]) == len(statements["regular"])
    finally:
        control.close()
        regular.close()


def _undo_after_aggregation(project: Project) -> tuple[list[Any], list[int]]:
    """Answer, aggregate (an answer to a one-person item makes its final label), then undo and
    answer again: what a client could observe, and the items each aggregation finalized."""
    alice = Person(create_app(project), "alice")
    seen: list[Any] = []
    finalized: list[int] = []
    task = alice.api("GET", "/task").json()["task"]
    seen.append(
        alice.api("POST", "/answer", {"assignment_id": task["assignment_id"], "label": "billing"}).status_code
    )
    seen.append(alice.api("GET", "/me").json()["left"])
    finalized.append(aggregate(project).finalized)
    undo = alice.api("POST", "/undo")
    seen += [undo.status_code, _shape(undo.json()), alice.api("GET", "/me").json()["left"]]
    again = alice.api("GET", "/task").json()["task"]
    seen.append(again["assignment_id"] == task["assignment_id"])  # the same task comes back
    seen.append(
        alice.api("POST", "/answer", {"assignment_id": again["assignment_id"], "label": "other"}).status_code
    )
    finalized.append(aggregate(project).finalized)
    me = alice.api("GET", "/me").json()
    return [*seen, me["answers"], me["earnings"], me["left"]], finalized


def test_undo_after_aggregation_looks_the_same_for_a_control(folder: Path) -> None:
    """An aggregation between an answer and its undo refused the undo of a regular answer (its
    item had a final label) and never of a control's (its final label is its gold): the undo now
    takes the people-made label back, so the item is aggregated again with the new answer."""
    control = _undo_project(folder / "control", 1.0, overlap=1)
    regular = _undo_project(folder / "regular", 0.0, overlap=1)
    try:
        seen_regular, finalized = _undo_after_aggregation(regular)
        seen_control, _ = _undo_after_aggregation(control)
        assert finalized == [1, 1]  # the answer made a final label; the undo took it back
        assert seen_control == seen_regular
        finals = regular.to_pandas("final").set_index("id")
        assert finals.loc["item-000", "label"] == "other"  # made again from the new answer
        with control.store.read() as session:
            sources = set(session.scalars(select(FinalLabel.source)))
        assert sources == {"expert"}  # the controls' gold labels stay
    finally:
        control.close()
        regular.close()


# -- 6. login throttling ---------------------------------------------------------------------


@pytest.fixture
def accounts(tmp_path: Path, database_url: str | None) -> Iterator[Project]:
    project = make_project(
        tmp_path / "proj",
        database_url=database_url,
        web={"login_max_failures": 5, "login_max_failures_per_address": 20},
    )
    for name in ("alice", "bob"):
        add_annotator(project.store, name, PASSWORD)
    try:
        yield project
    finally:
        project.close()


def test_concurrent_wrong_passwords_get_no_more_checks_than_the_limit(
    accounts: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    import duolabel.people.accounts as module

    checked: list[int] = []
    verify = module._verify

    def counting(password_hash: str, password: str) -> bool:
        checked.append(1)
        time.sleep(0.02)  # widen the race: every thread is between its check and its count
        return verify(password_hash, password)

    monkeypatch.setattr(module, "_verify", counting)
    # The clock stands still: past the limit a try waits 1 s, then 2 s, ... (backoff, not a
    # lock), so on a loaded machine where the 40 threads take over a second to get through,
    # a try after the wait would rightly be checked. What is tested is the race, not the backoff.
    frozen = module.utcnow()
    monkeypatch.setattr(module, "utcnow", lambda: frozen)
    statuses: list[int] = []
    start = threading.Barrier(40)

    def guess(i: int) -> None:
        start.wait()
        try:
            log_in(accounts.store, "alice", f"wrong guess {i}", address="10.0.0.9", web=accounts.config.web)
        except AccessError as exc:
            statuses.append(exc.status)

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(checked) == accounts.config.web.login_max_failures
    assert sorted(set(statuses)) == [401, 429] and statuses.count(401) == 5


def test_an_attacker_cannot_lock_the_owner_out(accounts: Project) -> None:
    web = accounts.config.web
    for i in range(12):
        with pytest.raises(AccessError):
            log_in(accounts.store, "alice", f"guess {i}", address="6.6.6.6", web=web)
    with pytest.raises(AccessError) as refused:
        log_in(accounts.store, "alice", PASSWORD, address="6.6.6.6", web=web)
    assert refused.value.status == 429 and "seconds" in str(refused.value)
    # the owner, from their own address, is not locked out; nor is another account on the
    # attacker's address, below the (higher) per-address limit
    assert log_in(accounts.store, "alice", PASSWORD, address="192.0.2.7", web=web).name == "alice"
    assert log_in(accounts.store, "bob", PASSWORD, address="6.6.6.6", web=web).name == "bob"


def test_delays_grow_and_pass(accounts: Project) -> None:
    from duolabel.store import LoginFailure

    web = accounts.config.web
    waits = []
    for i in range(web.login_max_failures + 3):
        with pytest.raises(AccessError):
            log_in(accounts.store, "alice", f"guess {i}", address="6.6.6.6", web=web)
        with accounts.store.read() as session:
            row = session.scalar(select(LoginFailure).where(LoginFailure.scope == "account"))
            waits.append(0.0 if row.blocked_until is None else (row.blocked_until - utcnow()).total_seconds())
        with accounts.store.write() as session:  # the delay passes
            session.execute(update(LoginFailure).values(blocked_until=None))
    late = waits[web.login_max_failures - 1 :]
    assert all(w <= 0 for w in waits[: web.login_max_failures - 1])
    assert all(b > a > 0 for a, b in zip(late, late[1:], strict=False))
    assert log_in(accounts.store, "alice", PASSWORD, address="6.6.6.6", web=web).name == "alice"


def test_the_per_address_limit_is_separate_and_higher(accounts: Project) -> None:
    web = accounts.config.web
    names = [f"user{i}" for i in range(40)]
    refused = []
    for name in names:  # spraying one guess per name from one address
        try:
            log_in(accounts.store, name, "guess guess", address="6.6.6.6", web=web)
        except AccessError as exc:
            refused.append(exc.status)
    assert refused[: web.login_max_failures + 1] == [401] * (web.login_max_failures + 1)
    assert 429 in refused  # the address limit holds, later than the account's


# -- 7. the exam -------------------------------------------------------------------------------


def _exam_project(folder: Path) -> Project:
    project = make_project(folder, quality={"exam_size": 4, "exam_retries": 1, "pass_mark": 1.0})
    add_routed_items(project, 2, overlap=1)
    add_gold_items(project, 12)
    for name in ("carol", "dave"):
        add_annotator(project.store, name, PASSWORD, status="onboarding")
    return project


def _take_exam(person: Person) -> list[str]:
    texts = []
    for _ in range(4):
        page = person.get("/exam").text
        texts.append(re.search(r'id="item-text">([^<]*)<', page).group(1))
        person.post("/exam/answer", assignment_id=assignment_id(page), label=LABELS[0])
    return texts


def test_each_candidate_gets_their_own_draw_and_no_answer_key(folder: Path) -> None:
    project = _exam_project(folder)
    app = create_app(project)
    carol, dave = Person(app, "carol"), Person(app, "dave")
    carols, daves = _take_exam(carol), _take_exam(dave)
    assert carols != daves  # another draw, or another order
    pool = {f"known text gold-{i:03d}" for i in range(8)}  # exam_size * (1 + exam_retries)
    assert set(carols) <= pool and set(daves) <= pool
    page = carol.get("/exam/result").text
    api = carol.api("GET", "/exam/result").json()["result"]
    golds = gold_of(project, [t.removeprefix("known text ") for t in carols])
    for text, row in zip(carols, api["review"], strict=True):
        assert set(row) == {"text", "your_label", "right"}
        assert row["right"] is (golds[text.removeprefix("known text ")] == LABELS[0])
    assert "<th>right answer</th>" not in page and re.search(r">\s*wrong\s*<", page)
    for label in LABELS[1:]:  # the key of a wrong answer appears nowhere
        assert f"<td>{label}</td>" not in page
    carol.post("/exam/retry")
    second = _take_exam(carol)
    assert not set(second) & set(carols)  # a retry draws fresh items
    project.close()


def test_an_exam_item_whose_lease_ran_out_is_asked_again(folder: Path) -> None:
    """It was skipped for good while the result waited for its answer: the candidate went
    back and forth between /exam and /exam/result forever."""
    project = _exam_project(folder)
    carol = Person(create_app(project), "carol")
    first = re.search(r'id="item-text">([^<]*)<', carol.get("/exam").text).group(1)
    with project.store.write() as session:  # she left it open past the lease
        session.execute(update(Assignment).values(lease_expires=utcnow() - timedelta(minutes=1)))
    texts = _take_exam(carol)
    assert texts[0] == first and len(set(texts)) == 4
    result = carol.api("GET", "/exam/result").json()["result"]
    assert result is not None and len(result["review"]) == 4
    with project.store.read() as session:
        assert session.scalar(select(func.count()).select_from(Assignment)) == 4  # leased again, not anew
    project.close()


def test_an_automatic_suspension_or_decline_ends_the_sessions(folder: Path) -> None:
    """A suspension by the control rule (and an exam's decline) only changed the status: once
    an admin made the account active again, a cookie copied before worked again."""
    project = control_project(folder / "controls", min_controls=1, min_control_accuracy=0.9)
    alice = Person(create_app(project), "alice")
    copied = dict(alice.client.cookies)
    answer_shown(alice, project, right=False)  # suspended at once
    set_status(project.store, "alice", "active")
    thief = TestClient(create_app(project), cookies=copied)
    assert thief.get("/api/v1/me").status_code == 401
    project.close()

    exam = _exam_project(folder / "exam")  # pass mark 1.0, one retry
    carol = Person(create_app(exam), "carol")
    copied = dict(carol.client.cookies)
    _take_exam(carol)
    carol.post("/exam/retry")
    _take_exam(carol)
    with exam.store.read() as session:
        assert session.scalar(select(Annotator.status).where(Annotator.name == "carol")) == "declined"
    set_status(exam.store, "carol", "active")
    thief = TestClient(create_app(exam), cookies=copied)
    assert thief.get("/api/v1/me").status_code == 401
    exam.close()


def test_in_co_pilot_mode_a_control_has_a_suggestion_as_any_task(example_copy: Path) -> None:
    """Items imported as controls were never labelled, so in co-pilot mode a task without a
    model suggestion was a control. They are labelled now (and still never weigh the model)."""
    (example_copy / "controls.csv").write_text(
        "id,text,gold\nc1,I was charged twice for one order.,billing\n"
        "c2,The parcel says delivered but nothing came.,shipping\n",
        encoding="utf-8",
    )
    with (example_copy / "duolabel.yaml").open("a", encoding="utf-8") as config:
        # every task a control while one is left; nobody suspended for the answers given here
        quality = ["show_model_suggestion: true", "control_rate: 1.0", "exam_size: 0", "min_controls: 1000"]
        config.write("quality:\n" + "".join(f"  {line}\n" for line in quality))
    project = Project.open(example_copy)
    try:
        project.import_file(example_copy / "controls.csv", role="control", gold_column="gold")
        run_project(project)
        labels = project.config.task.label_names
        assert {suggestion(project, item_id) for item_id in ("c1", "c2")} <= set(labels)
        add_annotator(project.store, "alice", PASSWORD)
        alice = Person(create_app(project), "alice")
        seen: dict[str, Any] = {}
        for _ in range(80):  # rate 1: controls (golden items and c1, c2) while work is open
            task = alice.api("GET", "/task").json()["task"]
            with project.store.read() as session:
                item_id = session.scalar(
                    select(Assignment.item_id).where(Assignment.id == task["assignment_id"])
                )
            seen[item_id] = task["suggestion"]
            alice.api("POST", "/answer", {"assignment_id": task["assignment_id"], "label": "billing"})
            if {"c1", "c2"} <= set(seen):
                break
        assert seen["c1"] in labels and seen["c2"] in labels
        assert all(s in labels for s in seen.values())
    finally:
        project.close()


# -- 8. smaller ones -------------------------------------------------------------------------


def test_fraud_timing_is_measured_by_the_server(folder: Path) -> None:
    project = make_project(folder)
    add_routed_items(project, 3, overlap=1)
    add_annotator(project.store, "alice", PASSWORD)
    alice = Person(create_app(project), "alice")
    page = alice.get("/label").text
    with project.store.write() as session:  # leased a minute ago
        session.execute(update(Assignment).values(created_at=utcnow().replace(microsecond=0) - _minute()))
    alice.post("/answer", assignment_id=assignment_id(page), label="billing", seconds="0.01")
    task = alice.api("GET", "/task").json()["task"]
    alice.api("POST", "/answer", {"assignment_id": task["assignment_id"], "label": "other", "seconds": 999})
    with project.store.read() as session:
        seconds = list(session.scalars(select(Annotation.seconds).order_by(Annotation.id)))
    assert 59 <= seconds[0] <= 120 and seconds[1] < 30
    project.close()


def _minute() -> Any:
    from datetime import timedelta

    return timedelta(minutes=1)


def test_out_of_range_ids_get_the_error_shape(folder: Path) -> None:
    project = make_project(folder)
    add_routed_items(project, 1, overlap=1)
    add_annotator(project.store, "alice", PASSWORD)
    alice = Person(create_app(project), "alice")
    huge = 10**30
    for response in (
        alice.api("POST", "/answer", {"assignment_id": huge, "label": "billing"}),
        alice.api("POST", "/skip", {"assignment_id": huge}),
        alice.api("GET", f"/task/{huge}"),
    ):
        assert response.status_code in (400, 404), response.text
        assert set(response.json()["error"]) == {"type", "message", "status"}
    page = alice.post("/answer", assignment_id=str(huge), label="billing")
    assert page.status_code in (400, 404) and "Traceback" not in page.text
    assert alice.get(f"/task/{huge}").status_code == 404
    project.close()


@pytest.mark.parametrize(
    ("name", "password", "message"),
    [
        ("erin", "short one", "at least 10"),
        ("erin", "password123", "too easy to guess"),
        ("erin", "aaaaaaaaaaaaaa", "too easy to guess"),
        ("erin12345678", "erin12345678x", "name"),
    ],
)
def test_weak_passwords_are_refused(folder: Path, name: str, password: str, message: str) -> None:
    project = make_project(folder)
    with pytest.raises(ProjectError, match=message):
        add_annotator(project.store, name, password)
    add_annotator(project.store, name, "tidy harbour lantern")
    project.close()


def test_user_names_are_normalised_and_unique_case_insensitively(
    folder: Path, database_url: str | None
) -> None:
    project = make_project(folder, database_url=database_url)
    add_annotator(project.store, "Ｅrin", PASSWORD)  # a fullwidth E: NFKC makes it "Erin"
    with project.store.read() as session:
        assert session.scalar(select(Annotator.name)) == "Erin"
    for taken in ("erin", "ERIN", "Erin"):
        with pytest.raises(ProjectError, match="already exists"):
            add_annotator(project.store, taken, PASSWORD)
    for bad in ("al\u200bice", "al\u0007ice", "\u202eecila", "bob\u00ad"):
        with pytest.raises(ProjectError, match="invisible or control character"):
            add_annotator(project.store, bad, PASSWORD)
    assert log_in(project.store, "erin", PASSWORD, address="1.2.3.4", web=project.config.web).name == "Erin"
    project.close()


def test_a_one_megabyte_item_renders_quickly(folder: Path) -> None:
    project = make_project(folder)
    add_routed_items(project, 1, overlap=1)
    big = "word " * 200_000 + "THE-END"
    with project.store.write() as session:
        session.execute(update(Item).values(text=big))
    add_annotator(project.store, "alice", PASSWORD)
    alice = Person(create_app(project), "alice")
    alice.get("/label")  # leases it
    started = time.perf_counter()
    page = alice.get("/label")
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0 and len(page.text) < 100_000
    assert "THE-END" not in page.text and "show all" in page.text.lower()
    link = re.search(r'href="(/task/\d+\?full=1)"', page.text).group(1)
    assert "THE-END" in alice.get(link).text
    assert alice.api("GET", "/task").json()["task"]["text"] == big  # the API keeps the full text
    project.close()
