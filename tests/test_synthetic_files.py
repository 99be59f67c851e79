"""Synthetic items reviewed outside the app (issue 16 item 2): ``duolabel synthetic review
--export`` / ``--import`` round trips through CSV and JSONL, a bad file names its problems and
records nothing, ``duolabel synthetic summary`` prints the acceptance per label and leaf, and
``duolabel export --include-synthetic`` carries the review columns. Real store, real CLI."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from duolabel.cli import app
from duolabel.labelers.generation import Generated
from duolabel.ledger import ledger_run
from duolabel.people.accounts import add_annotator
from duolabel.project import Project
from duolabel.store import SyntheticItem
from duolabel.synthetic import _store_item
from duolabel.synthetic_decisions import import_decisions
from tests.test_synthetic_review import add_synthetic
from tests.web_fixtures import PASSWORD, add_gold_items, make_project

FORMULA = '=HYPERLINK("http://x","refund") I want my money back.'


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A closed project with the 5 synthetic items of test_synthetic_review, one more whose
    text a spreadsheet would run, an expert, an annotator and two golden items."""
    folder = tmp_path / "proj"
    project = make_project(folder)
    add_annotator(project.store, "erin", PASSWORD, role="expert")
    add_annotator(project.store, "anna", PASSWORD, role="annotator")
    add_synthetic(project)
    with ledger_run(project.store, "generate", {"mode": "zero-shot"}) as run:
        _store_item(project, run.id, "synthetic-5", Generated(FORMULA), label="billing", mode="zero-shot",
                    leaf=None, judged_label="shipping")  # fmt: skip
    add_gold_items(project, 2)
    project.close()
    return folder


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), prog_name="duolabel", env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def duolabel(*args: str) -> subprocess.CompletedProcess:
    """The installed entry point, for the exit code and message of a user error."""
    command = [sys.executable, "-c", "from duolabel.cli import main; main()", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def reviews(folder: Path) -> dict[str, tuple]:
    with Project.open(folder) as project, project.store.read() as session:
        rows = session.execute(
            select(SyntheticItem.item_id, SyntheticItem.review, SyntheticItem.reviewed_by,
                   SyntheticItem.reviewed_at)
        ).all()  # fmt: skip
    return {r.item_id: (r.review, r.reviewed_by, r.reviewed_at) for r in rows}


def test_a_csv_round_trip_records_decisions_once_and_defuses_formulas(folder, tmp_path):
    file = tmp_path / "review.csv"
    said = cli("synthetic", "review", "--export", str(file), "-p", str(folder))
    assert f"Wrote 6 synthetic items waiting for review to {file}" in said
    with file.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["id", "text", "label", "leaf", "mode", "judged_label", "decision", "reviewer"]
    assert [r["id"] for r in rows] == [f"synthetic-{i}" for i in range(6)]
    assert rows[5]["text"] == "'" + FORMULA and rows[5]["judged_label"] == "shipping"
    assert rows[0]["leaf"] == "refunds" and rows[4]["leaf"] == "" and rows[0]["decision"] == ""

    for row, decision, who in zip(rows, ["accept", "Reject", "accept", "", "reject", "accept"],
                                  ["erin", "erin", "", "", "", "erin"], strict=True):  # fmt: skip
        row["decision"], row["reviewer"] = decision, who
    with file.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    said = cli("synthetic", "review", "--import", str(file), "-p", str(folder))
    assert "Read 6 rows" in said and "3 accepted, 2 rejected, 0 already so, 1 left undecided" in said
    first = reviews(folder)
    erin = first["synthetic-0"][1]
    assert erin is not None
    assert {k: v[:2] for k, v in first.items()} == {
        "synthetic-0": ("accepted", erin), "synthetic-1": ("rejected", erin),
        "synthetic-2": ("accepted", None), "synthetic-3": (None, None),
        "synthetic-4": ("rejected", None), "synthetic-5": ("accepted", erin),
    }  # fmt: skip
    # The same file again changes nothing (the first time stays); only the undecided item waits.
    assert "0 accepted, 0 rejected, 5 already so" in cli("synthetic", "review", "--import", str(file), "-p",
                                                         str(folder))  # fmt: skip
    assert reviews(folder) == first
    cli("synthetic", "review", "--export", str(file), "-p", str(folder))
    assert [r["id"] for r in csv.DictReader(file.read_text(encoding="utf-8").splitlines())] == ["synthetic-3"]

    summary = cli("synthetic", "summary", "-p", str(folder))
    assert "Acceptance per label" in summary and "Acceptance per taxonomy leaf" in summary
    lines = [" ".join(line.replace("│", " ").split()) for line in summary.splitlines()]
    assert "billing 4 0 3 1 75%" in lines  # items, pending, accepted, rejected, rate
    assert "shipping 2 1 0 1 0%" in lines
    assert "all 6 1 3 2 60%" in lines
    assert "billing refunds 2 0 1 1 50%" in lines and "shipping delays 1 1 0 0 -" in lines


def test_a_bad_file_names_every_problem_and_records_nothing(folder, tmp_path):
    file = tmp_path / "bad.csv"
    file.write_text(
        "id,decision,reviewer\n"
        "synthetic-0,accept,erin\n"  # good, but the file is refused as a whole
        "synthetic-1,maybe,\n"
        "synthetic-9,accept,\n"
        "synthetic-2,reject,anna\n"  # an annotator may not review synthetic items
        "synthetic-0,reject,\n"
        ",accept,\n",
        encoding="utf-8",
    )
    before = reviews(folder)
    bad = duolabel("synthetic", "review", "--import", str(file), "-p", str(folder))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    message = " ".join(bad.stderr.split())
    for expected in (
        f"{file}, row 3, column 'decision': got 'maybe', expected accept or reject",
        f"{file}, row 4, column 'id': no synthetic item 'synthetic-9' in the project",
        f"{file}, row 5, column 'reviewer': no active expert or admin account 'anna'",
        f"{file}, row 6, column 'id': 'synthetic-0' is decided again (row 2)",
        f"{file}, row 7, column 'id': got an empty id",
        "No decision was recorded.",
    ):
        assert expected in message, message
    assert reviews(folder) == before

    file.write_text("id,verdict\nsynthetic-0,accept\n", encoding="utf-8")
    missing = duolabel("synthetic", "review", "--import", str(file), "-p", str(folder))
    assert missing.returncode == 2 and f"{file}, row 1, column 'decision': missing column" in missing.stderr
    both = duolabel("synthetic", "review", "-p", str(folder))
    assert both.returncode == 2 and "give --export FILE" in both.stderr
    assert reviews(folder) == before


def test_a_jsonl_round_trip_with_a_default_reviewer(folder, tmp_path):
    file = tmp_path / "review.jsonl"
    cli("synthetic", "review", "--export", str(file), "--label", "shipping", "-p", str(folder))
    rows = [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines()]
    assert [(r["id"], r["leaf"], r["decision"]) for r in rows] == [("synthetic-3", "delays", None),
                                                                    ("synthetic-4", None, None)]  # fmt: skip
    file.write_text("".join(json.dumps({**r, "decision": "reject"}) + "\n" for r in rows), encoding="utf-8")
    with Project.open(folder) as project:
        with pytest.raises(Exception, match="--reviewer 'nobody': no active expert or admin account"):
            import_decisions(project, file, reviewer="nobody")
        (tmp_path / "odd.jsonl").write_text('{"id": 3, "decision": "accept"}\n', encoding="utf-8")
        with pytest.raises(Exception, match="row 1, column 'id': got 3, expected text"):
            import_decisions(project, tmp_path / "odd.jsonl")
        done = import_decisions(project, file, reviewer="erin")
        assert (done.rows, done.changed["rejected"], done.unchanged) == (2, 2, 0)
    stored = reviews(folder)
    assert stored["synthetic-3"][0] == stored["synthetic-4"][0] == "rejected"
    assert stored["synthetic-3"][1] is not None and stored["synthetic-0"][0] is None


@pytest.mark.parametrize("suffix", ["csv", "jsonl", "parquet"])
def test_the_export_carries_the_review_columns_of_synthetic_items(folder, tmp_path, suffix):
    with Project.open(folder) as project:
        decided = tmp_path / "decided.csv"
        decided.write_text(
            "id,decision,reviewer\nsynthetic-0,accept,erin\nsynthetic-1,reject,\n", encoding="utf-8"
        )
        import_decisions(project, decided)
        out = tmp_path / f"labels.{suffix}"
        project.export(out, include_pending=True, include_synthetic=True)
        plain = tmp_path / f"plain.{suffix}"
        project.export(plain, include_pending=True)
    frame = {
        "csv": lambda p: pd.read_csv(p, dtype=str, keep_default_na=False),
        "jsonl": lambda p: pd.read_json(p, lines=True, dtype=False),
        "parquet": pd.read_parquet,
    }[suffix]
    table, before = frame(out).set_index("id"), frame(plain)
    review = ["synthetic", "synthetic_review", "synthetic_reviewer", "judged_label"]
    at = list(table.columns).index("synthetic")
    assert list(table.columns[at:]) == [*review, "p_billing", "p_shipping", "p_other"]
    assert not set(review) & set(before.columns)  # a plain export is as it was
    empty = "" if suffix == "csv" else None
    got = {
        i: tuple(None if pd.isna(v) else v for v in table.loc[i, review[1:]])
        for i in ("synthetic-0", "synthetic-1", "synthetic-5", "gold-000")
    }
    assert got == {
        "synthetic-0": ("accepted", "erin", empty),
        "synthetic-1": ("rejected", empty, empty),
        "synthetic-5": ("pending", empty, "shipping"),
        "gold-000": (empty, empty, empty),
    }
    if suffix == "csv":
        assert table.loc["synthetic-5", "text"] == "'" + FORMULA
