"""Bring your own predictions (issue 13 item 1): a file of outputs made elsewhere becomes an
external labeler's predictions, and the whole loop runs on it as on a built-in labeler."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sqlalchemy import select
from typer.testing import CliRunner

from duolabel import Project
from duolabel.cli import app
from duolabel.errors import DataError, DuolabelError, LabelerError, ProjectError
from duolabel.store import Prediction, Run

LABELS = ["book", "not_book"]
N_GOLDEN, N_REGULAR = 30, 40


def _write(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _truth() -> dict[str, str]:
    rng = np.random.default_rng(0)
    ids = [f"g{i}" for i in range(N_GOLDEN)] + [f"r{i}" for i in range(N_REGULAR)] + ["c0", "c1"]
    return {i: LABELS[int(rng.integers(2))] if i[0] != "g" else LABELS[int(i[1:]) % 2] for i in ids}


def _model(seed: int = 1) -> dict[str, tuple[str, float]]:
    """An outside model's answers: confident ones mostly right, unsure ones often wrong."""
    rng = np.random.default_rng(seed)
    answers = {}
    for item, gold in _truth().items():
        confidence = float(rng.choice([0.6, 0.75, 0.9, 0.99]))
        right = rng.random() < confidence
        answers[item] = (gold if right else LABELS[1 - LABELS.index(gold)], confidence)
    return answers


def make_project(folder: Path, database_url: str | None = None) -> Path:
    folder.mkdir()
    truth = _truth()
    rows = [[i, f"review {i}", truth[i]] for i in truth]
    _write(folder / "golden.csv", ["id", "text", "label"], [r for r in rows if r[0][0] == "g"])
    _write(folder / "items.csv", ["id", "text", "gold"], [r for r in rows if r[0][0] == "r"])
    _write(folder / "controls.csv", ["id", "text", "label"], [r for r in rows if r[0][0] == "c"])
    config: dict[str, object] = {
        "task": {"labels": [{"name": n, "description": f"about {n}"} for n in LABELS]},
        "data": [
            {"path": "golden.csv", "role": "golden", "gold_column": "label"},
            {"path": "controls.csv", "role": "control", "gold_column": "label"},
            {"path": "items.csv", "gold_column": "gold"},
        ],
        "labeler": [{"backend": "external", "name": "gpt"}],
        "routing": {"mode": "fixed", "threshold": 0.8},
    }
    if database_url:
        config["database_url"] = database_url
    (folder / "duolabel.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return folder


def predictions_file(path: Path, answers: dict[str, tuple[str, float]]) -> Path:
    rows = [[item, label, confidence, 0.001] for item, (label, confidence) in answers.items()]
    return _write(path, ["id", "label", "confidence", "cost"], rows)


def cli(*args: str) -> tuple[int, str]:
    """Exit code and output of a command, a user error as ``main()`` prints it."""
    result = CliRunner().invoke(app, list(args), prog_name="duolabel")
    if isinstance(result.exception, DuolabelError):
        return result.exception.exit_code, f"error: {result.exception}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_imported_predictions_run_the_whole_loop(tmp_path, database_url):
    folder = make_project(tmp_path / "p", database_url)
    with Project.open(folder) as project:
        project.import_data()
    code, output = cli("run", str(folder))
    assert code == 2 and "duolabel import-predictions FILE --labeler gpt" in output, output

    answers = _model()
    source = predictions_file(tmp_path / "gpt.csv", answers)
    code, output = cli("import-predictions", str(source), "--labeler", "gpt", "-p", str(folder))
    assert code == 0, output
    assert f"{N_GOLDEN + N_REGULAR} predictions stored ({N_GOLDEN} on golden items" in output
    assert "2 control items skipped" in output

    code, output = cli("run", str(folder))
    assert code == 0, output
    with Project.open(folder) as project, project.store.read() as session:
        version = project.status().model_version
        preds = session.scalars(select(Prediction).where(Prediction.labeler == "external:gpt")).all()
        assert {p.model_version for p in preds} == {version}
        assert all(p.calibrated is not None for p in preds)
        assert {p.item_id for p in preds if p.out_of_fold} == {f"g{i}" for i in range(N_GOLDEN)}
        # Only what was imported is paid for: the labeling stage itself costs nothing.
        cost = sum(r.cost for r in session.scalars(select(Run).where(Run.kind == "label")))
        assert cost == pytest.approx(0.001 * (N_GOLDEN + N_REGULAR))
        path = project.resolve(project.config.export.path)
    exported = pd.read_csv(path)
    assert {"p_book", "p_not_book", "model_label"} <= set(exported.columns)
    assert set(exported["source"]) >= {"model"}, exported["source"].value_counts()
    for row in exported.itertuples():
        label, confidence = answers[row.id]
        # The calibrated distribution is monotone in the imported confidence: its top label
        # is the outside model's answer.
        assert row.model_label == label
        assert row.p_book + row.p_not_book == pytest.approx(1, abs=1e-5)

    # Simulation replays the routing on the regular items (their gold is known) with answers.
    rng = np.random.default_rng(2)
    truth = _truth()
    recorded = [
        [
            f"r{i}",
            f"w{w}",
            truth[f"r{i}"] if rng.random() < 0.85 else LABELS[1 - LABELS.index(truth[f"r{i}"])],
        ]
        for i in range(N_REGULAR)
        for w in range(3)
    ]
    answers_file = _write(tmp_path / "answers.csv", ["item", "worker", "label"], recorded)
    code, output = cli("simulate", str(folder), "--answers", str(answers_file))
    assert code == 0 and "threshold" in output, output

    # The same predictions again, even as Parquet in another order: nothing changes.
    frame = pd.read_csv(source).sample(frac=1, random_state=0)
    frame.to_parquet(tmp_path / "gpt.parquet")
    for again in (source, tmp_path / "gpt.parquet"):
        code, output = cli("import-predictions", str(again), "--labeler", "external:gpt", "-p", str(folder))
        assert code == 0 and "already imported" in output, output

    # A changed file is a new version, and the next run works on it.
    changed = dict(answers, r0=(answers["r0"][0], 0.51))
    code, output = cli(
        "import-predictions",
        str(predictions_file(tmp_path / "gpt2.csv", changed)),
        "--labeler",
        "gpt",
        "-p",
        str(folder),
    )
    assert code == 0 and "predictions stored" in output, output
    code, output = cli("run", str(folder))
    assert code == 0, output
    with Project.open(folder) as project, project.store.read() as session:
        versions = set(
            session.scalars(select(Prediction.model_version).where(Prediction.labeler == "external:gpt"))
        )
        assert len(versions) == 2
        report = project.resolve("report.html")
    code, output = cli("report", str(folder), "--out", str(report))
    assert code == 0 and report.exists(), output
