"""The span tagger as the labeler of a spans project: label, calibrate, route and aggregate
through ``duolabel run`` on real CoNLL-2003 sentences and their recorded crowd answers, with the
real bundled MiniLM encoder."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select

from duolabel.core.spans import Spans, parse_spans, spans_json
from duolabel.errors import ProjectError
from duolabel.store import FinalLabel, Item, Prediction, Route
from tests.test_spans import NER, conll, spans_project, write_jsonl

KIND = Spans()


def test_routing_reads_the_item_score_and_gold_is_the_whole_list():
    answers = ['[{"start": 0, "end": 5, "label": "PER"}]', "[]", "[]"]
    gold = ['[{"start": 0, "end": 5, "label": "PER"}]', '[{"start": 0, "end": 3, "label": "LOC"}]', "[]"]
    probs = np.array([[0.8] * 4, [0.4] * 4, [0.6] * 4])
    rows = KIND.routing_probs(probs, answers, NER)
    assert rows.argmax(axis=1).tolist() == [0, 0, 0]  # the model's own list is the top entry
    assert rows[:, 0].tolist() == [0.8, 0.4, 0.6] and rows[1, 1] == 0.4  # runner-up capped
    assert KIND.routing_gold(answers, gold, NER).tolist() == [0, -1, 0]


@pytest.mark.parametrize(
    ("labeler", "message"),
    [
        (
            {"backend": "setfit"},
            "backend 'setfit'.* does not label spans yet.*embedding.*llama / openai",
        ),
        ({"backend": "embedding", "engine": "ray"}, "engine 'ray' does not label spans yet.*engine: local"),
    ],
)
def test_what_a_spans_project_cannot_label_with_says_what_to_use(tmp_path: Path, labeler: dict, message: str):
    golden, _ = conll(40)
    settings = {"labeler": [labeler], "calibration": {"min_golden_per_label": 2}}
    with spans_project(tmp_path / "p", **settings) as project:
        project.import_file(write_jsonl(tmp_path / "golden.jsonl", golden), role="golden", gold_column="gold")
        with pytest.raises(ProjectError, match=message):
            project.label()


@pytest.mark.slow
def test_run_labels_routes_and_aggregates_spans_end_to_end(tmp_path: Path):
    items, answers = conll(70)
    golden, regular = items[:40], items[40:]
    # The threshold policy: three people per routed item, as the answers below are given.
    routing = {"policy": "threshold", "mode": "target", "target_accuracy": 0.9}
    with spans_project(tmp_path / "p", calibration={"min_golden_per_label": 2}, routing=routing) as project:
        project.import_file(write_jsonl(tmp_path / "golden.jsonl", golden), role="golden", gold_column="gold")
        project.add_items(pd.DataFrame([{"id": i["id"], "text": i["text"]} for i in regular]))
        project.run()
        with project.store.read() as session:
            preds = session.scalars(select(Prediction)).all()
            routes = dict(session.execute(select(Route.item_id, Route.decision)).all())
            finals = dict(session.execute(select(FinalLabel.item_id, FinalLabel.label)).all())
            texts = dict(session.execute(select(Item.id, Item.text)).all())
        by_item = {p.item_id: p for p in preds}
        assert set(by_item) == set(texts)  # every item has a prediction
        for p in preds:  # a valid span list inside the text, its score calibrated, one per column
            KIND.check_against_text(KIND.check_answer(p.label, NER), texts[p.item_id])
            assert 0 <= p.confidence <= 1 and set(p.calibrated.values()) == {p.confidence}
        assert all(by_item[i["id"]].out_of_fold for i in golden)  # golden: cross-fitted
        found = sum(len(parse_spans(by_item[i["id"]].label)) for i in regular)
        assert found > 0
        sent = [i["id"] for i in regular if routes.get(i["id"]) != "accept"]
        accepted = [i["id"] for i in regular if routes.get(i["id"]) == "accept"]
        assert sent  # 30 sentences at 0.9 whole-list accuracy: some go to people
        assert all(finals[i] == by_item[i].label for i in accepted)
        # People answer the routed sentences (their recorded answers); the token vote finishes them.
        theirs = [a for a in answers if a["item_id"] in set(sent)]
        rows = [{"item": a["item_id"], "worker": a["annotator"], "label": a["label"]} for a in theirs]
        project.import_answers(write_jsonl(tmp_path / "answers.jsonl", rows))
        project.run()
        with project.store.read() as session:
            finals = dict(session.execute(select(FinalLabel.item_id, FinalLabel.label)).all())
        count = Counter(a["item_id"] for a in theirs)
        enough = {i for i, n in count.items() if n >= 3}  # routing asked three people each
        assert enough and all(i in finals for i in enough)
        assert all(finals[i] == spans_json(parse_spans(finals[i])) for i in enough)
        assert not any(i in finals for i in set(count) - enough)  # still waiting for a third


@pytest.mark.slow
def test_the_bundled_gemma_labels_a_spans_project_with_valid_lists_or_abstentions(tmp_path: Path):
    pytest.importorskip("llama_cpp", reason="pip install 'duolabel[llama]'")
    items, _ = conll(44)
    golden, regular = items[:40], items[40:]
    settings = {"labeler": [{"backend": "llama", "n_ctx": 1024}], "calibration": {"min_golden_per_label": 2}}
    with spans_project(tmp_path / "p", **settings) as project:
        project.import_file(write_jsonl(tmp_path / "golden.jsonl", golden), role="golden", gold_column="gold")
        project.add_items(pd.DataFrame([{"id": i["id"], "text": i["text"]} for i in regular]))
        (result,) = project.label()
        with project.store.read() as session:
            preds = session.scalars(select(Prediction)).all()
            texts = dict(session.execute(select(Item.id, Item.text)).all())
    assert len(preds) == len(items) and result.abstained == sum(p.abstained for p in preds)
    assert all(p.out_of_fold for p in preds if p.item_id in {i["id"] for i in golden})  # it learnt nothing
    for p in preds:
        if p.abstained:  # no JSON list: no answer, people decide
            assert p.label == "" and p.probs == {}
        else:  # a valid span list inside the text, its score in every column
            KIND.check_against_text(KIND.check_answer(p.label, NER), texts[p.item_id])
            assert len(set(p.probs.values())) == 1 and 0 < p.raw_confidence <= 1
    assert any(not p.abstained for p in preds)


def test_a_spans_project_never_sends_unredacted_text_where_redaction_was_asked_for(tmp_path: Path):
    golden, _ = conll(40)
    settings = {
        # loopback, but privacy.when: always asks for redaction there too; nothing is contacted
        "labeler": [{"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"}],
        "privacy": {"redact": ["EMAIL"], "when": "always"},
        "calibration": {"min_golden_per_label": 2},
    }
    with spans_project(tmp_path / "p", **settings) as project:
        project.import_file(write_jsonl(tmp_path / "golden.jsonl", golden), role="golden", gold_column="gold")
        with pytest.raises(ProjectError, match="privacy.redact cannot apply to span extraction"):
            project.label()
        assert project.status().predicted == 0
