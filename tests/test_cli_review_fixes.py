"""Fixes from an outside review of the command line: files written through symlinks and never
over a device, pipe or folder; the golden round trip with formula-guarded ids and mixed input
columns; errors that fit the command; and counts that include imported workers."""

from __future__ import annotations

import csv
import json
import os
import re
import stat
from pathlib import Path

import pytest
import yaml

from duolabel import Project
from duolabel.errors import DataError
from duolabel.stages.learn import GOLD_COLUMN
from duolabel.store import Item
from tests.conftest import write_project
from tests.test_config_set import ok, refused


def write_rows(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def project_with(folder: Path, labels: str, *files: tuple[str, list[list[str]]]) -> Path:
    """A project made by ``init --labels`` with each CSV file (name, rows) imported in order."""
    ok("init", str(folder), "--labels", labels)
    for name, rows in files:
        ok("import", str(write_rows(folder.parent / name, rows)), "-p", str(folder))
    return folder


@pytest.fixture
def small(tmp_path: Path) -> Path:
    """A project (the labels of the example) with three items imported."""
    folder = write_project(tmp_path / "p")
    items = write_rows(
        tmp_path / "items.csv", [["id", "text"], ["a", "refund please"], ["b", "late"], ["c", "x"]]
    )
    ok("import", str(items), "-p", str(folder))
    return folder


def is_fifo(path: Path) -> bool:
    return stat.S_ISFIFO(os.stat(path).st_mode)


# ---------------------------------------------------------------------------
# 1. Files are written through symlinks; a device, pipe or folder is refused


def test_export_writes_through_a_symlink_into_its_target(small: Path, tmp_path: Path):
    real = tmp_path / "real" / "t.csv"
    real.parent.mkdir()
    real.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    ok("export", str(link), "-p", str(small), "--include-pending")
    assert link.is_symlink() and link.resolve() == real
    assert real.read_text().startswith("id,text,label")
    assert not list(tmp_path.glob("**/*.part"))


@pytest.mark.timeout(30)  # broken code opens the pipe and waits for a reader
def test_export_refuses_a_pipe_a_link_to_one_and_a_folder_and_writes_nothing(small: Path, tmp_path: Path):
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    link = tmp_path / "stdout.csv"  # like /dev/stdout: a symlink to something not a file
    link.symlink_to(fifo)
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    for target, kind in ((fifo, "named pipe"), (link, "named pipe"), (folder, "directory")):
        message = refused("export", str(target), "-p", str(small), "--include-pending")
        assert str(target) in message and kind in message and "regular file" in message, message
        assert "Nothing was exported" in message
    assert is_fifo(fifo) and link.is_symlink() and folder.is_dir() and not any(folder.iterdir())
    assert not list(tmp_path.glob("*.part"))


@pytest.mark.timeout(30)  # broken code opens the pipe and waits for a reader
@pytest.mark.parametrize(
    ("suffix", "command"),
    [
        (".json", ["export", "FILE", "--include-pending"]),  # Label Studio tasks
        (".jsonl", ["export", "FILE", "--include-pending"]),
        (".csv", ["golden", "suggest", "2", "--export", "FILE"]),
        (".csv", ["synthetic", "review", "--export", "FILE"]),
    ],
    ids=["label-studio", "jsonl", "golden-suggest", "synthetic-review"],
)
def test_every_writer_writes_through_a_symlink_and_refuses_a_pipe(
    small: Path, tmp_path: Path, suffix: str, command: list[str]
):
    def run_on(path: Path) -> list[str]:
        return [*(str(path) if c == "FILE" else c for c in command), "-p", str(small)]

    real = tmp_path / f"real{suffix}"
    real.write_text("old\n")
    link = tmp_path / f"link{suffix}"
    link.symlink_to(real)
    ok(*run_on(link))
    assert link.is_symlink() and real.read_text() != "old\n"
    fifo = tmp_path / f"pipe{suffix}"
    os.mkfifo(fifo)
    message = refused(*run_on(fifo))
    assert str(fifo) in message and "named pipe" in message, message
    assert is_fifo(fifo) and not list(tmp_path.glob("*.part"))


@pytest.mark.timeout(30)  # broken code opens the pipe and waits for a reader
def test_report_refuses_a_pipe_before_any_work(small: Path, tmp_path: Path):
    fifo = tmp_path / "report.html"
    os.mkfifo(fifo)
    message = refused("report", str(small), "--out", str(fifo))
    assert str(fifo) in message and "named pipe" in message, message
    assert is_fifo(fifo)


def test_atomic_write_keeps_the_targets_mode_and_leaves_nothing_on_failure(tmp_path: Path):
    from duolabel.files import atomic_write

    target = tmp_path / "t.csv"
    target.write_text("old")
    target.chmod(0o640)
    link = tmp_path / "dangling.csv"
    link.symlink_to(tmp_path / "new" / "made.csv")  # a dangling link: its target is created
    with atomic_write(target, outcome="Nothing was written.") as tmp:
        tmp.write_text("new")
    with atomic_write(link, outcome="Nothing was written.") as tmp:
        tmp.write_text("made")
    assert target.read_text() == "new" and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert link.is_symlink() and (tmp_path / "new" / "made.csv").read_text() == "made"
    with pytest.raises(RuntimeError), atomic_write(target, outcome="Nothing was written.") as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "new" and not list(tmp_path.glob("**/*.part"))
    with pytest.raises(DataError, match="is a directory, not a regular file"):
        atomic_write(tmp_path, outcome="Nothing was written.").__enter__()


# ---------------------------------------------------------------------------
# 2 and 3. The golden round trip: guarded ids and items with different input columns


def _fill_gold(path: Path, label: str) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row[GOLD_COLUMN] = label
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def test_formula_guarded_ids_come_back_as_the_same_items(tmp_path: Path):
    rows = [["id", "text"], ["-3", "minus"], ["@home", "at home"], ["=A1", "formula"], ["plain", "plain"]]
    project_with(tmp_path / "r", "pos,neg", ("i.csv", rows))
    ok("golden", "suggest", "10", "--export", str(tmp_path / "s.csv"), "-p", str(tmp_path / "r"))
    rows = _fill_gold(tmp_path / "s.csv", "pos")
    assert {r["id"] for r in rows} == {"'-3", "'@home", "'=A1", "plain"}
    said = ok(
        "import",
        str(tmp_path / "s.csv"),
        "-p",
        str(tmp_path / "r"),
        "--role",
        "golden",
        "--gold",
        GOLD_COLUMN,
    )
    assert "0 new items" in said, said
    with Project.open(tmp_path / "r") as project, project.store.read() as session:
        items_now = {i.id: i for i in session.query(Item)}
    assert set(items_now) == {"-3", "@home", "=A1", "plain"}
    assert all(i.role == "golden" and i.gold_label == "pos" for i in items_now.values())


def test_a_new_id_with_an_apostrophe_stays_as_it_is(tmp_path: Path):
    project_with(tmp_path / "r", "pos,neg", ("a.csv", [["id", "text"], ["-3", "minus"]]))
    # '-4 has no item -4 to be; 'x is not a guard ('x is not formula-like): both are new ids.
    again = write_rows(tmp_path / "b.csv", [["id", "text"], ["'-4", "four"], ["'x", "ex"], ["'-3", "minus"]])
    said = ok("import", str(again), "-p", str(tmp_path / "r"))
    assert "2 new items, 1 already imported" in said, said
    with Project.open(tmp_path / "r") as project, project.store.read() as session:
        assert {i.id for i in session.query(Item)} == {"-3", "'-4", "'x"}


def test_golden_suggest_writes_the_union_of_input_columns_and_it_imports_back(tmp_path: Path):
    project_with(
        tmp_path / "b",
        "x,y",
        ("two.csv", [["id", "text", "extra"], ["2", "world", "=e"], ["4", "baz", "f"]]),
        ("one.csv", [["id", "text"], ["1", "hello"], ["3", "foo bar"]]),
    )
    out = tmp_path / "s.csv"
    ok("golden", "suggest", "5", "--export", str(out), "-p", str(tmp_path / "b"))
    rows = _fill_gold(out, "x")
    assert list(rows[0]) == ["id", "text", "extra", GOLD_COLUMN]
    extra = {r["id"]: r["extra"] for r in rows}
    assert extra == {"1": "", "2": "'=e", "3": "", "4": "f"}
    said = ok("import", str(out), "-p", str(tmp_path / "b"), "--role", "golden", "--gold", GOLD_COLUMN)
    assert "0 new items" in said, said
    with Project.open(tmp_path / "b") as project, project.store.read() as session:
        items = {i.id: i for i in session.query(Item)}
    assert len(items) == 4 and all(i.role == "golden" for i in items.values())
    assert items["2"].fields == {"extra": "=e"} and items["1"].fields == {}


def test_golden_suggest_jsonl_keeps_each_items_own_columns(tmp_path: Path):
    project_with(
        tmp_path / "b",
        "x,y",
        ("one.csv", [["id", "text"], ["1", "hello"]]),
        ("two.csv", [["id", "text", "extra"], ["2", "world", "e"]]),
    )
    ok("golden", "suggest", "5", "--export", str(tmp_path / "s.jsonl"), "-p", str(tmp_path / "b"))
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "s.jsonl").read_text().splitlines())}
    assert rows["2"]["extra"] == "e" and "extra" not in rows["1"]


