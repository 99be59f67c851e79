"""The annotation app in the real Chromium, driven by Playwright, against a real uvicorn."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from duolabel.people.accounts import add_annotator
from duolabel.people.leases import lease_task
from duolabel.project import Project
from duolabel.store import Annotation, Annotator, Item
from duolabel.web import create_app
from tests.web_fixtures import LABELS, PASSWORD, add_gold_items, add_routed_items, make_project

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
    yield from _serve(project)


def _serve(project: Project) -> Iterator[str]:
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


# -- the whole journey of an annotator, watched by an admin ------------------------------


@pytest.fixture
def journey(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    monkeypatch.delenv("DUOLABEL_SECRET", raising=False)
    quality = {
        "exam_size": 2,
        "pass_mark": 0.5,
        "exam_retries": 0,
        "control_rate": 1.0,
        "min_controls": 2,
        "min_control_accuracy": 0.9,
    }
    project = make_project(tmp_path / "journey", quality=quality)
    add_gold_items(project, 3)  # gold-000, gold-001: the exam; gold-002: a control
    add_routed_items(project, 6, overlap=1)
    add_annotator(project.store, "root", PASSWORD, role="admin")
    add_annotator(project.store, "bob", PASSWORD)
    try:
        yield project
    finally:
        project.close()


@pytest.fixture
def journey_url(journey: Project) -> Iterator[str]:
    yield from _serve(journey)


@pytest.fixture
def browser(journey_url: str) -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get update && apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield lambda: chromium.new_context(base_url=journey_url).new_page()
        finally:
            chromium.close()


def _shown_gold(project: Project, page) -> tuple[str, str]:
    """The text on screen and the gold label of that item, looked up in the store (as a cheat would)."""
    # The keyboard shortcuts exist once label.js has run: wait for the page's load event, or a
    # key pressed on a busy machine reaches a page without its handlers.
    page.wait_for_load_state("load")
    text = page.locator("#item-text").inner_text()
    with project.store.read() as session:
        gold = session.scalar(select(Item.gold_label).where(Item.text == text))
    return text, gold


def _key(label: str) -> str:
    return str(LABELS.index(label) + 1)


def _accuracy_cell(admin) -> str:
    admin.goto("/admin")
    row = admin.locator("#table-annotators tbody tr", has_text="carol")
    return row.locator("td").nth(5).inner_text()


def test_invitation_exam_keyboard_controls_and_suspension(browser, journey: Project) -> None:
    from playwright.sync_api import expect

    admin = browser()
    admin.goto("/login")
    admin.fill("input[name=name]", "root")
    admin.fill("input[name=password]", PASSWORD)
    admin.click("button[type=submit]")
    expect(admin).to_have_url("/admin")
    admin.select_option("select[name=role] >> nth=0", "annotator")
    admin.click("text=Create invitation link")
    link = admin.locator("#invitation-link").input_value()
    assert "/invite/" in link

    carol = browser()
    errors: list[str] = []
    carol.on("pageerror", lambda exc: errors.append(str(exc)))
    carol.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    carol.goto(link)
    carol.fill("input[name=name]", "carol")
    carol.fill("input[name=password]", PASSWORD)
    carol.click("button[type=submit]")
    expect(carol).to_have_url("/exam")
    carol.click("text=Log out")
    expect(carol).to_have_url("/login")
    carol.fill("input[name=name]", "carol")
    carol.fill("input[name=password]", PASSWORD)
    carol.click("button[type=submit]")
    expect(carol).to_have_url("/exam")

    # The exam: one right, one wrong (pass mark 50%), answered with the keyboard.
    for right in (True, False):
        expect(carol.locator(".banner")).to_contain_text("Onboarding exam")
        text, gold = _shown_gold(journey, carol)
        label = gold if right else next(x for x in LABELS if x != gold)
        carol.keyboard.press(_key(label))
        if right:
            expect(carol.locator("#item-text")).not_to_have_text(text)
    expect(carol).to_have_url("/exam/result")
    expect(carol.locator("#exam-verdict")).to_contain_text("You passed")
    expect(carol.locator("table.review")).to_contain_text("known text gold-001")  # the exam's answers

    # Work: the control first (rate 1), answered right; then regular items by keyboard.
    carol.click("text=Start labelling")
    text, gold = _shown_gold(journey, carol)
    assert text == "known text gold-002"
    source = carol.content()
    assert "control" not in source.lower() and "gold" not in source.replace(text, "").lower()
    carol.keyboard.press(_key(gold))
    expect(carol.locator("#item-text")).to_contain_text("text of item-000")
    assert _accuracy_cell(admin) == "1.000"
    carol.keyboard.press("2")
    expect(carol.locator("#item-text")).to_contain_text("text of item-001")
    carol.keyboard.press("s")  # skip item-001
    expect(carol.locator("#item-text")).to_contain_text("text of item-002")
    carol.keyboard.press("3")
    expect(carol.locator("#answers")).to_have_text("3")
    carol.keyboard.press("u")  # undo: item-002 comes back
    expect(carol.locator("#item-text")).to_contain_text("text of item-002")
    expect(carol.locator("#answers")).to_have_text("2")
    carol.keyboard.press("?")
    expect(carol.locator("#instructions .label-help")).to_be_visible()
    carol.keyboard.press("1")
    expect(carol.locator("#item-text")).to_contain_text("text of item-003")

    # What carol must not reach: bob's task, the admin pages, a post without the CSRF token.
    bobs = lease_task(journey.store, _id(journey, "bob"), lease_minutes=15)
    assert bobs is not None
    response = carol.goto(f"/task/{bobs.assignment_id}")
    assert response.status == 404 and "text of" not in carol.content()
    assert carol.goto("/admin").status == 403
    assert carol.goto("/admin/annotators.csv").status == 403
    refused = carol.request.post("/answer", form={"assignment_id": str(bobs.assignment_id), "label": "other"})
    assert refused.status == 403 and "did not come from this site" in refused.text()
    refused = carol.request.post("/skip", form={"assignment_id": "1", "csrf_token": "forged"})
    assert refused.status == 403

    # A second control, answered wrong: accuracy falls to 50% and carol is suspended.
    add_gold_items(journey, 1, start=3)
    carol.goto("/label")
    expect(carol.locator("#item-text")).to_contain_text("text of item-003")  # her lease first
    carol.keyboard.press("1")
    expect(carol.locator("#item-text")).to_contain_text("known text")
    text, gold = _shown_gold(journey, carol)
    assert text == "known text gold-003"
    carol.keyboard.press(_key(next(x for x in LABELS if x != gold)))
    expect(carol).to_have_url("/login")
    assert _accuracy_cell(admin) == "0.500"
    row = admin.locator("#table-annotators tbody tr", has_text="carol")
    expect(row).to_contain_text("suspended")
    carol.fill("input[name=name]", "carol")
    carol.fill("input[name=password]", PASSWORD)
    carol.click("button[type=submit]")
    expect(carol.locator(".error")).to_contain_text("your account is suspended")
    with journey.store.read() as session:
        kept = session.scalar(
            select(func.count()).select_from(Annotation).join(Annotator).where(Annotator.name == "carol")
        )
    assert kept == 7  # 2 exam + 2 controls + 3 regular answers, all kept
    # The refused pages above log "Failed to load resource"; nothing else may fail (no
    # script error, no CSP violation).
    assert [e for e in errors if not e.startswith("Failed to load resource")] == []


def _id(project: Project, name: str) -> int:
    with project.store.read() as session:
        return session.scalar(select(Annotator.id).where(Annotator.name == name))
