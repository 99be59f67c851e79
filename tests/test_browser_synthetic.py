"""The synthetic review page in the real Chromium (Playwright) against a real uvicorn (issue 16
item 2): an expert reviews synthetic items with the keyboard (a accepts, r rejects), the
decisions are in the store, and a screenshot of the page is saved and checked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from duolabel.project import Project
from duolabel.store import SyntheticItem
from duolabel.training_data import synthetic_training_items
from tests.browser import log_in, shot
from tests.test_browser_admin import page  # noqa: F401  (a fixture)
from tests.test_synthetic_review import ITEMS, add_synthetic
from tests.webui_fixtures import fielded_project

pytestmark = pytest.mark.browser


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    monkeypatch.delenv("DUOLABEL_SECRET", raising=False)
    project = fielded_project(tmp_path / "proj")
    add_synthetic(project)
    try:
        yield project
    finally:
        project.close()


def test_an_expert_reviews_synthetic_items_with_the_keyboard(page, project: Project, tmp_path: Path) -> None:  # noqa: F811
    from playwright.sync_api import expect

    log_in(page, "erin")
    page.click("#synthetic-review")
    expect(page.locator("h1")).to_have_text("Synthetic review")
    expect(page.locator("#waiting")).to_contain_text("5 synthetic items to review")
    expect(page.locator("#intended")).to_contain_text("billing")
    expect(page.locator("#leaf")).to_have_text("refunds")
    expect(page.locator("#item-text")).to_have_text(ITEMS[0][2])
    shot(page, tmp_path / "synthetic-review.png")
    for left, key in zip((5, 4, 3), ("a", "r", "a"), strict=True):
        expect(page.locator("#waiting")).to_contain_text(f"{left} synthetic items to review")
        page.wait_for_load_state("load")  # label.js listens for keys only once it has run
        page.keyboard.press(key)
    expect(page.locator("#waiting")).to_contain_text("2 synthetic items to review")
    expect(page.locator("#item-text")).to_have_text(ITEMS[3][2])
    expect(page.locator("#acceptance")).to_contain_text("refunds")
    shot(page, tmp_path / "synthetic-reviewed.png")
    with project.store.read() as session:
        reviews = dict(session.execute(select(SyntheticItem.item_id, SyntheticItem.review)).all())
    assert reviews == {
        "synthetic-0": "accepted",
        "synthetic-1": "rejected",
        "synthetic-2": "accepted",
        "synthetic-3": None,
        "synthetic-4": None,
    }
    trained = [item.id for item in synthetic_training_items(project, 0)[0]]
    assert "synthetic-1" not in trained and len(trained) == 4
    assert page.errors == []
