"""``duolabel report`` and ``duolabel simulate`` on a multi-label project, as a user runs them:
a small goemotions project (the bundled MiniLM encoder, real comments), ``duolabel run``,
people's answers to the queued items, then the two commands' output checked against figures
computed here from the store."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from sqlalchemy import select

from duolabel.config import PROJECT_FILE
from duolabel.project import Project
from duolabel.store import Item, Prediction, Route
from tests.test_multilabel_routing import CHOSEN, goemotions_project
from tests.test_pipeline import answer, cli


def _with_regular_gold(folder: Path) -> dict[str, str]:
    """Twenty regular comments with their gold lists (so simulate can replay them), ten with some
    of the chosen labels and ten with none; returns their canonical gold lists."""
    from tests.conftest import shared_data

    rows = [
        json.loads(line)
        for line in (shared_data("goemotions") / "items.jsonl").read_text("utf-8").splitlines()
    ]
    golden = {json.loads(line)["id"] for line in (folder / "golden.jsonl").read_text().splitlines()}
    rest = [{**r, "gold": [g for g in r["gold"] if g in CHOSEN]} for r in rows if r["id"] not in golden]
    regular = [r for r in rest if r["gold"]][:10] + [r for r in rest if not r["gold"]][:10]
    lines = [json.dumps({"id": r["id"], "text": r["text"], "gold": r["gold"]}) + "\n" for r in regular]
    (folder / "items.jsonl").write_text("".join(lines))
    settings = yaml.safe_load((folder / PROJECT_FILE).read_text())
    settings["data"][1]["gold_column"] = "gold"
    (folder / PROJECT_FILE).write_text(yaml.safe_dump(settings))
    return {r["id"]: json.dumps([c for c in CHOSEN if c in r["gold"]]) for r in regular}


def _micro_f1(given: list[str], gold: list[str]) -> float:
    pairs = [(set(json.loads(a)), set(json.loads(b))) for a, b in zip(given, gold, strict=True)]
    hits = sum(len(a & b) for a, b in pairs)
    return 2 * hits / sum(len(a) + len(b) for a, b in pairs)


def _line(output: str, start: str) -> list[str]:
    row = next(line for line in output.splitlines() if line.strip("│ ").startswith(start))
    return [cell.strip() for cell in row.split("│") if cell.strip()]


@pytest.mark.slow
def test_report_and_simulate_a_multi_label_project(tmp_path: Path):
    folder = goemotions_project(tmp_path / "p", routing={"mode": "target", "target_accuracy": 0.7})
    gold = _with_regular_gold(folder)
    result = cli("run", str(folder))
    assert result.returncode == 0, result.stderr
    with Project.open(folder) as project:
        with project.store.read() as session:
            routed = dict(session.execute(select(Route.item_id, Route.decision)).all())
            golden = session.execute(
                select(Prediction.label, Item.gold_label)
                .join(Item, Item.id == Prediction.item_id)
                .where(Item.role == "golden", Prediction.out_of_fold.is_(True))
            ).all()
            regular = dict(
                session.execute(
                    select(Prediction.item_id, Prediction.label)
                    .join(Item, Item.id == Prediction.item_id)
                    .where(Item.role == "regular")
                ).all()
            )
        # Two of three people give the gold list, one the empty list: the majority is gold.
        answer(
            project, list(gold), ["ann", "bob", "cy"], lambda item, who: "[]" if who == "cy" else gold[item]
        )

    report = cli("report", str(folder))
    assert report.returncode == 0, report.stderr
    html = (folder / "report.html").read_text(encoding="utf-8")
    subset = np.mean([label == g for label, g in golden])
    assert re.search(rf"subset accuracy \(whole list right\)</td><td>{subset:.3f}<", html)
    for label in CHOSEN:
        assert f"<td>{label}</td>" in html
    assert "per-label product" in html and "calibrated on the golden items (routed on)" in html
    share = sum(d != "accept" for d in routed.values()) / len(routed)
    assert f"human share</td><td>{share:.3f}<" in html

    wide = {**os.environ, "COLUMNS": "200"}  # one table row per line
    simulate = cli("simulate", str(folder), "--from-store", env=wide)
    assert simulate.returncode == 0, simulate.stderr
    out = simulate.stdout
    assert "subset accuracy" in out and "micro-F1" in out
    ids = list(gold)
    model_subset = np.mean([regular[i] == gold[i] for i in ids])
    model_f1 = _micro_f1([regular[i] for i in ids], [gold[i] for i in ids])
    assert _line(out, "model alone")[-3:] == [f"{model_subset:.3f}", f"{model_f1:.3f}", "0%"]
    assert _line(out, "people alone")[-3:] == ["1.000", "1.000", "100%"]  # the majority is gold
    hybrid = _line(out, "hybrid, target 0.7")
    # Between the model and people: the model's list where accepted, people's (gold) elsewhere.
    assert model_subset <= float(hybrid[-3]) <= 1.0

    from_file = cli("simulate", str(folder))  # the default annotations.jsonl: lists come from the store
    assert from_file.returncode != 0 and "--from-store" in from_file.stderr
    assert "Traceback" not in from_file.stderr
