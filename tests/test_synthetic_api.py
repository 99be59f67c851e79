"""The JSON API for reviewing synthetic items (issue 16 item 2): list by review state, label
and leaf with paging, an idempotent accept / reject recording the reviewer and time, and the
acceptance summary; the real app through the test client, on SQLite and PostgreSQL. Which
roles may call the routes is checked by the matrix in test_security.py."""

from __future__ import annotations

from fastapi.testclient import TestClient

from duolabel.people.accounts import add_annotator
from duolabel.synthetic import synthetic_summary
from duolabel.web import create_app
from tests.test_synthetic_review import ITEMS, project  # noqa: F401  (a fixture: erin, an expert, and 5 items)
from tests.web_fixtures import PASSWORD

API = "/api/v1/expert/synthetic"


class Api:
    """A client logged in through ``POST /api/v1/login``; posts carry the CSRF header."""

    def __init__(self, app, name: str) -> None:
        self.client = TestClient(app, follow_redirects=False)
        login = self.client.post("/api/v1/login", json={"name": name, "password": PASSWORD})
        assert login.status_code == 200, login.text
        self.token = login.json()["csrf_token"]

    def get(self, path: str, **params):
        return self.client.get(API + path, params=params)

    def review(self, item_id: str, decision: str, token: str | None = "ok"):
        headers = {"x-csrf-token": self.token if token == "ok" else token} if token is not None else {}
        return self.client.post(
            API + "/review", json={"item_id": item_id, "decision": decision}, headers=headers
        )


def ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def test_the_list_pages_and_filters_by_state_label_and_leaf(project):  # noqa: F811
    erin = Api(create_app(project), "erin")
    first = erin.get("/items").json()
    assert first["total"] == 5 and first["offset"] == 0 and first["limit"] == 50
    assert first["items"][0] == {
        "id": "synthetic-0", "text": ITEMS[0][2], "label": "billing", "leaf": "refunds", "mode": "taxonomy",
        "judged_label": None, "agreement": None, "logprob": None, "review": "pending", "reviewed_by": None,
        "reviewed_at": None,
    }  # fmt: skip
    assert ids(erin.get("/items", offset=2, limit=2)) == ["synthetic-2", "synthetic-3"]
    assert ids(erin.get("/items", offset=4, limit=2)) == ["synthetic-4"]
    assert ids(erin.get("/items", label="billing")) == ["synthetic-0", "synthetic-1", "synthetic-2"]
    assert ids(erin.get("/items", label="billing", leaf="refunds")) == ["synthetic-0", "synthetic-1"]
    assert erin.get("/items", label="shipping", leaf="refunds").json() == {
        "items": [], "total": 0, "offset": 0, "limit": 50,
    }  # fmt: skip
    for params, message in (
        ({"review": "maybe"}, "review 'maybe': one of pending, accepted, rejected, all"),
        ({"label": "nope"}, "label 'nope': not one of billing"),
        ({"limit": 0}, "limit between 1 and 500"),
        ({"offset": -1}, "offset must be >= 0"),
    ):
        bad = erin.get("/items", **params)
        assert bad.status_code == 400 and message in bad.json()["error"]["message"], bad.text


def test_a_decision_records_the_reviewer_and_time_and_is_idempotent(project):  # noqa: F811
    add_annotator(project.store, "ada", PASSWORD, role="admin")
    app = create_app(project)
    erin, ada = Api(app, "erin"), Api(app, "ada")
    accepted = erin.review("synthetic-0", "accept")
    assert accepted.status_code == 200, accepted.text
    first = accepted.json()
    assert (first["item_id"], first["review"], first["reviewed_by"], first["changed"]) == (
        "synthetic-0", "accepted", "erin", True,
    )  # fmt: skip
    assert first["reviewed_at"]
    # The same decision again, even by someone else, changes nothing: the first stays.
    again = ada.review("synthetic-0", "accept").json()
    assert again == {**first, "changed": False}
    assert ada.review("synthetic-1", "reject").json()["reviewed_by"] == "ada"
    changed = ada.review("synthetic-0", "reject").json()  # a new decision replaces the old
    assert (changed["review"], changed["reviewed_by"], changed["changed"]) == ("rejected", "ada", True)

    assert ids(erin.get("/items")) == ["synthetic-2", "synthetic-3", "synthetic-4"]
    rejected = erin.get("/items", review="rejected").json()["items"]
    assert [(i["id"], i["review"], i["reviewed_by"]) for i in rejected] == [
        ("synthetic-0", "rejected", "ada"), ("synthetic-1", "rejected", "ada"),
    ]  # fmt: skip
    assert ids(erin.get("/items", review="all")) == [f"synthetic-{i}" for i in range(5)]

    for item_id, decision, message in (
        ("synthetic-2", "maybe", "decision 'maybe': one of accept, reject"),
        ("nope", "accept", "no synthetic item 'nope'"),
    ):
        bad = erin.review(item_id, decision)
        assert bad.status_code == 400 and bad.json()["error"]["message"] == message
    forged = erin.review("synthetic-2", "accept", token="forged")
    assert forged.status_code == 403 and "did not come from this site" in forged.json()["error"]["message"]
    missing = erin.client.post(
        API + "/review", json={"item_id": "synthetic-2"}, headers={"x-csrf-token": erin.token}
    )
    assert missing.status_code == 400
    assert ids(erin.get("/items")) == ["synthetic-2", "synthetic-3", "synthetic-4"]  # none of those stored


def test_the_summary_counts_per_label_and_leaf_as_the_status_does(project):  # noqa: F811
    erin = Api(create_app(project), "erin")
    for item_id, decision in (("synthetic-0", "accept"), ("synthetic-1", "reject"), ("synthetic-2", "accept"),
                              ("synthetic-3", "reject")):  # fmt: skip
        assert erin.review(item_id, decision).status_code == 200
    summary = erin.get("/summary").json()
    assert summary["total"] == {"items": 5, "pending": 1, "accepted": 2, "rejected": 2, "rate": 0.5}
    assert summary["by_label"] == [
        {"label": "billing", "items": 3, "pending": 0, "accepted": 2, "rejected": 1, "rate": round(2 / 3, 4)},
        {"label": "shipping", "items": 2, "pending": 1, "accepted": 0, "rejected": 1, "rate": 0.0},
    ]
    assert [(r["label"], r["leaf"], r["items"], r["rate"]) for r in summary["by_leaf"]] == [
        ("billing", "invoices", 1, 1.0), ("billing", "refunds", 2, 0.5), ("shipping", "delays", 1, 0.0),
    ]  # fmt: skip
    # The same rates as the status line and the report (synthetic_review.acceptance).
    review = synthetic_summary(project)["review"]
    assert {r["label"]: r["rate"] for r in review["by_label"]} == {
        r["label"]: r["rate"] for r in summary["by_label"]
    }
