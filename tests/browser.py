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
