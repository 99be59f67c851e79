"""Security of the web app: every role/route pair, CSRF on every POST, login throttling,
session fixation, password storage."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from duolabel.people.accounts import add_annotator
from duolabel.project import Project
from duolabel.store import Annotator, LoginFailure
from duolabel.web import create_app
from duolabel.web.app import SESSION_COOKIE
from tests.web_fixtures import PASSWORD, add_gold_items, add_routed_items, make_project

PERSONAS = ("anonymous", "onboarding", "annotator", "expert", "admin")
WORKER = {"annotator"}
EXPERTS = {"expert", "admin"}
LOGGED_IN = {"onboarding", "annotator", "expert", "admin"}
EXAM_RESULT = {"onboarding", "annotator"}
PUBLIC = set(PERSONAS)

# Who may use each route. A route added to the app without a line here fails
# test_every_route_is_in_the_matrix.
MATRIX: dict[tuple[str, str], set[str]] = {
    ("GET", "/login"): PUBLIC,
    ("POST", "/login"): PUBLIC,
    ("POST", "/logout"): PUBLIC,
    ("GET", "/invite/{token}"): PUBLIC,
    ("POST", "/invite/{token}"): PUBLIC,
    ("POST", "/api/v1/login"): PUBLIC,
    ("GET", "/"): LOGGED_IN,
    ("GET", "/help"): LOGGED_IN,
    ("GET", "/api/v1/me"): LOGGED_IN,
    ("GET", "/api/v1/labels"): LOGGED_IN,
    ("POST", "/api/v1/logout"): LOGGED_IN,
    ("GET", "/label"): WORKER,
    ("GET", "/task/{assignment_id}"): WORKER,
    ("POST", "/answer"): WORKER,
    ("POST", "/skip"): WORKER,
    ("POST", "/undo"): WORKER,
    ("GET", "/api/v1/task"): WORKER,
    ("GET", "/api/v1/task/{assignment_id}"): WORKER,
    ("POST", "/api/v1/answer"): WORKER,
    ("POST", "/api/v1/skip"): WORKER,
    ("POST", "/api/v1/undo"): WORKER,
    ("GET", "/exam"): {"onboarding"},
    ("POST", "/exam/answer"): {"onboarding"},
    ("POST", "/exam/retry"): {"onboarding"},
    ("GET", "/api/v1/exam/task"): {"onboarding"},
    ("POST", "/api/v1/exam/answer"): {"onboarding"},
    ("POST", "/api/v1/exam/retry"): {"onboarding"},
    ("GET", "/exam/result"): EXAM_RESULT,
    ("GET", "/api/v1/exam/result"): EXAM_RESULT,
    ("GET", "/expert"): EXPERTS,
    ("GET", "/expert/next"): EXPERTS,
    ("POST", "/expert/answer"): EXPERTS,
    ("GET", "/api/v1/expert/tasks"): EXPERTS,
    ("GET", "/api/v1/expert/task"): EXPERTS,
    ("POST", "/api/v1/expert/answer"): EXPERTS,
    ("POST", "/expert/skip"): EXPERTS,
    ("POST", "/api/v1/expert/skip"): EXPERTS,
    ("GET", "/expert/synthetic"): EXPERTS,
    ("POST", "/expert/synthetic/review"): EXPERTS,
    ("GET", "/api/v1/expert/synthetic/items"): EXPERTS,
    ("POST", "/api/v1/expert/synthetic/review"): EXPERTS,
    ("GET", "/api/v1/expert/synthetic/summary"): EXPERTS,
    ("GET", "/admin"): {"admin"},
    ("GET", "/admin/tables"): {"admin"},
    ("GET", "/admin/{name}.csv"): {"admin"},
    ("POST", "/admin/invite"): {"admin"},
    ("POST", "/admin/accounts"): {"admin"},
    ("POST", "/admin/status"): {"admin"},
    ("GET", "/api/v1/admin/tables"): {"admin"},
    ("GET", "/admin/items"): {"admin"},
    ("GET", "/admin/item"): {"admin"},
    ("POST", "/admin/item/label"): {"admin"},
    ("POST", "/admin/aggregate"): {"admin"},
    ("POST", "/admin/audit"): {"admin"},
    ("GET", "/api/v1/admin/tables/{name}"): {"admin"},
    ("POST", "/api/v1/admin/invitations"): {"admin"},
    ("POST", "/api/v1/admin/accounts"): {"admin"},
    ("POST", "/api/v1/admin/status"): {"admin"},
}
# Logging out would end the shared sessions; they have tests of their own.
NOT_REPLAYED = {
    ("POST", "/logout"),
    ("POST", "/api/v1/logout"),
    ("POST", "/login"),
    ("POST", "/api/v1/login"),
}
PARAMS = {"{token}": "not-a-token", "{assignment_id}": "1", "{name}": "progress"}


def csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found
    return found.group(1)


class Browser:
    def __init__(self, app: Any, name: str | None) -> None:
        self.client = TestClient(app, follow_redirects=False)
        self.token = csrf(self.client.get("/login").text)
        if name is not None:
            response = self.client.post(
                "/login", data={"name": name, "password": PASSWORD, "csrf_token": self.token}
            )
            assert response.status_code == 303, response.text
            self.token = csrf(self.client.get("/help").text)

    def call(self, method: str, path: str, *, token: str | None = "ok") -> Any:
        token = self.token if token == "ok" else token
        if path.startswith("/api/"):
            headers = {} if token is None else {"x-csrf-token": token}
            body = {} if method == "POST" else None
            return self.client.request(method, path, json=body, headers=headers)
        data = {} if token is None else {"csrf_token": token}
        return self.client.request(method, path, data=data if method == "POST" else None)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Browser]]:
    folder = tmp_path_factory.mktemp("security") / "proj"
    project = make_project(folder, quality={"exam_size": 2})
    add_routed_items(project, 5, overlap=2)
    add_gold_items(project, 6)
    for persona, role, status in (
        ("onboarding", "annotator", "onboarding"),
        ("annotator", "annotator", "active"),
        ("expert", "expert", "active"),
        ("admin", "admin", "active"),
    ):
        add_annotator(project.store, persona, PASSWORD, role=role, status=status)
    app = create_app(project)
    browsers = {persona: Browser(app, None if persona == "anonymous" else persona) for persona in PERSONAS}
    try:
        yield browsers
    finally:
        project.close()


def concrete(path: str) -> str:
    for param, value in PARAMS.items():
        path = path.replace(param, value)
    return path


def test_every_route_is_in_the_matrix(site: dict[str, Browser]) -> None:
    app = site["admin"].client.app

    def flat(routes: list[Any]) -> Iterator[Any]:
        for route in routes:
            router = getattr(route, "original_router", None)  # FastAPI's included routers
            yield from flat(router.routes) if router is not None else [route]

    routes = {
        (method, route.path)
        for route in flat(app.routes)
        if getattr(route, "methods", None) and not route.path.startswith("/static")
        for method in route.methods - {"HEAD"}
    }
    assert routes == set(MATRIX)


@pytest.mark.parametrize(("method", "path"), sorted(set(MATRIX) - NOT_REPLAYED))
def test_role_route_pairs(site: dict[str, Browser], method: str, path: str) -> None:
    allowed = MATRIX[(method, path)]
    for persona in PERSONAS:
        response = site[persona].call(method, concrete(path))
        refused = response.status_code in (401, 403) or (
            response.status_code == 303 and response.headers["location"] == "/login"
        )
        assert refused is (persona not in allowed), (persona, response.status_code, response.text[:200])
        if persona == "anonymous" and refused:
            expected = 401 if path.startswith("/api/") else 303
            assert response.status_code == expected
        elif refused:
            assert response.status_code == 403
            if path.startswith("/api/"):
                assert response.json()["error"]["type"] == "AccessError"


POSTS = sorted((m, p) for m, p in MATRIX if m == "POST" and (m, p) not in {("POST", "/api/v1/login")})


@pytest.mark.parametrize(("method", "path"), POSTS)
@pytest.mark.parametrize("token", [None, "", "forged-token"])
def test_posts_without_the_csrf_token_are_refused(
    site: dict[str, Browser], method: str, path: str, token: str | None
) -> None:
    persona = (
        next(p for p in PERSONAS if p in MATRIX[(method, path)] and p != "anonymous")
        if (MATRIX[(method, path)] != PUBLIC)
        else "annotator"
    )
    response = site[persona].call(method, concrete(path), token=token)
    assert response.status_code == 403
    text = response.json()["error"]["message"] if path.startswith("/api/") else response.text
    assert "did not come from this site" in text


def test_api_posts_must_be_json(site: dict[str, Browser]) -> None:
    """A cross-site HTML form cannot reach the API: form bodies are refused."""
    browser = site["annotator"]
    response = browser.client.post(
        "/api/v1/answer",
        data={"assignment_id": "1", "label": "billing"},
        headers={"x-csrf-token": browser.token},
    )
    assert response.status_code == 400 and response.json()["error"]["status"] == 400


# -- logins -------------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    monkeypatch.delenv("DUOLABEL_SECRET", raising=False)
    project = make_project(tmp_path / "proj", web={"login_max_failures": 3})
    add_routed_items(project, 2, overlap=1)
    add_annotator(project.store, "alice", PASSWORD)
    add_annotator(project.store, "mallory", PASSWORD + "!")
    try:
        yield project
    finally:
        project.close()


def login(client: TestClient, name: str, password: str) -> Any:
    token = csrf(client.get("/login").text)
    return client.post("/login", data={"name": name, "password": password, "csrf_token": token})


def test_passwords_are_stored_only_as_argon2_hashes(project: Project) -> None:
    with project.store.read() as session:
        rows = session.execute(select(Annotator.__table__)).mappings().all()
    for row in rows:
        assert row["password_hash"].startswith("$argon2id$")
        assert not any(PASSWORD in str(value) for value in row.values())


def test_login_brute_force_is_slowed(project: Project) -> None:
    app = create_app(project)
    client = TestClient(app, follow_redirects=False)
    for _ in range(3):
        assert login(client, "alice", "guess-guess").status_code == 401
    with project.store.write() as session:  # the first wait is 1 s: make it last the test
        for failure in session.scalars(select(LoginFailure).where(LoginFailure.blocked_until.is_not(None))):
            failure.blocked_until += timedelta(hours=1)
    blocked = login(client, "alice", PASSWORD)  # even the right password must wait, for now
    assert blocked.status_code == 429 and "too many failed logins; try again in" in blocked.text
    neighbour = TestClient(app, follow_redirects=False)  # the same address, another account
    assert login(neighbour, "mallory", PASSWORD + "!").status_code == 303
    api = client.post("/api/v1/login", json={"name": "alice", "password": PASSWORD})
    assert api.status_code == 429 and api.json()["error"]["status"] == 429
    with project.store.write() as session:  # the wait passes
        for failure in session.scalars(select(LoginFailure)):
            failure.blocked_until = None
    assert login(client, "alice", PASSWORD).status_code == 303


def test_session_fixation_is_prevented(project: Project) -> None:
    app = create_app(project)
    attacker = TestClient(app, follow_redirects=False)
    assert login(attacker, "mallory", PASSWORD + "!").status_code == 303
    planted = attacker.cookies[SESSION_COOKIE]
    victim = TestClient(app, follow_redirects=False)
    victim.cookies.set(SESSION_COOKIE, planted)  # the attacker's cookie in the victim's browser
    token = csrf(victim.get("/help").text)
    form = {"name": "alice", "password": PASSWORD, "csrf_token": token}
    response = victim.post("/login", data=form)
    assert response.status_code == 303
    fresh = response.cookies[SESSION_COOKIE]
    assert fresh != planted  # a new session at login
    alice = TestClient(app, follow_redirects=False)
    alice.cookies.set(SESSION_COOKIE, fresh)
    assert alice.get("/api/v1/me").json()["name"] == "alice"
    replay = TestClient(app, follow_redirects=False)
    replay.cookies.set(SESSION_COOKIE, planted)
    assert replay.get("/api/v1/me").status_code == 401  # the planted session is gone, not alice's


def test_logout_ends_the_session_on_the_server(project: Project) -> None:
    app = create_app(project)
    client = TestClient(app, follow_redirects=False)
    login(client, "alice", PASSWORD)
    stolen = client.cookies[SESSION_COOKIE]
    token = csrf(client.get("/help").text)
    response = client.post("/logout", data={"csrf_token": token})
    assert response.status_code == 303 and response.headers["location"] == "/login"
    thief = TestClient(app, follow_redirects=False)
    thief.cookies.set(SESSION_COOKIE, stolen)
    assert thief.get("/label").headers["location"] == "/login"


def test_wrong_password_or_name_is_refused_alike(project: Project) -> None:
    client = TestClient(create_app(project), follow_redirects=False)
    for name, password in (("alice", "wrong password"), ("nobody", PASSWORD)):
        response = login(client, name, password)
        assert response.status_code == 401 and "wrong name or password" in response.text
    assert client.get("/").status_code == 303


# -- stored XSS -----------------------------------------------------------------------------

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'


def test_text_fields_and_marked_terms_cannot_inject_markup(tmp_path: Path) -> None:
    """A text field, a field name and a highlight term holding HTML are shown as text, inside
    the <mark> the page adds and outside it (issue 15 item 6)."""
    from duolabel.store import Route, Run

    project = make_project(tmp_path / "proj", task={"text_fields": ["title", "body"], "highlight": ["term"]})
    path = tmp_path / "items.csv"
    quoted = IMG.replace('"', '""')  # CSV quoting
    path.write_text(
        f'id,title,body,term\nx1,"{SCRIPT}","before {quoted} after <b>bold</b>","{quoted}|<b>"\n',
        encoding="utf-8",
    )
    project.import_file(path)
    with project.store.write() as session:
        run = Run(kind="route")
        session.add(run)
        session.flush()
        session.add(Route(item_id="x1", decision="humans", overlap=1, policy_version="t", run_id=run.id))
    add_annotator(project.store, "alice", PASSWORD)
    alice = Browser(create_app(project), "alice")
    html = alice.client.get("/label", follow_redirects=True).text
    assert "<script>alert" not in html and "<img src=x" not in html and "<b>bold" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<mark>&#34;&gt;&lt;img src=x onerror=alert(1)&gt;</mark>" in html
    assert "<mark>&lt;b&gt;</mark>bold" in html
    project.close()
