"""Reviewing synthetic items (issue 16 item 2): reviewers accept or reject them one at a time,
the decision is stored (SQLite and PostgreSQL), a rejected item never trains, and the
acceptance rate per label and per taxonomy leaf is in the summary, the status line and the
report. The items are written straight into the store (what ``duolabel generate`` keeps)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from duolabel.labelers.generation import Generated
from duolabel.ledger import ledger_run
from duolabel.people.accounts import add_annotator
from duolabel.project import Project
from duolabel.store import Annotator, SyntheticItem
from duolabel.synthetic import _store_item, synthetic_status, synthetic_summary
from duolabel.synthetic_review import next_to_review, review_synthetic
from duolabel.training_data import synthetic_training_items
from duolabel.web import create_app
from tests.web_fixtures import PASSWORD, make_project

ITEMS = [  # (label, leaf, text)
    ("billing", "refunds", "I was charged twice for one order and want a refund."),
    ("billing", "refunds", "Please return the money for the cancelled subscription."),
    ("billing", "invoices", "The invoice shows the wrong VAT number."),
    ("shipping", "delays", "My parcel has been stuck in the depot for a week."),
    ("shipping", None, "The courier left the box in the rain."),
]


def add_synthetic(project: Project) -> list[str]:
    ids = []
    with ledger_run(project.store, "generate", {"mode": "taxonomy"}) as run:
        for i, (label, leaf, text) in enumerate(ITEMS):
            item_id = f"synthetic-{i}"
            _store_item(project, run.id, item_id, Generated(text), label=label, mode="taxonomy", leaf=leaf)
            ids.append(item_id)
    return ids


@pytest.fixture
def project(tmp_path: Path, database_url: str | None):
    project = make_project(tmp_path / "proj", database_url=database_url)
    add_annotator(project.store, "erin", PASSWORD, role="expert")
    add_synthetic(project)
    try:
        yield project
    finally:
        project.close()


def reviewer(project: Project) -> int:
    with project.store.read() as session:
        return session.scalar(select(Annotator.id).where(Annotator.name == "erin"))


def test_decisions_are_stored_rejected_items_never_train_and_the_rates_are_reported(project, tmp_path):
    erin = reviewer(project)
    assert next_to_review(project).item_id == "synthetic-0" and next_to_review(project).waiting == 5
    for item_id, decision in (("synthetic-0", "accepted"), ("synthetic-1", "rejected"),
                              ("synthetic-2", "accepted"), ("synthetic-3", "rejected")):  # fmt: skip
        review_synthetic(project, erin, item_id, decision)
    review_synthetic(project, erin, "synthetic-3", "accepted")  # changed her mind
    review_synthetic(project, erin, "synthetic-3", "rejected")
    following = next_to_review(project)
    assert (following.item_id, following.label, following.leaf, following.waiting) == (
        "synthetic-4",
        "shipping",
        None,
        1,
    )
    with project.store.read() as session:
        rows = session.execute(
            select(SyntheticItem.item_id, SyntheticItem.review, SyntheticItem.reviewed_by)
            .order_by(SyntheticItem.item_id)
        ).all()  # fmt: skip
    assert [tuple(r) for r in rows] == [
        ("synthetic-0", "accepted", erin), ("synthetic-1", "rejected", erin),
        ("synthetic-2", "accepted", erin), ("synthetic-3", "rejected", erin), ("synthetic-4", None, None),
    ]  # fmt: skip
    items, labels = synthetic_training_items(project, 0)
    assert [i.id for i in items] == ["synthetic-0", "synthetic-2", "synthetic-4"]
    assert labels == ["billing", "billing", "shipping"]

    review = synthetic_summary(project)["review"]
    assert (review["reviewed"], review["accepted"]) == (4, 2)
    assert review["by_label"] == [
        {"label": "billing", "reviewed": 3, "accepted": 2, "rate": round(2 / 3, 4)},
        {"label": "shipping", "reviewed": 1, "accepted": 0, "rate": 0.0},
    ]
    assert [(r["label"], r["leaf"], r["reviewed"], r["rate"]) for r in review["by_leaf"]] == [
        ("billing", "invoices", 1, 1.0), ("billing", "refunds", 2, 0.5), ("shipping", "delays", 1, 0.0),
    ]  # fmt: skip
    assert "reviewed 4, accepted 2 (billing 67%, shipping 0%)" in synthetic_status(project)

    for item_id in ("synthetic-4", "nope"):
        with pytest.raises(Exception, match="maybe|no synthetic item 'nope'"):
            review_synthetic(project, erin, item_id, "maybe" if item_id != "nope" else "accepted")


@pytest.mark.slow
def test_the_report_shows_the_acceptance_per_label_and_leaf(tmp_path):
    from tests.test_synthetic_roles import _project

    with _project(tmp_path, golden_per_label=3) as project:
        add_annotator(project.store, "erin", PASSWORD, role="expert")
        with ledger_run(project.store, "generate", {"mode": "taxonomy"}) as run:
            _store_item(project, run.id, "synthetic-leaf", Generated("A cookbook of soups from the north."),
                        label="book", mode="taxonomy", leaf="cookbooks")  # fmt: skip
        erin = reviewer(project)
        first = next_to_review(project).item_id
        review_synthetic(project, erin, first, "rejected")
        review_synthetic(project, erin, "synthetic-leaf", "accepted")
        project.label()
        project.calibrate()
        from duolabel.report import write_report

        html = write_report(project, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Reviewers accepted 1 of 2 reviewed synthetic items" in html
    row = '<td>{}</td><td>{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td>'
    assert row.format("book", "(all)", 2, 1, "50%") in html
    assert row.format("book", "cookbooks", 1, 1, "100%") in html


def test_the_page_shows_one_item_and_stores_the_posted_decision(project):
    client = TestClient(create_app(project), follow_redirects=False)
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    client.post("/login", data={"name": "erin", "password": PASSWORD, "csrf_token": token})
    page = client.get("/expert/synthetic").text
    assert "5 synthetic items to review" in page and "refunds" in page and ITEMS[0][2] in page
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)

    def post(csrf_token: str, item_id: str, decision: str):
        data = {"csrf_token": csrf_token, "item_id": item_id, "decision": decision}
        return client.post("/expert/synthetic/review", data=data)

    assert post("x", "synthetic-0", "accepted").status_code == 403
    done = post(token, "synthetic-0", "rejected")
    assert done.status_code == 200 and "4 synthetic items to review" in done.text and ITEMS[1][2] in done.text
    bad = post(token, "synthetic-1", "perhaps")
    assert bad.status_code == 400 and "one of accepted, rejected" in bad.text
    with project.store.read() as session:
        assert session.scalar(select(SyntheticItem.review).where(SyntheticItem.item_id == "synthetic-0")) == (
            "rejected"
        )
