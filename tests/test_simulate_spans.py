"""``duolabel simulate`` on a spans project, as a user runs it: a small conll2003_mturk project
(the BIO span tagger on the bundled MiniLM), ``duolabel run``, the real crowd's recorded answers
imported with ``duolabel import-answers``, then the table checked against figures computed here
from the store; and the replay's expert expectation on hand-made lists."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from sqlalchemy import select

from duolabel.config import PROJECT_FILE
from duolabel.core.spans import TokenVote, parse_spans
from duolabel.project import Project
from duolabel.simulate_lists import ListKind, _expected_row
from duolabel.simulate_spans import span_figures
from duolabel.stages.distill import labeling_version
from duolabel.store import Annotation, Annotator, Item, Prediction
from tests.test_multilabel_report import _line
from tests.test_pipeline import cli
from tests.test_spans import NER, conll, ran_spans_project, write_jsonl

WIDE = {**os.environ, "COLUMNS": "220"}  # one table row per line


def _raw(given: list[str], gold: list[str]) -> tuple[float, float]:
    """Whole-item accuracy and micro span F1, by hand."""
    pairs = [(set(parse_spans(a)), set(parse_spans(g))) for a, g in zip(given, gold, strict=True)]
    tp = sum(len(a & g) for a, g in pairs)
    marked = sum(len(a) + len(g) for a, g in pairs)
    return sum(a == g for a, g in pairs) / len(pairs), 2 * tp / marked


def _figures(given: list[str], gold: list[str]) -> list[str]:
    """:func:`_raw` as the table prints it."""
    return [f"{x:.3f}" for x in _raw(given, gold)]


def _store(folder: Path) -> tuple[dict, dict[str, str], dict[str, list[tuple[str, str]]]]:
    """The regular items' (prediction, confidence, gold), their texts and people's answers."""
    with Project.open(folder) as project, project.store.read() as session:
        version = labeling_version(project)
        rows = session.execute(
            select(Item.id, Item.text, Item.gold_label, Prediction.label, Prediction.confidence)
            .join(Prediction, Prediction.item_id == Item.id)
            .where(Item.role == "regular", Prediction.model_version == version)
        ).all()
        given = session.execute(
            select(Annotation.item_id, Annotator.name, Annotation.label)
            .join(Annotator, Annotator.id == Annotation.annotator_id)
            .where(Annotation.kind.in_(["regular", "control"]))
        ).all()
    answers: dict[str, list[tuple[str, str]]] = {}
    for item, who, label in given:
        answers.setdefault(item, []).append((who, label))
    return {r.id: r for r in rows}, {r.id: r.text for r in rows}, answers


@pytest.mark.slow
def test_simulate_a_spans_project_from_recorded_answers(tmp_path: Path):
    items, answers = conll(70)
    # A low target: the small tagger (whole lists right on about a third of the items) then has
    # its surest lists accepted, so the hybrid row mixes the model's lists and people's.
    routing = {"mode": "target", "target_accuracy": 0.3}
    folder = ran_spans_project(tmp_path, items, regular_gold=True, routing=routing)

    nothing = cli("simulate", str(folder), "--from-store")  # no answers yet: says how to add them
    assert nothing.returncode != 0 and "no recorded answers in the store" in nothing.stderr
    assert "duolabel import-answers" in nothing.stderr and "Traceback" not in nothing.stderr
    from_file = cli("simulate", str(folder))  # the default annotations.jsonl: spans come from the store
    assert from_file.returncode != 0 and "--from-store" in from_file.stderr
    assert "Traceback" not in from_file.stderr

    rows = [{"item": a["item_id"], "worker": a["annotator"], "label": a["label"]} for a in answers]
    imported = cli("import-answers", str(write_jsonl(tmp_path / "answers.jsonl", rows)), "-p", str(folder))
    assert imported.returncode == 0, imported.stderr
    simulate = cli("simulate", str(folder), "--from-store", env=WIDE)
    assert simulate.returncode == 0, simulate.stderr
    out = simulate.stdout
    assert "whole-item accuracy" in out and "span F1 (micro)" in out
    flat = " ".join(out.split())  # the caption wraps
    assert "none escalated (routing.expert_share is 0)" in flat and "probability 0.95" in flat

    preds, texts, given = _store(folder)
    ids = [i for i in preds if i in given]  # every regular item has recorded answers
    assert len(ids) == len(items) - 40 == 30
    gold = [preds[i].gold_label for i in ids]
    model = [preds[i].label for i in ids]
    frame = pd.DataFrame(
        [(i, who, label) for i in ids for who, label in given[i]], columns=["task", "worker", "label"]
    )
    people = TokenVote(labels=NER, texts=texts).fit(frame).labels_.to_dict()
    assert _line(out, "model alone")[-3:] == [*_figures(model, gold), "0%"]
    assert _line(out, "people alone (token vote")[-3:] == [*_figures([people[i] for i in ids], gold), "100%"]
    hybrid = _line(out, "hybrid, target 0.3")
    cut = re.search(r"whole-list chance >= ([0-9.]+)$", hybrid[1])
    assert cut, hybrid  # thresholds are on a grid of 0.001: printed exactly
    threshold = float(cut.group(1))
    accept = [preds[i].confidence >= threshold for i in ids]
    assert 0 < sum(accept) < len(ids)
    final = [m if ok else people[i] for i, m, ok in zip(ids, model, accept, strict=True)]
    share = f"{1 - sum(accept) / len(ids):.0%}"
    assert hybrid[-3:] == [*_figures(final, gold), share]

    # An expert tier: the least sure half of the routed items escalated, one with a recorded answer.
    settings = yaml.safe_load((folder / PROJECT_FILE).read_text())
    settings["routing"]["expert_share"] = 0.5
    (folder / PROJECT_FILE).write_text(yaml.safe_dump(settings))
    routed = sorted((preds[i].confidence, i) for i, ok in zip(ids, accept, strict=True) if not ok)
    assert len(routed) >= 2, "the hybrid row needs routed items to escalate"
    least = routed[0][1]
    with Project.open(folder) as project, project.store.write() as session:
        expert = Annotator(name="eve", password_hash="-", role="expert")
        session.add(expert)
        session.flush()
        session.add(
            Annotation(item_id=least, annotator_id=expert.id, label=preds[least].gold_label, kind="expert")
        )
    simulate = cli("simulate", str(folder), "--from-store", "--expert-accuracy", "0.7", env=WIDE)
    assert simulate.returncode == 0, simulate.stderr
    out = simulate.stdout
    flat = " ".join(out.split())
    assert "the least sure 0.5 of the routed items are escalated" in flat and "probability 0.7 and" in flat
    hybrid = _line(out, "hybrid, target 0.3")
    assert hybrid[1] == f"whole-list chance >= {threshold:.3f}"
    scores = sorted(c for c, _ in routed)
    cutoff = scores[max(0, -(-len(scores) // 2) - 1)]  # the inverted-CDF median of the routed scores
    up = {i for c, i in routed if c <= cutoff}
    assert least in up and hybrid[-1] == f"{len(up)} (1 recorded)"
    final[ids.index(least)] = preds[least].gold_label
    right = [preds[i].gold_label if i in up else f for i, f in zip(ids, final, strict=True)]
    expect = [0.7 * a + 0.3 * b for a, b in zip(_raw(right, gold), _raw(final, gold), strict=True)]
    assert [float(x) for x in hybrid[-4:-2]] == pytest.approx(expect, abs=5.01e-4)  # printed to 3 digits


def test_an_escalated_item_without_an_expert_answer_is_an_expectation():
    gold = ['[{"start": 0, "end": 5, "label": "PER"}]', "[]", '[{"start": 6, "end": 9, "label": "LOC"}]']
    final = ["[]", "[]", "[]"]  # people missed both spans
    kind = ListKind("vote", lambda frame, texts: {}, span_figures)
    # Item 0 escalated with no recorded answer, item 2 escalated with one (already in ``final``).
    row = _expected_row(kind, "hybrid", "-", final, gold, 1.0, [True, False, True], [False, False, True], 0.8)
    # Right world: item 0 gets gold -> whole 2/3, F1 2*1/(2*1+0+1); kept world: whole 1/3, F1 0.
    assert row.subset_accuracy == pytest.approx(0.8 * 2 / 3 + 0.2 * 1 / 3)
    assert row.micro_f1 == pytest.approx(0.8 * 2 / 3)
    assert (row.expert_answers, row.expert_recorded) == (2, 1)
    nobody = _expected_row(kind, "hybrid", "-", final, gold, 1.0, [False] * 3, [False] * 3, 0.8)
    assert (nobody.subset_accuracy, nobody.micro_f1) == (1 / 3, 0.0)


def test_span_figures_are_exact_match_and_micro():
    per = '[{"start": 0, "end": 5, "label": "PER"}]'
    wrong_label = '[{"start": 0, "end": 5, "label": "ORG"}]'
    two = '[{"start": 0, "end": 5, "label": "PER"}, {"start": 6, "end": 9, "label": "LOC"}]'
    assert span_figures([per, wrong_label], [per, per]) == (0.5, 0.5)
    assert span_figures([per], [two]) == (0.0, pytest.approx(2 / 3))
    assert span_figures(["[]"], ["[]"])[0] == 1.0
