"""The pairwise widget in the real Chromium: prompt on top, A and B side by side, keyboard answers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from duolabel.people.accounts import add_annotator
from duolabel.project import Project
from tests import test_browser
from tests.browser import log_in, stored_labels
from tests.test_pairwise import pair_project, routed_pairs
from tests.web_fixtures import PASSWORD

pytestmark = pytest.mark.browser

# The browser fixtures of the first widget's tests, serving this module's project.
page, server_url = test_browser.page, test_browser.server_url

# Responses hold markup and markdown: the page must show them as text, never run them.
PAIRS = [
    ("p0", "Say hello in <i>HTML</i>.", "<b>hello</b><script>window.pwned=1</script>", "**bye**"),
    ("p1", "Count to two.", "1, 2", "one, two, three"),
    ("p2", "Name a colour.", "blue", "a colour"),
    ("p3", "Name a fruit.", "apple", "pear"),
]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    monkeypatch.delenv("DUOLABEL_SECRET", raising=False)
    project = pair_project(tmp_path / "pairs", tie=True, quality={"exam_size": 0, "control_rate": 0.0})
    routed_pairs(project, PAIRS)
    add_annotator(project.store, "alice", PASSWORD)
    try:
        yield project
    finally:
        project.close()


def test_label_pairs_with_a_b_t_and_a_digit(page, project: Project) -> None:
    from playwright.sync_api import expect

    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    log_in(page, "alice")

    prompt, left, right = page.locator("#item-text"), page.locator("#response-a"), page.locator("#response-b")
    expect(prompt).to_have_text("Say hello in <i>HTML</i>.")  # as text, not markup
    expect(left).to_contain_text("<b>hello</b><script>window.pwned=1</script>")
    expect(right).to_contain_text("**bye**")
    assert page.evaluate("window.pwned") is None  # the response's script never ran
    # A beside B: the same height on the page, A to the left.
    box_a, box_b = left.bounding_box(), right.bounding_box()
    assert box_a["x"] < box_b["x"] and abs(box_a["y"] - box_b["y"]) < 2
    assert prompt.bounding_box()["y"] < box_a["y"]  # the prompt on top

    for key, next_prompt in [("b", "Count to two."), ("a", "Name a colour."), ("t", "Name a fruit.")]:
        page.wait_for_load_state("load")
        page.keyboard.press(key)
        expect(prompt).to_have_text(next_prompt)
    page.wait_for_load_state("load")
    page.keyboard.press("2")  # the digit keys work as in the other widgets: 2 is B
    expect(page.get_by_text("Nothing to do right now")).to_be_visible()

    assert stored_labels(project) == {"p0": "B", "p1": "A", "p2": "tie", "p3": "B"}
    assert errors == []