# ---------------------------------------------------------------------------
# 4. Errors that fit the command


def test_golden_suggest_names_the_formats_it_writes(small: Path, tmp_path: Path):
    for name in ("sug.txt", "sug", "sug.parquet"):
        message = refused("golden", "suggest", "3", "--export", str(tmp_path / name), "-p", str(small))
        assert ".csv or .jsonl" in message, message
        assert "--format" not in message and "imported" not in message, message
        assert not (tmp_path / name).exists()
    with Project.open(small) as project:
        from duolabel.people.experts import expert_queue_counts

        assert expert_queue_counts(project.store)["golden"] == 0


@pytest.mark.timeout(30)  # broken code opens the pipe and waits for a reader
def test_run_checks_export_path_before_any_work(example_copy: Path, tmp_path: Path):
    ok("config", "set", "export.path", "out", "-p", str(example_copy))
    message = refused("run", str(example_copy))
    assert "export.path" in message and ".csv" in message and ".parquet" in message, message
    assert "--format" not in message
    fifo = tmp_path / "labels.csv"
    os.mkfifo(fifo)
    ok("config", "set", "export.path", str(fifo), "-p", str(example_copy))
    message = refused("run", str(example_copy))
    assert "export.path" in message and "named pipe" in message, message
    with Project.open(example_copy) as project, project.store.read() as session:
        assert session.query(Item).count() == 0  # nothing imported, labelled or routed


