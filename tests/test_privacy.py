"""Personal data stays on this machine (``privacy.redact``).

The redactor is Presidio's pattern recognisers, tested on made-up personal data. The labeler
path is tested against the real llama.cpp server on loopback, behind a recording proxy that
keeps every request body: the proxy is the "remote" server (``privacy.when: always``), and no
e-mail address or phone number may appear in what it received.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import select

from duolabel import Project
from duolabel.config import OpenAILabelerConfig, parse_config
from duolabel.errors import ConfigError
from duolabel.labelers.privacy import Redactor, is_remote
from duolabel.store.tables import Redaction
from tests.conftest import write_project
from tests.llm_server import MODEL_ALIAS

EMAILS = ["jane.doe@example.com", "m.rossi@posta.example.it", "support-team@shop.example.org"]
PHONES = ["+1 415 555 0134", "(212) 555-0199", "+44 20 7946 0958"]


def test_the_redactor_replaces_each_value_with_a_numbered_placeholder() -> None:
    redactor = Redactor(["EMAIL", "PHONE"])
    text = f"Mail {EMAILS[0]} or {EMAILS[1]}; call {PHONES[0]}. Again: {EMAILS[0]}"
    redacted, found = redactor.redact(text)
    assert redacted == "Mail <EMAIL_1> or <EMAIL_2>; call <PHONE_1>. Again: <EMAIL_1>"
    assert [text[f.start : f.end] for f, _ in found] == [EMAILS[0], EMAILS[1], PHONES[0], EMAILS[0]]
    assert redactor.redact("nothing personal here") == ("nothing personal here", [])


def test_only_the_kinds_asked_for_are_redacted() -> None:
    redacted, _ = Redactor(["EMAIL"]).redact(f"{EMAILS[2]} / {PHONES[1]}")
    assert redacted == f"<EMAIL_1> / {PHONES[1]}"


def test_a_server_is_remote_unless_it_is_on_loopback() -> None:
    def remote(url: str | list[str] | None) -> bool:
        return is_remote(OpenAILabelerConfig(backend="openai", model="m", base_url=url))

    assert not remote("http://127.0.0.1:8080/v1") and not remote("http://localhost:1/v1")
    assert not remote("http://[::1]:8080/v1")
    assert remote("https://api.example.com/v1") and remote(None) and remote("http://10.0.0.5:8080/v1")
    # A fleet is remote as soon as one of its servers is.
    assert not remote(["http://127.0.0.1:8080/v1", "http://127.0.0.1:8081/v1"])
    assert remote(["http://127.0.0.1:8080/v1", "https://api.example.com/v1"])


def test_an_unknown_kind_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"task": {"labels": ["a", "b"]}, "privacy": {"redact": ["EMAIL", "SHOE_SIZE"]}})
    assert "privacy.redact" in str(error.value) and "SHOE_SIZE" in str(error.value)


def test_person_without_a_spacy_model_says_what_is_missing() -> None:
    with pytest.raises(ConfigError, match="PERSON needs an English spaCy NER model"):
        Redactor(["PERSON"])


class _Recorder(BaseHTTPRequestHandler):
    """Forwards each request to the real server and keeps its body."""

    upstream = ""
    bodies: list[str] = []

    def _forward(self, body: bytes | None) -> None:
        request = urllib.request.Request(
            self.upstream + self.path,
            data=body,
            method=self.command,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            payload = response.read()
            self.send_response(response.status)
            self.send_header("Content-Type", response.headers.get("Content-Type", "application/json"))
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    def do_GET(self) -> None:
        self._forward(None)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).bodies.append(body.decode("utf-8"))
        self._forward(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recording_proxy(llm_server) -> Iterator[type[_Recorder]]:
    handler = type(
        "Recorder", (_Recorder,), {"upstream": llm_server.base_url.removesuffix("/v1"), "bodies": []}
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{server.server_port}/v1"  # type: ignore[attr-defined]
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()


def _project(folder: Path, url: str, when: str) -> Path:
    return write_project(
        folder,
        labels=["billing", "shipping"],
        labeler={
            "backend": "openai",
            "model": MODEL_ALIAS,
            "base_url": url,
            "few_shot": 2,
            "answer_tokens": 1,
        },
        privacy={"redact": ["EMAIL", "PHONE"], "when": when},
        routing={"mode": "fixed", "threshold": 0.0},
    )


def _golden_items(frame: pd.DataFrame) -> tuple[list, list]:
    from duolabel.labelers import TextItem

    items = [TextItem(row.id, row.text, row.id) for row in frame.itertuples()]
    return items, list(frame.label)


def _items() -> tuple[pd.DataFrame, pd.DataFrame]:
    golden = pd.DataFrame(
        {
            "id": ["g1", "g2", "g3", "g4", "g5", "g6"],
            "text": [
                f"I was charged twice, write to {EMAILS[0]}",
                f"My parcel is late, call me on {PHONES[0]}",
                "Refund the payment please",
                "The courier lost the box",
                "The invoice total is wrong",
                "Delivery was three days late",
            ],
            "label": ["billing", "shipping", "billing", "shipping", "billing", "shipping"],
        }
    )
    regular = pd.DataFrame(
        {
            "id": ["r1", "r2", "r3"],
            "text": [
                f"Invoice is wrong, reply to {EMAILS[1]} or {PHONES[1]}",
                f"Where is my package? {EMAILS[2]}, {PHONES[2]}",
                "The tracking page is empty",
            ],
        }
    )
    return golden, regular


@pytest.mark.slow
def test_no_email_or_phone_number_reaches_a_remote_server(tmp_path, recording_proxy) -> None:
    folder = _project(tmp_path / "p", recording_proxy.url, "always")
    golden, regular = _items()
    with Project.open(folder) as project:
        project.add_items(golden, role="golden", gold_column="label")
        project.add_items(regular)
        [result] = project.label()
        assert result.predicted == 9
        # What `duolabel plan` shows is what is sent: redacted.
        from duolabel.labelers import build_labeler

        model = build_labeler(project, project.config.labeler[0])
        model.fit(*_golden_items(golden))
        [prompt] = model.prompts(_golden_items(regular.assign(label="billing"))[0][:1])
        assert "<EMAIL_1>" in prompt and EMAILS[1] not in prompt
        with project.store.read() as session:
            rows = session.scalars(select(Redaction).order_by(Redaction.item_id, Redaction.start)).all()
        status = project.status().privacy
    assert (
        status == "personal data replaced in 4 items before they went to a remote labeler (EMAIL 3, PHONE 3)"
    )
    sent = "\n".join(recording_proxy.bodies)
    assert '"prompt"' in sent  # the labeler did talk to the server through the proxy
    for secret in EMAILS + PHONES:
        assert secret not in sent and json.dumps(secret)[1:-1] not in sent
    assert "<EMAIL_1>" in sent and "<PHONE_1>" in sent
    # The mapping stays in the store, per item: what was replaced, by what, and where.
    recorded = {(r.item_id, r.kind, r.placeholder, r.original) for r in rows}
    assert recorded == {
        ("g1", "EMAIL", "<EMAIL_1>", EMAILS[0]),
        ("g2", "PHONE", "<PHONE_1>", PHONES[0]),
        ("r1", "EMAIL", "<EMAIL_1>", EMAILS[1]),
        ("r1", "PHONE", "<PHONE_1>", PHONES[1]),
        ("r2", "EMAIL", "<EMAIL_1>", EMAILS[2]),
        ("r2", "PHONE", "<PHONE_1>", PHONES[2]),
    }
    texts = dict(zip(regular.id, regular.text, strict=True)) | dict(zip(golden.id, golden.text, strict=True))
    assert all(texts[r.item_id][r.start : r.end] == r.original for r in rows)


@pytest.mark.slow
def test_a_loopback_server_gets_the_text_unless_told_to_treat_it_as_remote(tmp_path, recording_proxy) -> None:
    folder = _project(tmp_path / "p", recording_proxy.url, "remote")
    golden, regular = _items()
    with Project.open(folder) as project:
        project.add_items(golden, role="golden", gold_column="label")
        project.add_items(regular.iloc[:1])
        project.label()
        with project.store.read() as session:
            assert session.scalars(select(Redaction)).all() == []
        assert project.status().privacy == ""
    assert EMAILS[1] in "\n".join(recording_proxy.bodies)
