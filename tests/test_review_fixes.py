"""An independent review's findings, each reproduced first: ``config set`` writing a file it
cannot read back, look-alike and blank account names, an admin suspending themselves by
changing the name's case, 500s for lone surrogates and odd page numbers, and errors that
echo a huge value or accept a non-finite bound."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from duolabel.cli import app as cli
from duolabel.config import PROJECT_FILE, load_config, parse_config, render_config
from duolabel.config import edit as config_edit
from duolabel.config.project import read_project_text
from duolabel.errors import ConfigError, ProjectError, shown
from duolabel.people.accounts import add_annotator, check_name, create_invitation
from duolabel.project import init_project
from duolabel.store import Annotator
from duolabel.web import create_app
from tests.test_hardening_web import Person, folder  # noqa: F401  (folder is a fixture)
from tests.test_web import csrf
from tests.web_fixtures import PASSWORD, add_routed_items, make_project

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "support_tickets"

# -- 1. config set writes a file that loads back ------------------------------------------------

INSTRUCTIONS = [
    # longer than PyYAML's 80 columns, written plain: it was wrapped below its key's indentation
    ("Read the customer's message and choose the team that should answer it. " * 6).strip(),
    "Long and quoted: " + "'quoted' words, " * 10,
    "First line.\nSecond line: indented below\n  - not a list item\n\nafter a blank line\n",
    "key: value # not a comment, 'single' and \"double\" quotes, a {brace} and [bracket]",
    "Étiquetez chaque message — 日本語の説明 😀 \u00a0non-breaking, \u2028line separator\ttab",
    "- starts like a list item",
    "   leading and trailing spaces   ",
    "yes",
    "",
]


def _project_with_instructions(project_dir: Path, instructions: str) -> None:
    """A project whose file holds ``instructions``, written by PyYAML itself (not by the renderer
    under test)."""
    init_project(project_dir, labels=["spam", "ham"]).close()
    data = yaml.safe_load((project_dir / PROJECT_FILE).read_text(encoding="utf-8"))
    data["task"]["instructions"] = instructions
    (project_dir / PROJECT_FILE).write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")


@pytest.mark.parametrize("instructions", INSTRUCTIONS)
def test_config_set_keeps_any_instructions(tmp_path: Path, instructions: str) -> None:
    _project_with_instructions(tmp_path, instructions)
    before = load_config(tmp_path)
    config_edit.set_values(tmp_path, [("quality.control_rate", "0.5")])
    after = load_config(tmp_path)
    assert after.task.instructions == instructions
    assert after.quality.control_rate == 0.5
    assert after == before.model_copy(
        update={"quality": before.quality.model_copy(update={"control_rate": 0.5})}
    )


def test_config_set_on_the_example_keeps_status_working(tmp_path: Path) -> None:
    # The tester's repro: the example's instructions are longer than PyYAML's 80 columns.
    project = tmp_path / "cfg"
    shutil.copytree(EXAMPLE, project)
    before = load_config(project)
    result = CliRunner().invoke(cli, ["config", "set", "-p", str(project), "quality.control_rate", "0.5"])
    assert result.exit_code == 0, result.output
    after = load_config(project)
    assert after.task == before.task and after.quality.control_rate == 0.5


# Words, spaces and YAML's special characters, often, so long and multi-line values come up.
_TEXT = st.text(st.one_of(st.sampled_from([*"abc  :#'\"-\n"]), st.characters()), max_size=300)


@settings(max_examples=200, deadline=None)
@given(instructions=_TEXT, description=_TEXT)
def test_any_text_setting_round_trips_through_the_rendered_file(instructions: str, description: str) -> None:
    task = {"labels": [{"name": "spam", "description": description}, {"name": "ham"}]}
    config = parse_config({"task": {**task, "instructions": instructions}})
    assert parse_config(read_project_text(render_config(config))) == config


def test_config_set_writes_nothing_that_would_not_load_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _project_with_instructions(tmp_path, "short")
    original = (tmp_path / PROJECT_FILE).read_bytes()

    def broken(config: Any) -> str:
        return render_config(config).replace("instructions: short", "instructions: changed")

    monkeypatch.setattr(config_edit, "render_config", broken)
    with pytest.raises(ConfigError, match="would not read back"):
        config_edit.set_values(tmp_path, [("quality.control_rate", "0.5")])
    assert (tmp_path / PROJECT_FILE).read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(PROJECT_FILE)) == [PROJECT_FILE]


# -- 2. look-alike and blank-looking names ----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "code_point"),
    [
        ("\u0430lice", "U+0430"),  # Cyrillic а among Latin letters
        ("alic\u03b5", "U+03B5"),  # Greek ε
        ("alice\u034f", "U+034F"),  # combining grapheme joiner
        ("alice\ufe0f", "U+FE0F"),  # variation selector
        ("alice\U000e0100", "U+E0100"),  # a supplementary variation selector
        ("alice\u3164", "U+3164"),  # Hangul filler
        ("\u3164", "U+3164"),
        ("\u115f\u1160", "U+115F"),
        ("\uffa0bob", "U+FFA0"),
        ("\u2800", "U+2800"),  # Braille blank
        ("bob\u2800", "U+2800"),
    ],
)
def test_look_alike_and_blank_names_are_refused(name: str, code_point: str) -> None:
    with pytest.raises(ProjectError, match=re.escape(code_point)) as refused:
        check_name(name)
    assert "; use " in str(refused.value)  # says what to use instead


@pytest.mark.parametrize(
    "name",
    [
        "Zoë",
        "José María",
        "O'Brien-Smith",
        "alice2",
        "Иван",
        "Ἀθηνᾶ",
        "田中太郎",
        "やまだ ハナコ",
        "山田ハナコ",
        "김민준",
        "金민준",
        "Tanaka太郎",
        "王小明ㄅ",
    ],
)
def test_names_in_one_script_or_a_usual_cjk_mix_are_accepted(name: str) -> None:
    assert check_name(name) == name


def test_sign_up_and_the_admin_api_refuse_look_alike_names(folder: Path) -> None:  # noqa: F811
    project = make_project(folder)
    add_annotator(project.store, "boss", PASSWORD, role="admin")
    app = create_app(project)
    newcomer = TestClient(app, follow_redirects=False)
    token = create_invitation(project.store, role="annotator")
    page = newcomer.get(f"/invite/{token}")
    signed = newcomer.post(
        f"/invite/{token}", data={"csrf_token": csrf(page.text), "name": "\u0430lice", "password": PASSWORD}
    )
    assert signed.status_code == 400 and "U+0430" in signed.text
    boss = Person(app, "boss")
    made = boss.api("POST", "/admin/accounts", {"name": "alice\u3164", "password": PASSWORD})
    assert made.status_code == 400 and "U+3164" in made.json()["error"]["message"]
    form = boss.post("/admin/accounts", name="alice\ufe0f", password=PASSWORD, role="annotator")
    assert form.status_code == 400 and "U+FE0F" in form.text
    with project.store.read() as session:
        assert session.query(Annotator).count() == 1
    project.close()


# -- 3. an admin cannot change their own status under another spelling --------------------------


def test_an_admin_cannot_suspend_themselves_by_changing_case(folder: Path) -> None:  # noqa: F811
    project = make_project(folder)
    add_annotator(project.store, "boss", PASSWORD, role="admin")
    add_annotator(project.store, "alice", PASSWORD)
    boss = Person(create_app(project), "boss")
    for spelling in ("BOSS", " Boss ", "ｂｏｓｓ"):
        refused = boss.api("POST", "/admin/status", {"name": spelling, "status": "suspended"})
        assert refused.status_code == 400, refused.text
        assert "your own account" in refused.json()["error"]["message"]
        page = boss.post("/admin/status", name=spelling, status="suspended")
        assert page.status_code == 400 and "your own account" in page.text
    assert boss.api("GET", "/me").json()["status"] == "active"
    assert boss.api("POST", "/admin/status", {"name": "ALICE", "status": "suspended"}).status_code == 200
    project.close()


# -- 4. lone surrogates, odd page numbers and unexpected errors: never a bare 500 ------------------


def _raw_json(person: Person, path: str, body: str) -> Any:
    """POST ``body`` as it is: httpx cannot encode a lone surrogate itself."""
    headers = {"x-csrf-token": person.token, "content-type": "application/json"}
    return person.client.post("/api/v1" + path, content=body.encode("ascii"), headers=headers)


def _is_error_shape(response: Any, status: int) -> bool:
    error = response.json()["error"]
    return (
        response.status_code == status
        and set(error) == {"type", "message", "status"}
        and error["status"] == status
    )


@pytest.fixture
def admin_and_expert(folder: Path) -> Any:  # noqa: F811
    project = make_project(folder)
    add_routed_items(project, 2, overlap=1)
    add_annotator(project.store, "boss", PASSWORD, role="admin")
    add_annotator(project.store, "erin", PASSWORD, role="expert")
    add_annotator(project.store, "alice", PASSWORD)
    app = create_app(project)
    yield app, Person(app, "boss"), Person(app, "erin")
    project.close()


@pytest.mark.parametrize(
    ("who", "path", "body"),
    [
        (None, "/login", r'{"name": "a\ud800", "password": "x"}'),
        (None, "/login", r'{"name": "alice", "password": "x\udfff"}'),
        ("boss", "/admin/status", r'{"name": "zz\ud800", "status": "active"}'),
        ("boss", "/admin/accounts", r'{"name": "zz", "password": "pw\ud800 long enough"}'),
        ("erin", "/expert/synthetic/review", r'{"item_id": "\ud800", "decision": "accept"}'),
        ("erin", "/expert/answer", r'{"assignment_id": 1, "label": "\ud800"}'),
        ("boss", "/admin/status", r'{"name": "ok", "status": "active", "\ud800": 1}'),
    ],
)
def test_lone_surrogates_in_json_are_a_400(
    admin_and_expert: Any, who: str | None, path: str, body: str
) -> None:
    app, boss, erin = admin_and_expert
    person = {"boss": boss, "erin": erin}.get(who or "") or Person(app, "alice")
    response = _raw_json(person, path, body)
    assert _is_error_shape(response, 400), response.text
    assert "U+D800" in response.json()["error"]["message"] or "U+DFFF" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"name": "zz\xed\xa0\x80", "status": "active"}',  # the surrogate's own (invalid) UTF-8 bytes
        r'{"name": "zz\ud800", "status": "active"}'.encode("utf-16"),  # json.loads reads UTF-16 too
        '{"name": "zz\ud800", "status": "active"}'.encode("utf-16-le", "surrogatepass"),
    ],
)
def test_lone_surrogates_in_other_encodings_are_a_400(admin_and_expert: Any, raw: bytes) -> None:
    _app, boss, _erin = admin_and_expert
    headers = {"x-csrf-token": boss.token, "content-type": "application/json"}
    response = boss.client.post("/api/v1/admin/status", content=raw, headers=headers)
    assert _is_error_shape(response, 400) and "U+D800" in response.json()["error"]["message"]


def test_a_surrogate_pair_is_an_ordinary_character(admin_and_expert: Any) -> None:
    app, _boss, _erin = admin_and_expert
    client = TestClient(app)
    # An escaped emoji (a valid pair) is a wrong name like any other: 401, not 400.
    response = client.post(
        "/api/v1/login",
        content=rb'{"name": "\ud83d\ude00", "password": "x"}',
        headers={"content-type": "application/json"},
    )
    assert _is_error_shape(response, 401)


def test_undecodable_forms_and_query_strings_are_not_a_500(admin_and_expert: Any) -> None:
    app, boss, _erin = admin_and_expert
    # Forms and query strings are decoded with replacement characters: no surrogate gets in.
    assert boss.client.get("/admin/items?text=%ED%A0%80").status_code == 200
    client = TestClient(app, follow_redirects=False)
    token = csrf(client.get("/login").text)
    refused = client.post(
        "/login",
        content=f"name=%ED%A0%80&password=x%ED%A0%80&csrf_token={token}".encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert refused.status_code in (400, 401)


@pytest.mark.parametrize(
    "page", ["%C2%B2", "%E2%91%A0", "%D9%A3", "1" * 5000, "0", "-1", "1.5", "%2B2", "1e3"]
)
def test_odd_page_numbers_are_a_400(admin_and_expert: Any, page: str) -> None:
    _app, boss, _erin = admin_and_expert
    response = boss.client.get(f"/admin/items?page={page}")
    assert response.status_code == 400 and "page must be a whole number" in response.text
    assert len(response.text) < 50_000


def test_a_far_page_number_shows_the_last_page(admin_and_expert: Any) -> None:
    _app, boss, _erin = admin_and_expert
    assert boss.client.get("/admin/items?page=999999999").status_code == 200


def test_an_unexpected_error_under_the_api_keeps_the_error_shape(
    admin_and_expert: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, _boss, _erin = admin_and_expert
    from duolabel.web import actions

    def fails(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(actions, "login", fails)
    client = TestClient(app, raise_server_exceptions=False, follow_redirects=False)
    response = client.post("/api/v1/login", json={"name": "alice", "password": PASSWORD})
    assert _is_error_shape(response, 500), response.text
    assert "secret" not in response.text and "RuntimeError" not in response.text
    assert response.headers["x-content-type-options"] == "nosniff"
    token = csrf(client.get("/login").text)
    page = client.post("/login", data={"name": "alice", "password": PASSWORD, "csrf_token": token})
    assert page.status_code == 500 and page.headers["content-type"].startswith("text/html")
    assert "secret" not in page.text


# -- 5. errors quote a short prefix of what was sent; bounds must be finite ------------------------


def test_shown_cuts_a_long_value() -> None:
    assert shown("eggs") == "'eggs'"
    long = shown("x" * 100_000)
    assert len(long) < 80 and long.endswith("…") and long.startswith("'xxx")


def test_a_huge_invalid_label_is_not_echoed_in_full(folder: Path) -> None:  # noqa: F811
    project = make_project(folder)
    add_routed_items(project, 1, overlap=1)
    add_annotator(project.store, "alice", PASSWORD)
    alice = Person(create_app(project), "alice")
    task = alice.api("GET", "/task").json()["task"]
    response = alice.api("POST", "/answer", {"assignment_id": task["assignment_id"], "label": "x" * 100_000})
    assert _is_error_shape(response, 400)
    message = response.json()["error"]["message"]
    assert len(message) < 300 and "…" in message and "'billing'" in message
    page = alice.post("/answer", assignment_id=str(task["assignment_id"]), label="y" * 100_000)
    assert page.status_code == 400 and len(page.text) < 50_000
    project.close()


def test_other_echoed_values_are_cut_too(admin_and_expert: Any) -> None:
    _app, boss, erin = admin_and_expert
    long = "z" * 10_000
    for response in (
        erin.api("GET", "/expert/task?reason=" + long),
        boss.api("POST", "/admin/status", {"name": long, "status": "active"}),
        boss.api("POST", "/admin/status", {"name": "alice", "status": long}),
        boss.api("POST", "/admin/accounts", {"name": "zed", "password": PASSWORD, "role": long}),
        erin.api("POST", "/expert/synthetic/review", {"item_id": long, "decision": "accept"}),
        boss.api("GET", "/admin/tables/" + long),
    ):
        assert response.status_code in (400, 404) and len(response.json()["error"]["message"]) < 300, (
            response.text
        )


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999", "NaN", "Infinity", "2", "-0.5"])
def test_confidence_bounds_must_be_finite_and_between_0_and_1(admin_and_expert: Any, value: str) -> None:
    _app, boss, _erin = admin_and_expert
    for bound in ("min_confidence", "max_confidence"):
        response = boss.client.get(f"/admin/items?{bound}={value}")
        assert response.status_code == 400 and "between 0 and 1" in response.text, (bound, value)


def test_confidence_bounds_in_range_still_filter(admin_and_expert: Any) -> None:
    _app, boss, _erin = admin_and_expert
    assert boss.client.get("/admin/items?min_confidence=0&max_confidence=1").status_code == 200
    assert boss.client.get("/admin/items?min_confidence=0.25").status_code == 200


def test_json_error_bodies_are_valid_json_for_any_message(admin_and_expert: Any) -> None:
    _app, boss, _erin = admin_and_expert
    response = boss.api("POST", "/admin/status", {"name": "nobody \U0001f600", "status": "active"})
    assert response.status_code == 400 and "\U0001f600" in json.loads(response.content)["error"]["message"]


def test_a_nul_character_anywhere_in_a_request_is_a_400(folder: Path, database_url: str | None) -> None:  # noqa: F811
    """A NUL in an answer's comment was stored on SQLite and a 500 on PostgreSQL, whose text
    cannot hold one; the same check as for lone surrogates now refuses it everywhere."""
    project = make_project(folder / "p", database_url=database_url)
    add_routed_items(project, 2, overlap=1)
    add_annotator(project.store, "alice", PASSWORD)
    alice = Person(create_app(project), "alice")
    try:
        task = alice.api("GET", "/task").json()["task"]
        body = {"assignment_id": task["assignment_id"], "label": "billing", "comment": "a\u0000b"}
        answer = alice.api("POST", "/answer", body)
        assert _is_error_shape(answer, 400) and "NUL character (U+0000) in 'comment'" in answer.text
        login = TestClient(create_app(project)).post(
            "/api/v1/login", json={"name": "al\u0000ice", "password": "x"}
        )
        assert _is_error_shape(login, 400)
        page = alice.post("/answer", assignment_id=task["assignment_id"], label="billing", comment="x\x00y")
        assert page.status_code == 400 and "NUL character" in page.text
        assert alice.client.get("/label?x=a%00b").status_code == 400
        # nothing was stored, and the task is still hers to answer
        assert alice.api("POST", "/answer", {**body, "comment": "fine"}).status_code == 200
    finally:
        project.close()
