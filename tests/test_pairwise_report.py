"""Bradley-Terry system ranking: the pure table (core) and the pairwise project's report."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from sqlalchemy import select

from duolabel.core.pairwise import system_ranking
from duolabel.store import FinalLabel, Item
from tests.test_pairwise_labelers import DESCRIPTIONS, INSTRUCTIONS, PAIR_LABELS, llmbar


def test_system_ranking_recovers_the_order_of_simulated_systems():
    # Three systems of known strength; answers drawn from the Bradley-Terry model itself.
    rng = np.random.default_rng(0)
    truth = {"strong": 4.0, "mid": 2.0, "weak": 1.0}
    names = list(truth)
    labels, fields = [], []
    for _ in range(300):
        a, b = rng.choice(names, size=2, replace=False)
        labels.append("A" if rng.random() < truth[a] / (truth[a] + truth[b]) else "B")
        fields.append({"model_a": a, "model_b": b})
    fields.append({"model_a": "solo", "model_b": "solo"})  # the same system twice: left out
    labels.append("A")
    rows = system_ranking(labels, fields)
    assert [r["system"] for r in rows] == ["strong", "mid", "weak"]
    assert math.isclose(sum(r["strength"] for r in rows), 1.0, rel_tol=1e-6)
    assert sum(r["pairs"] for r in rows) == 600 and all(r["wins"] + r["losses"] == r["pairs"] for r in rows)


def test_ties_count_on_both_sides_and_no_systems_no_table():
    rows = system_ranking(
        ["tie", "A"], [{"system_a": "x", "system_b": "y"}, {"system_a": "x", "system_b": "y"}]
    )
    assert {r["system"]: (r["wins"], r["ties"], r["losses"]) for r in rows} == {
        "x": (1, 1, 0),
        "y": (0, 1, 1),
    }
    assert system_ranking(["A"], [{"response_a": "a", "response_b": "b"}]) == []


@pytest.mark.slow
def test_the_report_of_a_pairwise_project_ranks_its_systems(tmp_path: Path):
    from duolabel.config import PROJECT_FILE
    from duolabel.project import Project
    from duolabel.report import write_report

    items, gold, fields = llmbar(40, max_chars=1200, seed=7)
    systems = ["alpha", "beta", "gamma"]
    rows = []
    for n, (item, answer) in enumerate(zip(items, gold, strict=True)):
        row = {"id": item.id, "text": item.text, **fields[item.id], "gold": answer}
        if n % 10:  # every tenth pair names no systems
            row |= {"model_a": systems[n % 3], "model_b": systems[(n + 1) % 3]}
        rows.append(row)
    folder = tmp_path / "p"
    folder.mkdir()
    labels = [{"name": n, "description": d} for n, d in zip(PAIR_LABELS, DESCRIPTIONS, strict=True)]
    settings = {
        "task": {"type": "pairwise", "instructions": INSTRUCTIONS, "labels": labels},
        "labeler": [{"backend": "embedding"}],
    }
    (folder / PROJECT_FILE).write_text(yaml.safe_dump(settings), encoding="utf-8")
    golden, regular = folder / "golden.jsonl", folder / "regular.jsonl"
    golden.write_text("".join(json.dumps(r) + "\n" for r in rows[:30]), encoding="utf-8")
    regular.write_text(
        "".join(json.dumps({k: v for k, v in r.items() if k != "gold"}) + "\n" for r in rows[30:])
    )
    with Project.open(folder) as project:
        project.import_file(golden, role="golden", gold_column="gold")
        project.import_file(regular)
        project.run()
        with project.store.read() as session:
            finals = session.execute(
                select(FinalLabel.label, Item.fields).join(Item, Item.id == FinalLabel.item_id)
            ).all()
        expected = system_ranking([label for label, _ in finals], [f for _, f in finals])
        assert expected, "some final labels name their systems"
        html = write_report(project, tmp_path / "report.html").read_text(encoding="utf-8")
    table = html.split('<table id="systems">')[1].split("</table>")[0]
    shown = re.findall(r"<tr><td>(\w+)</td><td class=\"n\">([\d.]+)</td><td class=\"n\">(\d+)</td>", table)
    assert [(name, int(pairs)) for name, _, pairs in shown] == [(r["system"], r["pairs"]) for r in expected]
    assert [float(s) for _, s, _ in shown] == pytest.approx([r["strength"] for r in expected], abs=1e-3)
