"""Import validation, idempotence and export, on SQLite and a real PostgreSQL server."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select

from duolabel import DataError
from duolabel.errors import ProjectError
from duolabel.store import FinalLabel, Item


def count_items(project) -> int:
    with project.store.read() as session:
        return session.scalar(select(func.count()).select_from(Item))


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


GOOD = [["id", "text", "gold"], ["a1", "refund please", "billing"], ["a2", "where is my parcel", ""]]


def test_csv_import_and_reimport_is_a_noop(project, tmp_path):
    path = write_csv(tmp_path / "items.csv", GOOD)
    first = project.import_file(path, gold_column="gold")
    assert (first.rows, first.added, first.unchanged) == (2, 2, 0)
    again = project.import_file(path, gold_column="gold")
    assert (again.added, again.unchanged) == (0, 2)
    assert count_items(project) == 2
    with project.store.read() as session:
        item = session.get(Item, "a1")
        assert (item.text, item.gold_label, item.role, item.batch) == (
            "refund please",
            "billing",
            "regular",
            "items",
        )
        assert session.get(Item, "a2").gold_label is None


def test_every_bad_row_is_reported_and_nothing_imported(project, tmp_path):
    path = write_csv(
        tmp_path / "bad.csv",
        [
            ["id", "text", "gold"],
            ["b1", "fine", "billing"],
            ["b2", "   ", "billing"],  # empty text
            ["b1", "again", "billing"],  # duplicate id
            ["b4", "typo label", "biling"],  # gold outside the label set
            ["", "no id", ""],  # empty id
            ["b6", "fine too", "shipping"],
        ],
    )
    with pytest.raises(DataError) as info:
        project.import_file(path, gold_column="gold")
    found = {(p.row, p.column) for p in info.value.problems}
    assert found == {(3, "text"), (4, "id"), (5, "gold"), (6, "id")}
    text = str(info.value)
    assert f"{path}, row 5, column 'gold': got 'biling', expected one of 'billing', 'shipping'" in text
    assert "Nothing was imported." in text
    assert count_items(project) == 0


def test_missing_column_names_the_column_and_the_fix(project, tmp_path):
    path = write_csv(tmp_path / "cols.csv", [["key", "body"], ["1", "x"]])
    with pytest.raises(DataError) as info:
        project.import_file(path)
    message = str(info.value)
    assert "column 'id': missing column" in message and "column 'text'" in message
    assert "--map" in message
    result = project.import_file(path, columns={"key": "id", "body": "text"})
    assert result.added == 1


def test_undecodable_bytes_in_csv_and_jsonl(project, tmp_path):
    csv_path = tmp_path / "latin.csv"
    csv_path.write_bytes(b"id,text\nc1,caf\xe9 au lait\nc2,fine\n")
    with pytest.raises(DataError) as info:
        project.import_file(csv_path)
    assert [(p.row, p.column) for p in info.value.problems] == [(2, "text")]
    assert "undecodable" in str(info.value)
    jsonl = tmp_path / "latin.jsonl"
    jsonl.write_bytes(b'{"id": "j1", "text": "ok"}\n{"id": "j2", "text": "caf\xe9"}\n')
    with pytest.raises(DataError) as info:
        project.import_file(jsonl)
    assert [p.row for p in info.value.problems] == [2]
    assert count_items(project) == 0


def test_malformed_json_lines_are_all_reported(project, tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text(
        '{"id": "1", "text": "ok"}\n{"id": "2", "text": \n[1, 2]\n{"id": "4"}\n', encoding="utf-8"
    )
    with pytest.raises(DataError) as info:
        project.import_file(path)
    problems = {(p.row, p.column): p.message for p in info.value.problems}
    assert "malformed JSON" in problems[(2, None)]
    assert "expected an object" in problems[(3, None)]
    assert problems[(4, "text")] == "missing field"
    assert count_items(project) == 0


def test_changed_content_under_a_known_id_is_an_error(project, tmp_path):
    project.import_file(write_csv(tmp_path / "one.csv", [["id", "text"], ["x1", "first"]]))
    with pytest.raises(DataError) as info:
        project.import_file(
            write_csv(tmp_path / "two.csv", [["id", "text"], ["x2", "new"], ["x1", "edited"]])
        )
    assert "id 'x1' is already in the project with different content" in str(info.value)
    assert count_items(project) == 1  # x2 was not imported either


def test_golden_needs_a_gold_label_per_row(project, tmp_path):
    path = write_csv(
        tmp_path / "gold.csv", [["id", "text", "label"], ["g1", "a", "billing"], ["g2", "b", ""]]
    )
    with pytest.raises(ProjectError):
        project.import_file(path, role="golden")
    with pytest.raises(DataError) as info:
        project.import_file(path, role="golden", gold_column="label")
    assert [(p.row, p.column) for p in info.value.problems] == [(3, "label")]


def test_problem_cap_counts_the_rest(project, tmp_path):
    rows = [["id", "text"]] + [[f"r{i}", ""] for i in range(80)]
    with pytest.raises(DataError) as info:
        project.import_file(write_csv(tmp_path / "empty.csv", rows))
    assert len(info.value.problems) == 50 and info.value.more == 30
    assert "and 30 more problem(s)" in str(info.value)


def test_jsonl_parquet_and_dataframe(project, tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"id": "j1", "text": "hello", "lang": "en"}])
    assert project.import_file(tmp_path / "a.jsonl").added == 1
    table = pa.table({"id": ["p1", "p2"], "text": ["one", "two"], "score": [1.5, None]})
    pq.write_table(table, tmp_path / "a.parquet")
    assert project.import_file(tmp_path / "a.parquet").added == 2
    frame = pd.DataFrame({"id": ["d1", "d2"], "text": ["x", "y"], "gold": ["billing", "account"]})
    assert project.add_items(frame, role="golden", gold_column="gold").added == 2
    assert project.add_items(frame, role="golden", gold_column="gold").unchanged == 2
    with project.store.read() as session:
        assert session.get(Item, "j1").fields == {"lang": "en"}
        assert session.get(Item, "p2").fields == {"score": None}
        assert session.get(Item, "d2").role == "golden"
    bad = pd.DataFrame({"id": ["d3"], "text": [None]})
    with pytest.raises(DataError, match=r"DataFrame, row 1, column 'text'"):
        project.add_items(bad)


def test_unknown_format_and_missing_file(project, tmp_path):
    (tmp_path / "items.txt").write_text("x")
    with pytest.raises(DataError, match="cannot tell the format"):
        project.import_file(tmp_path / "items.txt")
    with pytest.raises(DataError, match="no such file"):
        project.import_file(tmp_path / "nope.csv")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_export_writes_final_labels_with_provenance(project, tmp_path, suffix):
    project.import_file(write_csv(tmp_path / "items.csv", GOOD), gold_column="gold")
    with project.store.write() as session:
        session.add(
            FinalLabel(
                item_id="a1",
                label="billing",
                source="humans",
                confidence=2 / 3,
                votes={"billing": 2, "account": 1},
                n_votes=3,
                annotators=["ann", "bo", "cy"],
                model_probability=0.55,
            )
        )
    out = tmp_path / f"labels{suffix}"
    assert project.export(out) == 1
    frame = {
        ".csv": pd.read_csv,
        ".jsonl": lambda p: pd.read_json(p, lines=True),
        ".parquet": pd.read_parquet,
    }[suffix](out)
    row = frame.iloc[0]
    assert (row["id"], row["label"], row["source"], int(row["human_votes"])) == ("a1", "billing", "humans", 3)
    assert row["annotators"] == "ann;bo;cy"
    assert abs(row["confidence"] - 2 / 3) < 1e-6
    assert project.export(tmp_path / f"all{suffix}", include_pending=True) == 2


def test_export_keeps_the_users_own_input_columns(project, tmp_path):
    rows = [
        {"id": "a", "text": "refund please", "customer": "c-17", "source": "email", "vip": True},
        {"id": "b", "text": "where is my parcel", "customer": "c-18", "priority": 2},
    ]
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    project.import_file(path)
    project.export(tmp_path / "out.csv", include_pending=True)
    with (tmp_path / "out.csv").open(encoding="utf-8") as handle:
        exported = {r["id"]: r for r in csv.DictReader(handle)}
    # The input columns follow duolabel's; one named like a duolabel column gets a prefix.
    assert exported["a"]["customer"] == "c-17" and exported["b"]["priority"] == "2"
    assert exported["a"]["field_source"] == "email" and exported["a"]["source"] == "pending"
    assert exported["a"]["vip"] == "True" and exported["b"]["vip"] == ""
    project.export(tmp_path / "out.jsonl", include_pending=True)
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert lines[0]["vip"] is True and lines[1]["priority"] == 2  # exact in JSONL
    project.export(tmp_path / "out.parquet", include_pending=True)
    table = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert table[0]["customer"] == "c-17" and table[1]["priority"] == "2"


def test_export_writes_each_text_field_in_its_own_column(tmp_path):
    from tests.webui_fixtures import ROWS, fielded_project

    project = fielded_project(tmp_path / "p")
    try:
        project.export(tmp_path / "out.csv", include_pending=True)
        with (tmp_path / "out.csv").open(encoding="utf-8") as handle:
            exported = {r["id"]: r for r in csv.DictReader(handle)}
        project.export(tmp_path / "out.jsonl", include_pending=True)
        lines = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
        jsonl = {r["id"]: r for r in map(json.loads, lines)}
    finally:
        project.close()
    for item_id, title, body, drug, _ in ROWS:
        for row in (exported[item_id], jsonl[item_id]):
            # the fields as imported, not split back out of the joined text
            assert (row["title"], row["body"], row["drug"] or "") == (title, body, drug)
            assert row["text"] == f"{title}\n\n{body}"
    assert list(exported["r1"]).index("title") < list(exported["r1"]).index("drug")  # text fields first