# ---------------------------------------------------------------------------
# 5 and 6. Values out of range are refused


@pytest.mark.parametrize("rate", ["7", "-3", "nan", "inf", "1.0001"])
def test_audit_refuses_a_rate_outside_zero_to_one(small: Path, rate: str):
    message = refused("audit", str(small), "--rate", rate)
    assert "--rate" in message and "between 0 and 1" in message, message


@pytest.mark.parametrize("rate", ["0", "1", "0.5"])
def test_audit_takes_a_rate_between_zero_and_one(small: Path, rate: str):
    assert "Drew 0 final labels" in ok("audit", str(small), "--rate", rate)


@pytest.mark.parametrize("labels", [",", "", " , ", "a,,b", "a,"])
def test_init_refuses_empty_label_names(tmp_path: Path, labels: str):
    message = refused("init", str(tmp_path / "q"), "--labels", labels)
    assert "--labels" in message and "empty" in message, message
    assert not (tmp_path / "q" / "duolabel.yaml").exists()


def test_init_refuses_an_empty_label_option(tmp_path: Path):
    message = refused("init", str(tmp_path / "q"), "--label", " ")
    assert "empty" in message, message
    assert not (tmp_path / "q" / "duolabel.yaml").exists()
    ok("init", str(tmp_path / "q"), "--labels", " a , b ")
    labels = yaml.safe_load((tmp_path / "q" / "duolabel.yaml").read_text())["task"]["labels"]
    assert [label["name"] for label in labels] == ["a", "b"]


# ---------------------------------------------------------------------------
# 7. Imported workers' answers are counted


def test_annotators_list_counts_imported_workers_answers(example_copy: Path, tmp_path: Path):
    ok("import", str(example_copy / "tickets.csv"), "-p", str(example_copy))
    ok(
        "import",
        str(example_copy / "golden.csv"),
        "-p",
        str(example_copy),
        "--role",
        "golden",
        "--gold",
        "label",
    )
    with (example_copy / "golden.csv").open(encoding="utf-8") as handle:
        gold = next(csv.DictReader(handle))["id"]
    answers = write_rows(
        tmp_path / "a.csv",
        [
            ["item", "worker", "label"],
            ["t0001", "w1", "billing"],
            ["t0002", "w1", "billing"],
            [gold, "w1", "billing"],
        ],
    )
    ok("import-answers", str(answers), "-p", str(example_copy))
    from duolabel.people.qc import annotator_table

    with Project.open(example_copy) as project:
        table = annotator_table(project.store, project.config.quality).set_index("name")
    assert table.loc["w1", "answers"] == 3 and table.loc["w1", "controls"] == 1
    listed = ok("annotators", "list", "-p", str(example_copy))
    assert re.search(r"w1\s*│\s*annotator\s*│\s*active\s*│\s*3\s*│\s*1\s*│", listed), listed
