"""``privacy.redact`` in a pairwise project: the LLM judge's prompts, both responses in both
orders, reach a real llama.cpp server (on loopback, treated as remote with ``when: always``)
only redacted; the recording proxy of tests/test_privacy.py keeps every request body."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import select

from duolabel import Project
from duolabel.labelers.llm_pairwise import JUDGE_RULES, pair_block
from duolabel.labelers.pairwise import Pair
from duolabel.store.tables import Redaction
from tests.conftest import write_project
from tests.llm_server import MODEL_ALIAS
from tests.test_privacy import EMAILS, PHONES, recording_proxy  # noqa: F401 (the fixture)


def _pairs() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Golden and regular pairs with personal data in the prompt and in either response."""
    golden = pd.DataFrame(
        {
            "id": ["g1", "g2", "g3", "g4", "g5", "g6"],
            "text": [
                f"Reply to the customer at {EMAILS[0]}",
                "Say thanks",
                "Give the hotline",
                "Say hello",
                "Count to three",
                "Name a colour",
            ],
            "response_a": [
                "Dear customer, we are on it.",
                "Thanks!",
                f"Call {PHONES[0]}.",
                "Hello.",
                "1 2 3",
                "7",
            ],
            "response_b": [
                "no",
                f"Thanks, mail {EMAILS[0]} for more",
                "I do not know.",
                "Bye.",
                "3",
                "Blue.",
            ],
            "label": ["A", "B", "A", "B", "A", "B"],
        }
    )
    regular = pd.DataFrame(
        {
            "id": ["r1", "r2"],
            "text": ["Tell me how to reach support", f"Forward this to {EMAILS[1]}"],
            "response_a": [f"Write to {EMAILS[2]} or call {PHONES[1]}.", "Done."],
            "response_b": ["Search the web.", f"Forwarded; they may call you on {PHONES[2]}."],
        }
    )
    return golden, regular


@pytest.mark.slow
def test_no_email_or_phone_number_of_a_pair_reaches_the_judge_server(tmp_path: Path, recording_proxy) -> None:  # noqa: F811
    folder = write_project(
        tmp_path / "p",
        task={"type": "pairwise", "labels": [{"name": "A"}, {"name": "B"}]},
        labeler={
            "backend": "openai",
            "model": MODEL_ALIAS,
            "base_url": recording_proxy.url,
            "few_shot": 2,
            "answer_tokens": 1,
        },
        privacy={"redact": ["EMAIL", "PHONE"], "when": "always"},
        routing={"mode": "fixed", "threshold": 0.0},
    )
    golden, regular = _pairs()
    with Project.open(folder) as project:
        project.add_items(golden, role="golden", gold_column="label")
        project.add_items(regular)
        [result] = project.label()
        assert result.predicted == 8
        with project.store.read() as session:
            rows = session.scalars(select(Redaction)).all()
        status = project.status().privacy
    sent = "\n".join(recording_proxy.bodies)
    # The judge talked to the server through the proxy, with its own prompt, in both orders.
    assert '"prompt"' in sent and json.dumps(JUDGE_RULES)[1:40] in sent
    assert "# Output (a):" in sent and "# Output (b):" in sent
    for secret in EMAILS + PHONES:
        assert secret not in sent and json.dumps(secret)[1:-1] not in sent
    assert "<EMAIL_1>" in sent and "<PHONE_1>" in sent
    # What was replaced is kept in the store, per item, and only there.
    # Once per value and item although each pair went out twice (shown and swapped), at its
    # offsets in the pair as the judge reads it in the order shown.
    assert (
        status == "personal data replaced in 5 items before they went to a remote labeler (EMAIL 4, PHONE 3)"
    )
    pairs = {
        r.id: Pair(r.id, r.text, r.response_a, r.response_b)
        for r in pd.concat([golden, regular]).itertuples()
    }
    assert all(pair_block(pairs[r.item_id])[r.start : r.end] == r.original for r in rows)
    listed = [(r.item_id, r.kind, r.original) for r in rows]
    recorded = set(listed)
    assert len(listed) == len(recorded)
    assert recorded == {
        ("g1", "EMAIL", EMAILS[0]),
        ("g2", "EMAIL", EMAILS[0]),
        ("g3", "PHONE", PHONES[0]),
        ("r1", "EMAIL", EMAILS[2]),
        ("r1", "PHONE", PHONES[1]),
        ("r2", "EMAIL", EMAILS[1]),
        ("r2", "PHONE", PHONES[2]),
    }
