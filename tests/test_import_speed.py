"""The import's fast paths write what the slow ones wrote: the content hash of a row without
extra fields, and the staged rows' bulk insert (SQLite and PostgreSQL)."""

from __future__ import annotations

import doctest
import hashlib

from hypothesis import given
from hypothesis import strategies as st

from duolabel.io import _HASH_JSON, content_hash
from duolabel.store import bulk

# Text as a CSV read with surrogateescape gives it: any character, undecodable bytes as
# lone low surrogates.
texts = st.text(
    st.characters(blacklist_categories=("Cs",)) | st.sampled_from(["\udc80", "\udcff", '"', "\\", "\x00"])
)


@given(text=texts, role=st.sampled_from(["regular", "golden"]), gold=st.none() | texts)
def test_the_hash_of_a_row_without_fields_is_the_encoders(text, role, gold):
    payload = _HASH_JSON.encode([text, {}, role, gold])
    assert (
        content_hash(text, {}, role, gold)
        == hashlib.sha256(payload.encode("utf-8", "surrogateescape")).hexdigest()
    )


def test_rows_with_fields_keep_the_encoder():
    payload = _HASH_JSON.encode(["t", {"b": 1, "a": None}, "regular", None])
    expected = hashlib.sha256(payload.encode()).hexdigest()
    assert content_hash("t", {"b": 1, "a": None}, "regular", None) == expected


def test_insert_many_doctest():
    assert doctest.testmod(bulk, raise_on_error=False).failed == 0


def test_an_import_reads_back_as_written(project):
    """Staged through insert_many, published into items: fields, gold and time as given
    (both stores: the DB-API paramstyles differ)."""
    import pandas as pd
    from sqlalchemy import select

    from duolabel.store import Item

    frame = pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "text": ["one", "two ü", "three"],
            "label": ["billing", None, "account"],
            "extra": ["x", None, "z"],
        }
    )
    result = project.add_items(frame, gold_column="label")
    assert result.added == 3
    with project.store.read() as session:
        rows = {i.id: i for i in session.scalars(select(Item))}
    assert rows["a"].fields == {"extra": "x"} and rows["b"].fields == {"extra": None}
    assert rows["b"].text == "two ü" and rows["b"].gold_label is None and rows["c"].gold_label == "account"
    assert rows["a"].created_at is not None and rows["a"].created_at == rows["c"].created_at
    assert [rows[k].seq for k in "abc"] == sorted(rows[k].seq for k in "abc")
