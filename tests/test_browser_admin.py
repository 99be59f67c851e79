"""The annotator's page and the admin item browser in the real Chromium (Playwright) against a
real uvicorn (issue 15 items 6 and 7): each flow saves a screenshot under tmp_path as evidence,
and the assertions on the page and in the store are the test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from duolabel.people.accounts import add_annotator
from duolabel.project import Project
from duolabel.store import Annotation, Annotator, ExpertTask, FinalLabel
from tests.browser import chromium_page, log_in, shot
from tests.web_fixtures import PASSWORD
from tests.webui_fixtures import fielded_project

pytestmark = pytest.mark.browser


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    monkeypatch.delenv("DUOLABEL_SECRET", raising=False)
    project = fielded_project(tmp_path / "proj", overlap=2)
    add_annotator(project.store, "bob", PASSWORD)
    try:
        yield project
    finally:
        project.close()


@pytest.fixture
def page(project: Project) -> Iterator[object]:
    with chromium_page(project, viewport={"width": 1100, "height": 900}) as page:
        yield page


def test_label_with_unsure_and_a_comment(page, project: Project, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    log_in(page, "alice")
    text = page.locator("#item-text")
    expect(text.locator(".field-name")).to_have_text(["title", "body"])  # one block per field
    expect(text.locator("mark")).to_have_text(["Ibuprofen", "hives"])  # the item's terms
    expect(page.locator("#left")).to_contain_text("2 left in this batch")
    page.check("#unsure")
    page.fill("#comment", "2 readings; see the title")  # digits typed here choose no label
    expect(page.locator("#item-text")).to_contain_text("Case two")
    shot(page, tmp_path / "annotator.png")
    page.get_by_role("button", name="other").click()
    expect(page.locator("#item-text")).to_contain_text("Case three")
    expect(page.locator("#left")).to_contain_text("1 left in this batch")
    with project.store.read() as session:
        rows = session.execute(
            select(Annotation.item_id, Annotation.label, Annotation.unsure, Annotation.comment)
        ).all()
    assert [tuple(row) for row in rows] == [("r2", "other", True, "2 readings; see the title")]
    page.wait_for_load_state("load")
    page.keyboard.press("1")  # no note this time: the keyboard path still works
    expect(page.get_by_text("Nothing to do right now")).to_be_visible()
    with project.store.read() as session:
        last = session.execute(
            select(Annotation.unsure, Annotation.comment).where(Annotation.item_id == "r3")
        ).one()
    assert tuple(last) == (None, None)
    assert page.errors == []


def test_admin_searches_opens_corrects_and_aggregates(page, project: Project, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    for name, labels in (("alice", ("2", "3")), ("bob", ("2", "1"))):  # r2 unanimous, r3 split
        log_in(page, name)
        for left, key in zip((2, 1), labels, strict=True):
            expect(page.locator("#left")).to_contain_text(f"{left} left in this batch")
            page.wait_for_load_state("load")  # label.js listens for keys only once it has run
            page.keyboard.press(key)
        expect(page.get_by_text("Nothing to do right now")).to_be_visible()
        page.click(".logout button")

    log_in(page, "ada")
    page.click("#items-link")
    expect(page.locator("#found")).to_have_text("4 items found")
    expect(page.locator("#charts svg")).to_have_count(2)  # answers over time, per annotator
    expect(page.locator("#charts")).to_contain_text("Accuracy on controls")
    page.fill("#filter-text", "nausea")
    page.select_option("#filter-route", "humans")
    page.select_option("#filter-agreement", "split")
    page.click("#search")
    expect(page.locator("#found")).to_have_text("1 item found")
    expect(page.locator("#items tbody tr")).to_have_count(1)
    expect(page.locator("#items")).to_contain_text("Paracetamol")
    shot(page, tmp_path / "search.png")

    page.get_by_role("link", name="r3").click()
    expect(page.locator("h1")).to_have_text("Item r3")
    expect(page.locator("#answers tbody tr")).to_have_count(2)
    expect(page.locator("#final")).to_have_text("No final label yet.")
    expect(page.locator("#history")).to_contain_text("routed: humans (overlap 2)")
    page.select_option("#correct-label", "billing")
    page.fill("#correct-comment", "checked the record")
    page.click("#correct-submit")
    expect(page.locator("#message")).to_contain_text("The final label is now billing (expert)")
    expect(page.locator("#final")).to_contain_text("billing")
    expect(page.locator("#answers")).to_contain_text("checked the record")
    expect(page.locator("#history")).to_contain_text("expert answer by ada: billing")
    shot(page, tmp_path / "item.png")

    page.click("#items-link")
    page.click("#aggregate button")
    expect(page.locator("#message")).to_contain_text("Aggregated:")
    expect(page.locator("#items")).to_contain_text("shipping")  # r2's final label, from the crowd
    shot(page, tmp_path / "aggregated.png")
    page.click("#audit button")
    expect(page.locator("#message")).to_contain_text("Audit drawn:")
    expect(page.locator("#message")).to_contain_text("put in the experts' queue")
    with project.store.read() as session:
        finals = dict(session.execute(select(FinalLabel.item_id, FinalLabel.source)).all())
        ada = session.scalar(select(Annotator.id).where(Annotator.name == "ada"))
        correction = session.execute(
            select(Annotation.label, Annotation.kind, Annotation.comment).where(
                Annotation.annotator_id == ada
            )
        ).one()
    assert finals["r3"] == "expert" and finals["r2"] in ("humans", "fused")
    assert tuple(correction) == ("billing", "expert", "checked the record")
    with project.store.read() as session:
        drawn = session.scalars(select(ExpertTask.item_id).where(ExpertTask.reason == "audit")).all()
    assert drawn  # the button put shipped labels in the experts' queue
    assert page.errors == []
