"""``duolabel run`` without golden items (issue 13): with ``routing.dataset_source: sample`` and
a labeler that needs no training, the whole loop runs through the command line, skips
calibration and says so, waits for people's labels on the sample, and routes the rest on the
next run; a labeler that trains on golden items says what to do instead."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from sqlalchemy import select

from duolabel import Project
from duolabel.stages.route_sample import sample_state
from duolabel.store import FinalLabel, Route
from tests.conftest import shared_data
from tests.test_pac_route import SAMPLE, _project, _truth
from tests.test_pipeline import answer
from tests.test_predictions import cli


def _labelled_rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "out" / "labels.csv").open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_run_without_golden_items_waits_for_the_sample_then_routes_the_rest(tmp_path, database_url):
    folder = _project(tmp_path / "p", database_url)
    truth = _truth()
    # The first run imports the items and asks for the outside model's predictions.
    code, output = cli("run", str(folder))
    assert code == 2 and "duolabel import-predictions FILE --labeler gpt" in output, output
    code, output = cli("import-predictions", str(folder / "gpt.csv"), "--labeler", "gpt", "-p", str(folder))
    assert code == 0, output

    code, output = cli("run", str(folder))
    assert code == 0, output
    assert "Calibration: skipped, the project has no golden items" in output
    assert f"waiting for people's labels on {SAMPLE} of the {SAMPLE} sampled items" in output
    # The target is certified from the sample: no warning asks for golden items.
    assert "golden items even for a model" not in output
    code, output = cli("calibrate", str(folder))
    assert code == 2 and "calibration is skipped, the project has no golden items" in output, output
    code, output = cli("plan", "-p", str(folder))
    assert code == 0 and "too few golden items" not in output, output
    code, output = cli("status", str(folder))
    assert code == 0 and f"waiting for people's labels on {SAMPLE} of the {SAMPLE}" in output, output
    # The report's views read golden items: it says so in one line rather than failing inside.
    code, output = cli("report", str(folder))
    assert code == 2 and "reads the golden items and this project has none" in output, output
    with Project.open(folder) as project:
        state = sample_state(project)
        assert state is not None and state.missing == SAMPLE
        answer(project, state.items, ["ann"], lambda item, _: truth[item])

    # The next run aggregates the answers, certifies from them and routes every other item.
    code, output = cli("run", str(folder))
    assert code == 0, output
    assert "waiting for people's labels" not in output
    assert "Calibration: skipped" in output
    with Project.open(folder) as project, project.store.read() as session:
        routes = {r.item_id: r.decision for r in session.scalars(select(Route))}
        final = {f.item_id: f for f in session.scalars(select(FinalLabel))}
    assert len(routes) == len(truth) and "accept" in routes.values()
    assert all(routes[i] == "humans" and final[i].source == "humans" for i in state.items)
    accepted = [i for i, d in routes.items() if d == "accept"]
    assert all(final[i].source == "model" for i in accepted)
    assert {r["id"] for r in _labelled_rows(folder)} >= set(accepted) | set(state.items)


def test_a_labeler_that_trains_on_golden_items_says_what_to_do_without_them(tmp_path, database_url):
    folder = _project(tmp_path / "p", database_url)
    config = yaml.safe_load((folder / "duolabel.yaml").read_text(encoding="utf-8"))
    config["labeler"] = [{"backend": "embedding"}]
    (folder / "duolabel.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    code, output = cli("run", str(folder))
    assert code == 2
    assert "too few golden items" in output and "'embedding' labeler trains on golden items" in output
    assert "routing.dataset_source: sample" in output and "import-predictions" in output
    # Without sample routing, the same error points at the sample too.
    config["routing"] = {"mode": "target"}
    (folder / "duolabel.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    code, output = cli("run", str(folder))
    assert code == 2 and "routing.dataset_source: sample" in output


@pytest.mark.slow
def test_run_without_golden_items_with_the_bundled_gemma_zero_shot(tmp_path):
    """The real Gemma 3 270M labels 16 amazon reviews zero-shot; the run waits for the sample."""
    pytest.importorskip("llama_cpp", reason="pip install 'duolabel[llama]'")
    with (shared_data("amazon_isbook") / "items.jsonl").open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    picked = np.random.default_rng(3).choice(len(rows), size=16, replace=False)
    folder = tmp_path / "g"
    folder.mkdir()
    with (folder / "items.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        writer.writerows([rows[i]["id"], rows[i]["text"][:200]] for i in picked)
    config = {
        "task": {
            "instructions": "Decide whether the Amazon review is about a book.",
            "labels": [
                {"name": "book", "description": "the product is a book"},
                {"name": "not_book", "description": "any other product"},
            ],
        },
        "data": [{"path": "items.csv"}],
        "labeler": [{"backend": "llama", "few_shot": 0, "n_ctx": 512, "n_threads": 1}],
        "routing": {
            "policy": "threshold",  # one answer per sampled item, as given below
            "mode": "target",
            "guarantee": "dataset",
            "dataset_source": "sample",
            "sample_size": 6,
            "target_accuracy": 0.6,
            "risk": 0.2,
            "overlap": 1,
        },
    }
    (folder / "duolabel.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    code, output = cli("run", str(folder))
    assert code == 0, output
    assert "Calibration: skipped" in output
    assert "waiting for people's labels on 6 of the 6 sampled items" in output
    with Project.open(folder) as project:
        state = sample_state(project)
        assert state is not None and state.missing == 6 and state.population == 16
        answer(project, state.items[:3], ["ann"], lambda item, _: "book")
    # Half of the answers: the next run still waits, and says for how many.
    code, output = cli("run", str(folder))
    assert code == 0 and "waiting for people's labels on 3 of the 6 sampled items" in output, output
