"""The spans widget in a real browser (Playwright driving Debian's Chromium): spans made with the
keyboard and with the mouse, relabelled and deleted, are stored as the JSON list the server
checked; the item's text (which holds markup) stays text. Also the form route without a
browser: a span past the text's end is refused."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sqlalchemy import select

from duolabel.project import Project
from duolabel.store import Annotation
from duolabel.web import create_app
from tests.test_web import Person, assignment_id
from tests.web_fixtures import LABELS, routed_project

# add_routed_items' texts: "text of item-000: my parcel <b>never</b> arrived"
PREFIX = len("text of item-000: ")


def spans_web_project(folder: Path, items: int) -> Project:
    """A spans project with LABELS, ``items`` items routed to one person, and alice."""
    return routed_project(folder, items, "spans")


def test_the_form_posts_spans_as_json_and_the_server_checks_the_offsets(tmp_path: Path):
    project = spans_web_project(tmp_path / "p", 2)
    person = Person(create_app(project))
    person.login("alice")
    try:
        html = person.get("/label").text
        assert '<input type="hidden" name="label" id="span-answer" value="[]">' in html
        keys = re.findall(r'data-span-label="([^"]+)" data-span-key="(\d)"', html)
        assert keys == [(label, str(key)) for key, label in enumerate(LABELS, start=1)]
        assert "&lt;b&gt;never&lt;/b&gt;" in html and "<b>never</b>" not in html
        text_length = len("text of item-000: my parcel <b>never</b> arrived")
        past = [{"start": 0, "end": text_length + 1, "label": "other"}]
        bad = person.post("/answer", assignment_id=assignment_id(html), label=json.dumps(past), seconds="1")
        assert bad.status_code == 400 and "a span inside the item&#39;s text (end &lt;= 48" in bad.text
        good = [{"start": 0, "end": 4, "label": "other"}]
        ok = person.post("/answer", assignment_id=assignment_id(html), label=json.dumps(good), seconds="1")
        assert ok.status_code == 303
        with project.store.read() as session:
            assert session.scalars(select(Annotation.label)).all() == [json.dumps(good)]
    finally:
        person.close()
        project.close()


def _word_centre(page, word: str) -> tuple[float, float]:
    """The screen point in the middle of ``word`` in the item's text."""
    box = page.evaluate(
        """(word) => {
            const shown = document.getElementById("item-text");
            const walker = document.createTreeWalker(shown, NodeFilter.SHOW_TEXT);
            for (let node = walker.nextNode(); node; node = walker.nextNode()) {
                const at = node.textContent.indexOf(word);
                if (at < 0) continue;
                const range = document.createRange();
                range.setStart(node, at);
                range.setEnd(node, at + word.length);
                const r = range.getBoundingClientRect();
                return [r.left, r.top, r.width, r.height];
            }
            return null;
        }""",
        word,
    )
    assert box is not None, word
    left, top, width, height = box
    return left + width / 2, top + height / 2


@pytest.mark.browser
def test_spans_with_keyboard_and_mouse_in_chromium(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from playwright.sync_api import expect

    from tests.browser import first_task, stored_labels, submit_and_wait

    monkeypatch.delenv("DUOLABEL_SECRET", raising=False)
    project = spans_web_project(tmp_path / "p", 3)
    try:
        with first_task(project) as (page, text):
            # the markup in the text stays text
            expect(text).to_contain_text("<b>never</b>")
            assert page.locator("#item-text b").count() == 0

            # Keyboard: "my" is the 7th token (text of item - 000 : my); shift+right adds
            # "parcel"; 2 labels it shipping. Then "arrived" (the last token), 1, Enter.
            for _ in range(7):
                page.keyboard.press("ArrowRight")
            page.keyboard.press("Shift+ArrowRight")
            expect(page.locator("#item-text mark.selecting")).to_have_text("my parcel")
            page.keyboard.press("2")
            expect(page.locator("#span-list li")).to_have_count(1)
            for _ in range(20):  # past the end stays on the last token
                page.keyboard.press("ArrowRight")
            page.keyboard.press("1")
            expect(page.locator("#span-list li")).to_have_count(2)
            submit_and_wait(page, text, "item-001")

            # Mouse: drag over "my parcel" (whole words, however loosely), label it with 3;
            # double-click "never", click the billing button; click the first span and
            # relabel it with 1; double-click "arrived", 2, click it and delete it.
            x0, y0 = _word_centre(page, "my")
            x1, y1 = _word_centre(page, "parcel")
            page.mouse.move(x0, y0)
            page.mouse.down()
            page.mouse.move(x1, y1, steps=5)
            page.mouse.up()
            expect(page.locator("#item-text mark.selecting")).to_have_text("my parcel")
            page.keyboard.press("3")
            page.mouse.dblclick(*_word_centre(page, "never"))
            page.click('button[data-span-label="billing"]')
            expect(page.locator("#span-list li")).to_have_count(2)
            page.locator("#item-text mark.span", has_text="my parcel").first.click()
            page.keyboard.press("1")
            page.mouse.dblclick(*_word_centre(page, "arrived"))
            page.keyboard.press("2")
            expect(page.locator("#span-list li")).to_have_count(3)
            page.locator("#item-text mark.span", has_text="arrived").click()
            page.keyboard.press("Delete")
            expect(page.locator("#span-list li")).to_have_count(2)
            submit_and_wait(page, text, "item-002")
            page.keyboard.press("Enter")  # nothing marked: no span applies
            expect(page.get_by_text("Nothing to do right now")).to_be_visible()
        stored = stored_labels(project)
        never = PREFIX + len("my parcel <b>")
        arrived = PREFIX + len("my parcel <b>never</b> ")
        assert {k: json.loads(v) for k, v in stored.items()} == {
            "item-000": [
                {"start": PREFIX, "end": PREFIX + 9, "label": "shipping"},
                {"start": arrived, "end": arrived + 7, "label": "billing"},
            ],
            "item-001": [
                {"start": PREFIX, "end": PREFIX + 9, "label": "billing"},
                {"start": never, "end": never + 5, "label": "billing"},
            ],
            "item-002": [],
        }
        assert page.errors == []  # the strict CSP lets the scripts run and nothing else fails
    finally:
        project.close()
