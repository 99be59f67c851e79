"""The web hot path, second pass (issue 12 item 15): an answer's checks and its work in one
worker-thread hop, and the session check read outside a transaction (``Store.glance``).

Both must keep what they replace: the role and CSRF token are checked before the body is
looked at, a body that is not JSON is refused, and a glance leaves no autocommit connection
behind for the next transaction (on SQLite and on PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select, update

from duolabel.people.accounts import add_annotator
from duolabel.project import Project
from duolabel.store import Annotator
from duolabel.web import create_app
from tests.web_fixtures import PASSWORD, add_routed_items, make_project


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str | None) -> Iterator[Project]:
    monkeypatch.delenv("DUOLABEL_SECRET", raising=False)
    opened = make_project(tmp_path / "proj", database_url=database_url)
    yield opened
    opened.close()


def test_an_answer_is_checked_before_its_body_and_its_body_must_be_json(project: Project) -> None:
    add_routed_items(project, 3, overlap=1)
    add_annotator(project.store, "alice", PASSWORD)
    app = create_app(project)
    client = TestClient(app)
    garbage = {"content": b"{not json", "headers": {"content-type": "application/json"}}
    # Not logged in: 401 whatever the body holds.
    assert client.post("/api/v1/answer", **garbage).status_code == 401  # type: ignore[arg-type]
    login = client.post("/api/v1/login", json={"name": "alice", "password": PASSWORD})
    csrf = {"x-csrf-token": login.json()["csrf_token"]}
    # No or a wrong CSRF token: refused before the (bad) body is looked at.
    assert client.post("/api/v1/answer", **garbage).status_code == 403  # type: ignore[arg-type]
    wrong = {"content-type": "application/json", "x-csrf-token": "x"}
    assert client.post("/api/v1/answer", content=b"{not json", headers=wrong).status_code == 403
    task = client.get("/api/v1/task").json()["task"]
    body = f'{{"assignment_id": {task["assignment_id"]}, "label": "billing"}}'
    # With the token: a body that is not JSON, does not fit, or is sent as a form is a 400.
    for content, kind in [
        ("{not json", "application/json"),
        ('{"assignment_id": "x", "label": "billing"}', "application/json"),
        (body.replace("}", ', "extra": 1}'), "application/json"),
        (body, "text/plain"),
        (body, "application/x-www-form-urlencoded"),
    ]:
        refused = client.post("/api/v1/answer", content=content, headers={**csrf, "content-type": kind})
        assert refused.status_code == 400, (content, kind)
        assert refused.json()["error"]["status"] == 400
    # The right one is recorded, with a JSON subtype or with no content type at all.
    done = client.post("/api/v1/answer", content=body, headers={**csrf, "content-type": "application/json"})
    assert done.status_code == 200 and isinstance(done.json()["annotation_id"], int)
    task = client.get("/api/v1/task").json()["task"]
    bare = client.post(
        "/api/v1/answer", json={"assignment_id": task["assignment_id"], "label": "billing"}, headers=csrf
    )
    assert bare.status_code == 200
    schema = app.openapi()["paths"]["/api/v1/answer"]["post"]["requestBody"]
    assert "assignment_id" in schema["content"]["application/json"]["schema"]["properties"]


# Every POST of the JSON API with a body, and a body that fits it.
BODIES = {
    "/api/v1/skip": {"assignment_id": 1},
    "/api/v1/expert/skip": {"assignment_id": 1},
    "/api/v1/admin/invitations": {"role": "annotator"},
    "/api/v1/admin/accounts": {"name": "dora", "password": PASSWORD},
    "/api/v1/admin/status": {"name": "alice", "status": "active"},
    "/api/v1/expert/synthetic/review": {"item_id": "x", "decision": "accept"},
}


def test_every_body_is_read_only_after_the_caller_is_checked(project: Project) -> None:
    """FastAPI reads a declared body before any dependency: a body that is not JSON was a 400
    before the caller was checked (a refused caller learnt the body's form). Now 401 or 403
    first on every route with a body, then 400 for the caller allowed to post there."""
    add_annotator(project.store, "alice", PASSWORD)
    app = create_app(project)
    paths = app.openapi()["paths"]
    with_body = {path for path, ops in paths.items() if "requestBody" in ops.get("post", {})}
    answering = {"/api/v1/answer", "/api/v1/exam/answer", "/api/v1/expert/answer"}  # the test above
    assert {p for p in with_body if p.startswith("/api/")} == set(BODIES) | answering | {"/api/v1/login"}
    client = TestClient(app)
    garbage = {"content": b"{not json", "headers": {"content-type": "application/json"}}
    for path in BODIES:
        assert client.post(path, **garbage).status_code == 401, path  # type: ignore[arg-type]
    login = client.post("/api/v1/login", json={"name": "alice", "password": PASSWORD})
    csrf = {"x-csrf-token": login.json()["csrf_token"], "content-type": "application/json"}
    for path in BODIES:  # an annotator: not allowed on the expert and admin routes
        refused = client.post(path, content=b"{not json", headers=csrf)
        assert refused.status_code == (400 if path == "/api/v1/skip" else 403), path
        assert client.post(path, json=BODIES[path], headers={"x-csrf-token": "x"}).status_code == 403
    for path, body in BODIES.items():
        fields = paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]
        assert set(body) <= set(fields), path


def test_a_glance_sends_no_begin_and_leaves_the_next_transaction_whole(project: Project) -> None:
    store = project.store
    add_annotator(store, "bob", PASSWORD)
    sent: list[str] = []
    event.listen(store.engine, "before_cursor_execute", lambda *a: sent.append(a[2]))
    with store.glance() as session:
        assert session.scalar(select(Annotator.status).where(Annotator.name == "bob")) == "active"
    assert [s for s in sent if "BEGIN" in s.upper()] == []
    assert len(sent) == 1
    # The connection the glance used goes back to transactions: a write that fails is undone.
    with pytest.raises(RuntimeError), store.write() as session:
        session.execute(update(Annotator).where(Annotator.name == "bob").values(status="suspended"))
        raise RuntimeError("undo")
    with store.read() as session:
        assert session.scalar(select(Annotator.status).where(Annotator.name == "bob")) == "active"
    if store.single_writer:  # SQLite: writes still begin IMMEDIATE after a glance
        assert "BEGIN IMMEDIATE" in sent
