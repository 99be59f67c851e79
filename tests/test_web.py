"""The annotation app through FastAPI's TestClient: login, CSRF, answers, no gold leaks."""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from duolabel.accounts import add_annotator
from duolabel.errors import ProjectError
from duolabel.project import Project
from duolabel.store import Annotation, Annotator, Assignment, Item
from duolabel.web import create_app
from duolabel.web.app import SECRET_FILE, session_secret
from tests.web_fixtures import PASSWORD, add_routed_items, make_project

GOLD = "gold-label-that-must-stay-hidden"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    monkeypatch.delenv("DUOLABEL_SECRET", raising=False)
    project = make_project(tmp_path / "proj")
    add_routed_items(project, 3, overlap=1, gold=GOLD)
    add_annotator(project.store, "alice", PASSWORD)
    add_annotator(project.store, "bob", PASSWORD)
    try:
        yield project
    finally:
        project.close()


@pytest.fixture
def client(project: Project) -> Iterator[TestClient]:
    with TestClient(create_app(project), follow_redirects=False) as client:
        yield client


def csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def assignment_id(html: str) -> str:
    found = re.search(r'name="assignment_id" value="(\d+)"', html)
    assert found, "no assignment in the page"
    return found.group(1)


def log_in(client: TestClient, name: str = "alice", password: str = PASSWORD) -> str:
    """Log in and return the label page's HTML."""
    token = csrf(client.get("/login").text)
    response = client.post("/login", data={"name": name, "password": password, "csrf_token": token})
    assert response.status_code == 303 and response.headers["location"] == "/"
    page = client.get("/")
    assert page.status_code == 200
    return page.text


def annotations(project: Project) -> list[tuple[str, str, str, float | None]]:
    with project.store.read() as session:
        rows = session.execute(
            select(Annotation.item_id, Annotator.name, Annotation.label, Annotation.seconds)
            .join(Annotator, Annotator.id == Annotation.annotator_id)
            .order_by(Annotation.id)
        ).all()
    return [tuple(row) for row in rows]


def test_every_page_but_login_needs_a_login(client: TestClient) -> None:
    for response in (client.get("/"), client.post("/answer", data={"label": "billing"})):
        assert response.status_code == 303 and response.headers["location"] == "/login"
    assert client.get("/login").status_code == 200


def test_wrong_password_or_name_is_refused(client: TestClient) -> None:
    for name, password in (("alice", "wrong password"), ("mallory", PASSWORD)):
        token = csrf(client.get("/login").text)
        response = client.post("/login", data={"name": name, "password": password, "csrf_token": token})
        assert response.status_code == 401
        assert "wrong name or password" in response.text
        assert client.get("/").status_code == 303


def test_suspended_annotator_is_refused_and_logged_out(client: TestClient, project: Project) -> None:
    log_in(client)
    with project.store.write() as session:
        session.execute(update(Annotator).where(Annotator.name == "alice").values(status="suspended"))
    assert client.get("/").headers["location"] == "/login"
    token = csrf(client.get("/login").text)
    form = {"name": "alice", "password": PASSWORD, "csrf_token": token}
    response = client.post("/login", data=form)
    assert response.status_code == 403
    assert "your account is suspended" in response.text


@pytest.mark.parametrize("token", [None, "", "forged-token"])
def test_forms_without_the_csrf_token_are_refused(
    client: TestClient, project: Project, token: str | None
) -> None:
    html = log_in(client)
    form = {"assignment_id": assignment_id(html), "label": "billing", "seconds": "1"}
    if token is not None:
        form["csrf_token"] = token
    response = client.post("/answer", data=form)
    assert response.status_code == 403
    assert "did not come from this site" in response.text
    assert annotations(project) == []
    login_form = {"name": "bob", "password": PASSWORD}
    if token is not None:
        login_form["csrf_token"] = token
    assert client.post("/login", data=login_form).status_code == 403
    assert client.post("/logout", data={}).status_code == 403


