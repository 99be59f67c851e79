"""The web app's hot path (issue 12 item 15): what is kept between requests must never go stale.

Only SQL statements are built once per process (and binomial intervals, a pure function, are
remembered); no account, session or setting is kept between requests. This test makes changes
through other paths (a second server process's store, the CLI's functions) and checks that
every worker sees them at once.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from duolabel.people.accounts import add_annotator, set_status
from duolabel.project import Project
from duolabel.web import create_app
from tests.web_fixtures import PASSWORD, add_routed_items, make_project


def _log_in(client: TestClient, name: str) -> dict[str, str]:
    response = client.post("/api/v1/login", json={"name": name, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return {"x-csrf-token": response.json()["csrf_token"]}


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("DUOLABEL_SECRET", raising=False)
    return tmp_path / "proj"


def test_a_change_made_elsewhere_is_seen_by_every_worker_at_once(
    folder: Path, database_url: str | None
) -> None:
    # Two "workers": two apps, each on its own opened project (its own engine and caches).
    project = make_project(folder, database_url=database_url)
    add_routed_items(project, 4, overlap=1)
    add_annotator(project.store, "alice", PASSWORD)
    other = Project.open(folder)
    cli = Project.open(folder)
    try:
        first = TestClient(create_app(project))
        second = TestClient(create_app(other))
        headers = _log_in(first, "alice")
        second.cookies.update(first.cookies)  # no sticky sessions: any worker takes the cookie
        task = second.get("/api/v1/task").json()["task"]
        assert task is not None
        assert first.get("/api/v1/task").json()["task"]["assignment_id"] == task["assignment_id"]
        body = {"assignment_id": task["assignment_id"], "label": "billing"}
        answered = first.post("/api/v1/answer", json=body, headers=headers)
        assert answered.status_code == 200
        # The next task comes from the other worker and is another item.
        again = second.get("/api/v1/task").json()["task"]
        assert again is not None and again["assignment_id"] != task["assignment_id"]

        set_status(cli.store, "alice", "suspended")  # `duolabel annotators set-status`, another process
        for client in (first, second):
            assert client.get("/api/v1/task").status_code == 401
        # Reactivated elsewhere: her session is gone (suspension ended it on the server, or the
        # cookie was emptied), never served from something a worker kept.
        set_status(cli.store, "alice", "active")
        headers = _log_in(first, "alice")
        second.cookies.update(first.cookies)
        assert second.get("/api/v1/me").status_code == 200
        assert first.post("/api/v1/logout", headers=headers).status_code == 200
        assert second.get("/api/v1/me").status_code == 401  # logged out on one worker: out on all
    finally:
        other.close()
        cli.close()
        project.close()
