"""Issue 12: CSV formula injection, malformed and badly typed imports, control items,
imported human answers, and the smaller friction a new user met."""

from __future__ import annotations

import csv
import json
import os
import stat
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from duolabel import DataError, Project
from duolabel.errors import ProjectError
from duolabel.store import Annotation, Annotator, FinalLabel, Item
from tests.conftest import write_project
from tests.test_io import write_csv


def count(project, table=Item) -> int:
    with project.store.read() as session:
        return session.scalar(select(func.count()).select_from(table))


def final(item_id: str, label: str, annotators: list[str]) -> FinalLabel:
    return FinalLabel(
        item_id=item_id,
        label=label,
        source="humans",
        confidence=1.0,
        votes={label: len(annotators)},
        n_votes=len(annotators),
        annotators=annotators,
        model_probability=None,
    )


# ---------------------------------------------------------------------------
# 5. CSV formula injection


FORMULAS = ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\tcmd", "\rcmd"]


def test_export_csv_defuses_formulas_and_jsonl_parquet_stay_exact(project, tmp_path):
    ids = [f"{f}id{i}" for i, f in enumerate(FORMULAS[:4])]
    project.import_file(write_csv(tmp_path / "items.csv", [["id", "text"]] + [[i, f"{i} text"] for i in ids]))
    with project.store.write() as session:
        for n, item_id in enumerate(ids):
            session.add(final(item_id, "billing", [["=cmd|' /C calc'!A0", "\tcmd", "\rcmd", "bo"][n], "bo"]))
    project.export(tmp_path / "out.csv")
    with (tmp_path / "out.csv").open(encoding="utf-8", newline="") as handle:
        cells = [cell for row in csv.reader(handle) for cell in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert '\'=HYPERLINK("http://x")id0' in cells and "'=cmd|' /C calc'!A0;bo" in cells
    project.export(tmp_path / "out.jsonl")
    exact = [json.loads(line)["id"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert exact == ids
    project.export(tmp_path / "out.parquet")
    assert list(pd.read_parquet(tmp_path / "out.parquet")["id"]) == exact


def test_admin_csv_and_export_share_one_rule():
    from duolabel.export import defuse_formula
    from duolabel.web import pages

    assert pages.defuse_formula is defuse_formula
    assert defuse_formula("-1") == "'-1" and defuse_formula(-1) == -1 and defuse_formula("a=b") == "a=b"


# ---------------------------------------------------------------------------
# 11. Badly typed values and malformed rows are refused with file, row and column


def problems_of(project, path, **options) -> list[str]:
    with pytest.raises(DataError) as info:
        project.import_file(path, **options)
    assert count(project) == 0
    return [str(p) for p in info.value.problems]


def test_parquet_binary_text_is_refused(project, tmp_path):
    path = tmp_path / "items.parquet"
    pq.write_table(pa.table({"id": ["a1", "a2"], "text": [b"refund please", b"hello"]}), path)
    found = problems_of(project, path)
    assert f"{path}, row 1, column 'text': got binary data, expected text" in found[0]


def test_lists_and_json_booleans_are_refused(project, tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text(
        json.dumps({"id": "a1", "text": ["a", "list"], "gold": None})
        + "\n"
        + json.dumps({"id": "a2", "text": "fine", "gold": True})
        + "\n"
        + json.dumps({"id": "a3", "text": "fine", "gold": None, "tags": ["x"]})
        + "\n",
        encoding="utf-8",
    )
    found = problems_of(project, path, gold_column="gold")
    assert any("row 1, column 'text': got a list" in p for p in found), found
    assert any("row 2, column 'gold': got true" in p for p in found), found
    assert any("row 3, column 'tags': got a list" in p for p in found), found


def test_unclosed_csv_quote_does_not_swallow_the_next_row(project, tmp_path):
    path = tmp_path / "items.csv"
    path.write_text('id,text\na1,"refund please\na2,"where is my parcel"\na3,ok\n', encoding="utf-8")
    found = problems_of(project, path)
    assert any(p.startswith(f"{path}, row 2") and "quote" in p for p in found), found
    path.write_text('id,text\na1,ok\na2,"refund please\na3,never closed\n', encoding="utf-8")
    found = problems_of(project, path)
    assert any(p.startswith(f"{path}, row 3") and "quote" in p for p in found), found


def test_duplicate_header_columns_are_refused(project, tmp_path):
    path = write_csv(tmp_path / "items.csv", [["id", "text", "text"], ["a1", "one", "two"]])
    found = problems_of(project, path)
    assert found == [f"{path}, row 1, column 'text': the header has this column twice"]


# Each malformed kind: (file suffix, writer, the row and column the error must name).
MALFORMED = ["binary", "list", "bool", "unclosed", "duplicate", "fields"]


def _write_malformed(tmp: Path, kind: str, texts: list[str], bad: int) -> tuple[Path, int, str | None]:
    rows = [{"id": f"i{n}", "text": t} for n, t in enumerate(texts)]
    if kind in ("binary", "list"):
        path = tmp / "items.parquet"
        if kind == "binary":
            values: list = [r["text"].encode() for r in rows]
            table = pa.table({"id": [r["id"] for r in rows], "text": pa.array(values, pa.binary())})
        else:
            table = pa.table({"id": [r["id"] for r in rows], "text": [[r["text"]] for r in rows]})
        pq.write_table(table, path)
        return path, 1, "text"  # every row of the column is bad
    if kind == "bool":
        path = tmp / "items.jsonl"
        rows[bad]["text"] = True
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return path, bad + 1, "text"
    path = tmp / "items.csv"
    lines = ["id,text"] + [f"{r['id']},{json.dumps(r['text'])}" for r in rows]
    if kind == "unclosed":
        lines[bad + 1] = f'{rows[bad]["id"]},"{rows[bad]["text"]}'
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path, bad + 2, None
    if kind == "duplicate":
        lines[0] = "id,text,text"
        lines[1:] = [line + ",x" for line in lines[1:]]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path, 1, "text"
    lines[bad + 1] += ",extra"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, bad + 2, None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(MALFORMED),
    texts=st.lists(
        st.text(alphabet="abc xyz,é", min_size=1, max_size=12).map(str.strip).filter(bool),
        min_size=1,
        max_size=6,
    ),
    data=st.data(),
)
def test_a_malformed_file_names_file_row_and_column_and_imports_nothing(tmp_path_factory, kind, texts, data):
    tmp = tmp_path_factory.mktemp("bad")
    bad = data.draw(st.integers(0, len(texts) - 1))
    path, row, column = _write_malformed(tmp, kind, texts, bad)
    with Project.open(write_project(tmp / "proj")) as project:
        with pytest.raises(DataError) as info:
            project.import_file(path)
        assert count(project) == 0
    problem = info.value.problems[0]
    assert (problem.file, problem.row) == (str(path), row), str(info.value)
    if column is not None:
        assert problem.column == column, str(info.value)


# ---------------------------------------------------------------------------
# 12. Friction


def test_a_directory_is_reported_as_a_directory(project, tmp_path):
    folder = tmp_path / "items.csv"
    folder.mkdir()
    with pytest.raises(DataError, match="is a directory"):
        project.import_file(folder)


def test_an_export_error_does_not_say_nothing_was_imported(project, tmp_path):
    with pytest.raises(DataError) as info:
        project.export(tmp_path / "labels.txt")
    assert "Nothing was imported" not in str(info.value) and "Nothing was exported" in str(info.value)
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(DataError, match="is a directory"):
        project.export(tmp_path / "dir.csv")


def test_export_carries_the_distribution_one_column_per_label(project, tmp_path):
    from duolabel.store import Prediction, Run

    project.import_file(write_csv(tmp_path / "items.csv", [["id", "text"], ["a1", "refund"]]))
    labels = project.config.task.label_names
    probs = {name: (0.6 if name == "billing" else 0.1) for name in labels}
    with project.store.write() as session:
        run = Run(kind="label", config={})
        session.add(run)
        session.flush()
        session.add(
            Prediction(
                item_id="a1",
                model_version="m1",
                labeler="toy",
                label="billing",
                probs=probs,
                calibrated=probs,
                raw_confidence=0.6,
                confidence=0.6,
                run_id=run.id,
            )
        )
        session.add(final("a1", "billing", ["ann"]))
    for suffix in (".csv", ".jsonl", ".parquet"):
        project.export(tmp_path / f"out{suffix}", model_version="m1")
    frame = pd.read_csv(tmp_path / "out.csv")
    assert [f"p_{name}" for name in labels] == [c for c in frame.columns if c.startswith("p_")]
    assert frame.loc[0, "p_billing"] == pytest.approx(0.6)
    assert pd.read_parquet(tmp_path / "out.parquet").loc[0, "p_shipping"] == pytest.approx(0.1)


def test_init_takes_labels_instruction_and_a_golden_file(tmp_path):
    from duolabel import init_project

    with init_project(tmp_path / "a", labels=["x", "y"], instructions="Pick one.") as project:
        assert project.config.task.instructions == "Pick one."
    golden = write_csv(
        tmp_path / "g.csv",
        [["id", "text", "label"], ["1", "t", "spam"], ["2", "u", "ham"], ["3", "v", "spam"]],
    )
    with init_project(tmp_path / "b", labels_from=golden) as project:
        assert project.config.task.label_names == ["spam", "ham"]


# ---------------------------------------------------------------------------
# 13. Control items


def test_control_items_are_for_quality_control_only(project, tmp_path):
    from duolabel.people.accounts import add_annotator
    from duolabel.people.leases import lease_task
    from duolabel.store import Route, Run
    from duolabel.training_data import human_labelled_items

    rows = [["id", "text", "gold"], ["c1", "known answer", "billing"]]
    result = project.import_file(
        write_csv(tmp_path / "controls.csv", rows), role="control", gold_column="gold"
    )
    assert result.added == 1
    project.import_file(write_csv(tmp_path / "work.csv", [["id", "text"], ["r1", "real work"]]))
    with project.store.write() as session:
        assert session.get(Item, "c1").role == "control"
        # Even with a final label, a control item is never training data.
        session.add(final("c1", "billing", ["ann"]))
        session.add(final("r1", "billing", ["ann"]))
    ids = [item.id for item in human_labelled_items(project)[0]]
    assert ids == ["r1"]
    with pytest.raises(ProjectError, match="gold"):
        project.import_file(tmp_path / "work.csv", role="control")
    # The queue draws it as a control.
    ann = add_annotator(project.store, "ann", "a long password 123")
    with project.store.write() as session:
        session.query(FinalLabel).delete()
        run = Run(kind="route", config={})
        session.add(run)
        session.flush()
        session.add(Route(item_id="r1", decision="humans", overlap=1, policy_version="p", run_id=run.id))
    task = lease_task(project.store, ann.id, lease_minutes=5, control_rate=1.0)
    assert task is not None and task.item.id == "c1" and task.kind == "control"


def test_control_role_in_data_sources():
    from duolabel.config import parse_config

    config = parse_config(
        {
            "task": {"labels": [{"name": "a"}, {"name": "b"}]},
            "data": [{"path": "c.csv", "role": "control", "gold_column": "g"}],
        }
    )
    assert config.data[0].role == "control"


# ---------------------------------------------------------------------------
# 14. Imported human answers


def test_import_answers_records_annotations_of_accounts_that_cannot_log_in(project, tmp_path):
    from duolabel.people.accounts import authenticate

    project.import_file(write_csv(tmp_path / "items.csv", [["id", "text"], ["a1", "x"], ["a2", "y"]]))
    answers = write_csv(
        tmp_path / "answers.csv",
        [
            ["item", "worker", "label", "seconds"],
            ["a1", "w1", "billing", "3.5"],
            ["a1", "w2", "shipping", ""],
            ["a2", "w1", "billing", "2"],
        ],
    )
    result = project.import_answers(answers)
    assert (result.rows, result.added, result.workers) == (3, 3, 2)
    with project.store.read() as session:
        rows = session.execute(
            select(Annotation.item_id, Annotator.name, Annotation.label, Annotation.seconds)
            .join(Annotator, Annotator.id == Annotation.annotator_id)
            .order_by(Annotation.id)
        ).all()
    assert [tuple(r) for r in rows] == [
        ("a1", "w1", "billing", 3.5),
        ("a1", "w2", "shipping", None),
        ("a2", "w1", "billing", 2.0),
    ]
    assert authenticate(project.store, "w1", "") is None
    # Importing the same file again is a no-op.
    assert project.import_answers(answers).added == 0


def test_imported_answers_to_items_nobody_routed_are_aggregated(project, tmp_path):
    project.import_file(
        write_csv(tmp_path / "items.csv", [["id", "text"], ["a1", "x"], ["a2", "y"], ["a3", "z"]])
    )
    answers = [["item", "worker", "label"]]
    answers += [["a1", w, lab] for w, lab in [("w1", "billing"), ("w2", "billing"), ("w3", "shipping")]]
    answers += [["a2", w, lab] for w, lab in [("w1", "shipping"), ("w2", "shipping"), ("w3", "shipping")]]
    answers += [["a3", "w1", "shipping"]]
    with project.store.write() as session:  # a3 has the model's label: it keeps it
        session.add(
            FinalLabel(
                item_id="a3",
                label="billing",
                source="model",
                confidence=0.9,
                votes={},
                n_votes=0,
                annotators=[],
                model_probability=0.9,
            )
        )
    project.import_answers(write_csv(tmp_path / "answers.csv", answers))
    result = project.aggregate()
    assert (result.finalized, result.waiting) == (2, 0)
    with project.store.read() as session:
        labels = {f.item_id: (f.label, f.source, f.n_votes) for f in session.scalars(select(FinalLabel))}
    assert labels == {
        "a1": ("billing", "humans", 3),
        "a2": ("shipping", "humans", 3),
        "a3": ("billing", "model", 0),
    }
    # Nothing new: a second run writes nothing.
    assert project.aggregate().finalized == 0


def test_a_bad_answer_row_names_file_row_and_column_and_imports_nothing(project, tmp_path):
    project.import_file(write_csv(tmp_path / "items.csv", [["id", "text"], ["a1", "x"]]))
    answers = write_csv(
        tmp_path / "answers.csv",
        [
            ["item", "worker", "label"],
            ["a1", "w1", "billing"],
            ["zz", "w2", "billing"],
            ["a1", "w3", "nope"],
            ["a1", "", "billing"],
            ["a1", "w\x005", "billing"],  # a NUL, which PostgreSQL's text cannot hold
        ],
    )
    with pytest.raises(DataError) as info:
        project.import_answers(answers)
    text = str(info.value)
    assert f"{answers}, row 3, column 'item'" in text
    assert f"{answers}, row 4, column 'label'" in text
    assert f"{answers}, row 5, column 'worker'" in text
    assert f"{answers}, row 6, column 'worker': holds a NUL character" in text
    assert count(project, Annotation) == 0 and count(project, Annotator) == 0


# ---------------------------------------------------------------------------
# 8 (non-web). The SQLite file is private


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_the_sqlite_file_is_created_private(tmp_path):
    old = os.umask(0o022)
    try:
        with Project.open(write_project(tmp_path / "p")):
            pass
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "p" / "duolabel.db").stat().st_mode)
    assert mode == 0o600, oct(mode)


def test_nul_characters_utf16_files_and_cut_json_lines_are_refused_where_they_are(project, tmp_path):
    """Found by an independent tester: a NUL in a text was imported (PostgreSQL's text cannot
    hold one), a UTF-16 CSV was read as garbled column names, a JSON line cut short was put at
    column 1, and one of json's messages came out as "... at at column 22"."""
    nul = tmp_path / "nul.csv"
    nul.write_bytes(b"id,text\n16,fine\n17,nul\x00byte\n")
    with pytest.raises(DataError, match=r"nul.csv, row 3, column 'text': holds a NUL character"):
        project.import_file(nul)
    utf16 = tmp_path / "u16.csv"
    utf16.write_bytes("id,text\n1,hi\n".encode("utf-16"))
    with pytest.raises(DataError, match="u16.csv: is UTF-16 text, expected UTF-8"):
        project.import_file(utf16)
    cut = tmp_path / "cut.jsonl"
    cut.write_text(
        '{"id":"a","text":"ok"}\n{"id":"b","text":\n{"id":"c","text":"x\x01y"}\n', encoding="utf-8"
    )
    with pytest.raises(DataError) as refused:
        project.import_file(cut)
    assert "row 2: malformed JSON line: Expecting value at column 18" in str(refused.value)
    assert "row 3: malformed JSON line: Invalid control character at column 20" in str(refused.value)
    assert count(project) == 0


def test_a_rename_of_a_missing_column_or_two_columns_onto_one_field_is_refused(project, tmp_path):
    """Found by an independent tester: with --map body=text --map other=text the last one
    silently won, and --map nosuch=text was ignored."""
    path = write_csv(tmp_path / "m.csv", [["key", "body", "other"], ["1", "hello", "x"]])
    with pytest.raises(DataError, match="columns 'body' and 'other' would both be field 'text'"):
        project.import_file(path, columns={"key": "id", "body": "text", "other": "text"})
    with pytest.raises(DataError, match="column 'nosuch': --map renames this column, but the file has"):
        project.import_file(path, columns={"key": "id", "body": "text", "nosuch": "text"})
    with pytest.raises(DataError, match="columns 'body' and 'text' would both be field 'text'"):
        project.import_file(
            write_csv(tmp_path / "t.csv", [["id", "body", "text"], ["1", "a", "b"]]), columns={"body": "text"}
        )
    assert count(project) == 0
    project.import_file(path, columns={"key": "id", "body": "text"})
    assert count(project) == 1


def test_an_item_imported_again_in_another_role_is_told_so(project, tmp_path):
    """Found by an independent tester: the same row imported as golden after it came as a
    control was refused as 'already in the project with different content'."""
    path = write_csv(tmp_path / "c.csv", [["id", "text", "gold"], ["c1", "known answer", "billing"]])
    project.import_file(path, role="control", gold_column="gold")
    with pytest.raises(
        DataError, match="'c1' is already in the project as a control item with the same text"
    ):
        project.import_file(path, role="golden", gold_column="gold")
    other = write_csv(tmp_path / "o.csv", [["id", "text", "gold"], ["c1", "another text", "billing"]])
    with pytest.raises(DataError, match="'c1' is already in the project with different content"):
        project.import_file(other, role="golden", gold_column="gold")
