"""The annotation app in the real Chromium, driven by Playwright, against a real uvicorn."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from duolabel.accounts import add_annotator
from duolabel.project import Project
from duolabel.store import Annotation, Annotator
from duolabel.web import create_app
from tests.web_fixtures import PASSWORD, add_routed_items, make_project

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    monkeypatch.delenv("DUOLABEL_SECRET", raising=False)
    project = make_project(tmp_path / "proj")
    add_routed_items(project, 3, overlap=1, gold="billing")
    add_annotator(project.store, "alice", PASSWORD)
    try:
        yield project
    finally:
        project.close()


@pytest.fixture
def server_url(project: Project) -> Iterator[str]:
    """The app served by uvicorn on a free loopback port, in a background thread."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(project), log_level="warning", access_log=False, ws="none", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture
def page(server_url: str) -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get update && apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(base_url=server_url)
            yield context.new_page()
        finally:
            browser.close()


def test_log_in_and_label_with_a_digit_key(page, project: Project) -> None:
    from playwright.sync_api import expect

    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status == 404 else None)

    page.goto("/")
    expect(page).to_have_url("/login")  # every page but /login needs a login
    page.fill("input[name=name]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")

    text = page.locator("#item-text")
    expect(text).to_contain_text("text of item-000")
    expect(text).to_contain_text("my parcel <b>never</b> arrived")  # shown as text, not markup
    expect(page.locator("#answers")).to_have_text("0")
    page.wait_for_timeout(300)  # so the measured time is clearly above zero

    page.keyboard.press("2")  # the second label: shipping
    expect(text).to_contain_text("text of item-001")
    expect(page.locator("#answers")).to_have_text("1")

    with project.store.read() as session:
        rows = session.execute(
            select(Annotation.item_id, Annotator.name, Annotation.label, Annotation.seconds).join(
                Annotator, Annotator.id == Annotation.annotator_id
            )
        ).all()
    assert [row[:3] for row in rows] == [("item-000", "alice", "shipping")]
    assert rows[0].seconds is not None and 0.2 < rows[0].seconds < 60

    page.keyboard.press("3")
    expect(text).to_contain_text("text of item-002")
    page.keyboard.press("1")
    expect(page.get_by_text("Nothing to do right now")).to_be_visible()
    assert "billing" not in page.locator("main").inner_text()  # no labels, no gold when empty
    assert errors == []  # the strict CSP lets our script run and nothing else fails