def test_an_answer_is_stored_and_the_next_item_shown(client: TestClient, project: Project) -> None:
    html = log_in(client)
    assert "text of item-000" in html and 'id="answers">0</span> answers given' in html
    for shortcut, label in enumerate(["billing", "shipping", "other"], start=1):
        assert f'data-key="{shortcut}"' in html and f'value="{label}"' in html
    assert "Choose the label that best describes the text." in html
    assert "The item is shipping." in html
    form = {
        "csrf_token": csrf(html),
        "assignment_id": assignment_id(html),
        "label": "shipping",
        "seconds": "3.25",
    }
    response = client.post("/answer", data=form)
    assert response.status_code == 303 and response.headers["location"] == "/"
    assert annotations(project) == [("item-000", "alice", "shipping", 3.25)]
    html = client.get("/").text
    assert "text of item-001" in html and 'id="answers">1</span> answer given' in html
    # the same form again: the assignment is done, one line and nothing written
    response = client.post("/answer", data=form)
    assert response.status_code == 400
    assert "was already answered" in response.text and "Traceback" not in response.text
    assert len(annotations(project)) == 1


def test_reload_shows_the_same_item(client: TestClient) -> None:
    first = log_in(client)
    again = client.get("/").text
    assert assignment_id(first) == assignment_id(again)


def test_bad_answers_are_one_line_errors(client: TestClient, project: Project) -> None:
    html = log_in(client)
    token, assignment = csrf(html), assignment_id(html)
    cases = [
        (
            {"assignment_id": assignment, "label": "postal"},
            "label &#39;postal&#39; is not one of &#39;billing&#39;, &#39;shipping&#39;, &#39;other&#39;",
        ),
        ({"assignment_id": "x", "label": "billing"}, "assignment_id must be a number"),
        ({"assignment_id": "999999", "label": "billing"}, "assignment 999999 is not one of yours"),
    ]
    for form, message in cases:
        response = client.post("/answer", data={"csrf_token": token, "seconds": "1", **form})
        assert response.status_code == 400
        assert message in response.text and "Traceback" not in response.text
    assert annotations(project) == []


def test_nobody_can_answer_another_annotators_assignment(project: Project) -> None:
    app = create_app(project)
    with (
        TestClient(app, follow_redirects=False) as alice,
        TestClient(app, follow_redirects=False) as bob,
    ):
        alices = assignment_id(log_in(alice, "alice"))
        bob_html = log_in(bob, "bob")
        response = bob.post(
            "/answer",
            data={"csrf_token": csrf(bob_html), "assignment_id": alices, "label": "billing"},
        )
        assert response.status_code == 400
        assert f"assignment {alices} is not one of yours" in response.text
    assert annotations(project) == []
    with project.store.read() as session:
        assert session.get(Assignment, int(alices)).state == "leased"


def test_gold_labels_never_reach_a_page(client: TestClient, project: Project) -> None:
    pages = [client.get("/login").text]
    html = log_in(client)
    pages.append(html)
    # The page does not change at all when the gold label does.
    with project.store.write() as session:
        session.execute(update(Item).values(gold_label="billing", gold_source="expert-x"))
    assert client.get("/").text == html
    form = {"csrf_token": csrf(html), "assignment_id": assignment_id(html), "label": "other"}
    pages.append(client.post("/answer", data={**form, "label": "nope"}).text)  # error page
    for _ in range(3):
        client.post("/answer", data=form)
        html = client.get("/").text
        pages.append(html)
        if 'name="assignment_id"' in html:
            form["assignment_id"] = assignment_id(html)
    assert "Nothing to do right now" in pages[-1]
    for page in pages:
        assert GOLD not in page and "expert-x" not in page and "gold" not in page.lower()


def test_item_text_is_escaped(client: TestClient) -> None:
    html = log_in(client)
    assert "my parcel &lt;b&gt;never&lt;/b&gt; arrived" in html
    assert "<b>never</b>" not in html


def test_logout_ends_the_session(client: TestClient) -> None:
    html = log_in(client)
    response = client.post("/logout", data={"csrf_token": csrf(html)})
    assert response.status_code == 303 and response.headers["location"] == "/login"
    assert client.get("/").status_code == 303


def test_cookie_and_security_headers(client: TestClient) -> None:
    response = client.get("/login")
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"
    assert client.get("/static/label.js").status_code == 200
    missing = client.get("/nope")
    assert missing.status_code == 404 and "Not Found" in missing.text


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
