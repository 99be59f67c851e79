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
from sqlalchemy import select, text
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
    if database_url:  # the run refreshed the planner's statistics of what it routed (issue 12)
        with Project.open(folder) as project, project.store.read() as session:
            analyzed = "SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'routes'"
            assert session.execute(text(analyzed)).scalar() is not None
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


def test_a_bad_file_names_every_bad_row_and_imports_nothing(tmp_path):
    folder = make_project(tmp_path / "p")
    bad = _write(
        tmp_path / "bad.csv",
        ["id", "label", "confidence", "cost"],
        [
            ["g0", "book", 0.9, ""],
            ["nope", "book", 0.9, ""],  # row 3: not an item of the project
            ["g1", "magazine", 0.9, ""],  # row 4: not a label
            ["g2", "book", 1.5, ""],  # row 5: not a probability
            ["g0", "book", 0.8, ""],  # row 6: id again
            ["g3", "book", "", ""],  # row 7: label without confidence
            ["g4", "book", 0.7, "-1"],  # row 8: negative cost
            ["g5", "", "", ""],  # an abstention: fine
        ],
    )
    with Project.open(folder) as project:
        project.import_data()
        with pytest.raises(DataError) as caught:
            project.import_predictions(bad, labeler="gpt")
        where = {(p.row, p.column) for p in caught.value.problems}
        assert where == {
            (3, "id"),
            (4, "label"),
            (5, "confidence"),
            (6, "id"),
            (7, "confidence"),
            (8, "cost"),
        }, caught.value.problems
        assert "no item 'nope' in the project" in str(caught.value)
        assert "'magazine'" in str(caught.value)
        with project.store.read() as session:
            assert session.scalars(select(Prediction)).all() == []
            assert session.scalars(select(Run).where(Run.kind == "label")).all() == []
        # Columns are checked before any row: neither kind of file, or a p_ column of no label.
        with pytest.raises(DataError, match="missing column; give label and confidence"):
            project.import_predictions(pd.DataFrame({"id": ["g0"], "label": ["book"]}), labeler="gpt")
        with pytest.raises(DataError, match="'magazine' is not a label of the project"):
            project.import_predictions(
                pd.DataFrame({"id": ["g0"], "p_book": [0.5], "p_not_book": [0.5], "p_magazine": [0]}),
                labeler="gpt",
            )
        with pytest.raises(ProjectError, match=r"add '- \{backend: external, name: claude\}'"):
            project.import_predictions(bad, labeler="claude")


def test_distributions_are_checked_normalised_and_abstentions_kept(tmp_path):
    folder = make_project(tmp_path / "p")
    lines = [
        {"id": "g0", "p_book": 0.701, "p_not_book": 0.3, "label": "book"},  # sums to 1.001: kept
        {"id": "g1", "p_book": 0.2, "p_not_book": 0.7},  # sums to 0.9: refused
        {"id": "g2", "p_book": 0.4, "p_not_book": 0.6, "label": "book"},  # label not the top one
        {"id": "g3", "p_book": None, "p_not_book": None},  # abstention
        {"id": "g4", "p_book": 0.5},  # a label's probability missing
    ]
    path = tmp_path / "dist.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    with Project.open(folder) as project:
        project.import_data()
        with pytest.raises(DataError) as caught:
            project.import_predictions(path, labeler="gpt")
        assert {(p.row, p.column) for p in caught.value.problems} == {
            (2, None),
            (3, "label"),
            (5, "p_not_book"),
        }, caught.value.problems
        assert "sum to 0.9, expected 1 (within 0.01)" in str(caught.value)
        path.write_text("".join(json.dumps(line) + "\n" for line in (lines[0], lines[3])), encoding="utf-8")
        result = project.import_predictions(path, labeler="gpt")
        assert (result.added, result.golden, result.abstained) == (2, 2, 1)
        with project.store.read() as session:
            stored = {p.item_id: p for p in session.scalars(select(Prediction))}
        assert stored["g0"].probs["book"] == pytest.approx(0.701 / 1.001)
        assert stored["g0"].label == "book" and stored["g0"].out_of_fold
        assert stored["g3"].abstained and stored["g3"].label == ""
        # The labeling stage names what the version lacks, and the command that fixes it.
        with pytest.raises(
            LabelerError, match=r"68 items have no imported prediction \(g1, g2, g4, g5, g6 and 63 more\)"
        ):
            project.label()


def test_confidence_spreads_the_rest_evenly(tmp_path):
    folder = make_project(tmp_path / "p")
    with Project.open(folder) as project:
        project.import_data()
        result = project.import_predictions(
            pd.DataFrame({"id": ["r0", "r1"], "label": ["book", "not_book"], "confidence": [0.9, 0.3]}),
            labeler="gpt",
        )
        assert (result.file, result.added, result.golden) == ("DataFrame", 2, 0)
        with project.store.read() as session:
            stored = {p.item_id: p for p in session.scalars(select(Prediction))}
    assert stored["r0"].probs == pytest.approx({"book": 0.9, "not_book": 0.1})
    # A confidence under 1/K makes another label the most probable: the stored label follows it.
    assert (
        stored["r1"].probs == pytest.approx({"book": 0.7, "not_book": 0.3}) and stored["r1"].label == "book"
    )


def test_a_cell_that_is_not_a_number_is_named_once(tmp_path):
    """An independent tester saw "row 5, column 'p_billing': got nan" twice: once as not a
    number, once more as out of [0, 1]."""
    folder = make_project(tmp_path / "p")
    bad = _write(tmp_path / "nan.csv", ["id", "p_book", "p_not_book"], [["g0", "nan", 1.0]])
    with Project.open(folder) as project:
        project.import_data()
        with pytest.raises(DataError) as caught:
            project.import_predictions(bad, labeler="gpt")
    assert [(p.row, p.column) for p in caught.value.problems] == [(2, "p_book")], caught.value.problems
