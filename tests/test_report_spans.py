"""``duolabel report`` on a spans project, as a user runs it: a small conll2003_mturk project (the
span tagger on the bundled MiniLM), ``duolabel run``, then the report's figures checked against
ones computed here from the store."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from duolabel.core.spans import parse_spans
from duolabel.project import Project
from duolabel.store import Item, Prediction, Route
from tests.test_pipeline import cli
from tests.test_spans import NER, conll, ran_spans_project


@pytest.mark.slow
def test_report_a_spans_project(tmp_path: Path):
    items, _ = conll(55)
    folder = ran_spans_project(
        tmp_path, items, regular_gold=False, routing={"mode": "target", "target_accuracy": 0.9}
    )
    with Project.open(folder) as project, project.store.read() as session:
        rows = session.execute(
            select(Prediction.label, Prediction.confidence, Item.gold_label)
            .join(Item, Item.id == Prediction.item_id)
            .where(Item.role == "golden", Prediction.out_of_fold.is_(True))
        ).all()
        routed = dict(session.execute(select(Route.item_id, Route.decision)).all())
    given = [set(parse_spans(r.label)) for r in rows]
    gold = [set(parse_spans(r.gold_label)) for r in rows]
    tp = sum(len(a & g) for a, g in zip(given, gold, strict=True))
    n_given, n_gold = sum(map(len, given)), sum(map(len, gold))
    precision, recall = tp / n_given, tp / n_gold
    whole = np.mean([a == g for a, g in zip(given, gold, strict=True)])

    report = cli("report", str(folder))
    assert report.returncode == 0, report.stderr
    html = (folder / "report.html").read_text(encoding="utf-8")
    assert f"span precision</td><td>{precision:.3f}<" in html
    assert f"span recall</td><td>{recall:.3f}<" in html
    assert f"span F1</td><td>{2 * tp / (n_given + n_gold):.3f}<" in html
    assert re.search(rf"whole-item accuracy \(list equals gold\)</td><td>{whole:.3f}<", html)
    assert f"spans given / in gold</td><td>{n_given} / {n_gold}<" in html
    for label in NER:
        support = sum(s[2] == label for g in gold for s in g)
        assert f"<td>{label}</td><td>{support}</td>" in html
    share = sum(d != "accept" for d in routed.values()) / len(routed)
    assert f"human share</td><td>{share:.3f}<" in html
    assert "Calibration of the item score" in html and "Traceback" not in report.stderr
