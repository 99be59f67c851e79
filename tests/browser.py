"""Shared steps of the Chromium tests: a page on the project's app served by uvicorn, logging in,
and checked screenshots (one copy instead of one per widget's test file)."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from duolabel.project import Project
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, _serve
from tests.web_fixtures import PASSWORD


@contextmanager
def chromium_page(project: Project, **context: Any) -> Iterator[Any]:
    """A Playwright page in the real Chromium on ``project``'s app, its ``errors`` collecting what
    the strict CSP or a broken script reports (page errors and console errors)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get update && apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    served = _serve(project)
    url = next(served)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_context(base_url=url, **context).new_page()
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
                page.errors = errors
                yield page
            finally:
                browser.close()
    finally:
        served.close()  # stops uvicorn


def log_in(page: Any, name: str) -> None:
    page.goto("/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")


def shot(page: Any, path: Path) -> Path:
    """Save a full-page screenshot and check it is a real, non-trivial PNG."""
    page.screenshot(path=str(path), full_page=True)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 800 and height >= 300 and len(data) > 10_000, (width, height, len(data))
    return path


@contextmanager
def first_task(project: Project, name: str = "alice") -> Iterator[tuple[Any, Any]]:
    """``name`` logged in on ``project``'s app in Chromium, on the page of the first task
    (``item-000`` of the web fixtures), once the page has loaded: keys pressed before label.js
    has run would be lost. Yields the page and the task's text locator."""
    from playwright.sync_api import expect

    with chromium_page(project) as page:
        log_in(page, name)
        text = page.locator("#item-text")
        expect(text).to_contain_text("text of item-000")
        page.wait_for_load_state("load")
        yield page, text


def submit_and_wait(page: Any, text: Any, next_item: str) -> None:
    """Press Enter and wait until the page of ``next_item`` has loaded."""
    from playwright.sync_api import expect

    page.keyboard.press("Enter")
    expect(text).to_contain_text(f"text of {next_item}")
    page.wait_for_load_state("load")


def stored_labels(project: Project) -> dict[str, str]:
    """Every stored answer's label by item id (the web fixtures have one annotator)."""
    from sqlalchemy import select

    from duolabel.store import Annotation

    with project.store.read() as session:
        return dict(session.execute(select(Annotation.item_id, Annotation.label)).all())
