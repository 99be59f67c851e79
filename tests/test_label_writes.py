"""The label and routing stages' bulk writes (issue 17) store what an ORM flush stored: the
same column values, SQL NULL (not JSON ``null``) where a row leaves a column unset, and the
columns' Python-side defaults."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from duolabel.core.tasks import task_type
from duolabel.labelers import TextItem
from duolabel.stages.label import _prediction_rows
from duolabel.store import Item, Run, Store, open_store
from duolabel.store.bulk import insert_many, new_rows

LABELS = ["book", "not_book"]
ITEMS = [TextItem("a", "a paperback", "h1"), TextItem("b", "a toaster", "h2"), TextItem("c", "?", "h3")]


def _store(folder: Path) -> Store:
    folder.mkdir()
    store = open_store(None, folder)
    with store.write() as session:
        for n, item in enumerate(ITEMS):
            session.add(Item(id=item.id, seq=n, text=item.text, fields={}, content_hash=item.content_hash))
        session.add(Run(id=1, kind="label", config={}))
    return store


def _rows() -> list:
    # An abstention (a NaN row) and a per-item feature on one item only: columns some rows
    # set and others leave unset.
    probs = np.array([[0.8, 0.2], [0.3, 0.7], [np.nan, np.nan]])
    return _prediction_rows(
        ITEMS, probs, LABELS, task=task_type("single_label"), name="embedding", version="v1", run_id=1,
        out_of_fold=False, seconds_per_item=0.25, features={"b": {"disagreement": 0.5}},
    )  # fmt: skip


def _raw(store: Store) -> list[tuple]:
    """The stored rows as the database holds them (JSON as text), creation time aside."""
    with store.read() as session:
        columns = "id, item_id, labeler, model_version, run_id, probs, calibrated, label, raw_confidence, "
        columns += "confidence, out_of_fold, abstained, usage, features, typeof(created_at)"
        return [
            tuple(r)
            for r in session.connection().exec_driver_sql(f"SELECT {columns} FROM predictions ORDER BY id")
        ]


def test_bulk_predictions_read_back_as_the_orm_flush_wrote_them(tmp_path: Path):
    flushed, bulk = _store(tmp_path / "orm"), _store(tmp_path / "bulk")
    with flushed.write() as session:
        session.add_all(_rows())
    with bulk.write() as session:
        insert_many(session, *new_rows(_rows()))
    expected, got = _raw(flushed), _raw(bulk)
    flushed.close(), bulk.close()
    assert got == expected
    by_item = {row[1]: row for row in got}
    # Unset JSON columns are SQL NULL (routing selects calibrated IS NOT NULL), a default
    # applies (abstained False), and the abstention stores its own values.
    assert by_item["a"][6] is None and by_item["a"][13] is None and by_item["a"][11] == 0
    assert by_item["b"][13] == '{"disagreement": 0.5}'
    assert by_item["c"][11] == 1 and by_item["c"][5] == "{}"
    assert {row[14] for row in got} == {"text"}  # a creation time on every row
