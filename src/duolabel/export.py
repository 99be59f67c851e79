"""Final labels out: CSV, JSONL or Parquet, with each label's provenance.

Streaming, written next to the destination and moved into place at the end (through a symbolic
link; never over a device, pipe or folder: :func:`duolabel.files.atomic_write`). CSV cells that
a spreadsheet would run as a formula are defused (:func:`defuse_formula`, the one rule every CSV
duolabel writes follows); JSONL and Parquet keep the exact values.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Select, func, select

from duolabel.config import TaskConfig
from duolabel.core.tasks import TaskType, task_type
from duolabel.files import atomic_write, defuse_formula
from duolabel.io import CHUNK_ROWS, detect_format
from duolabel.store import Annotator, FinalLabel, Item, Prediction, Store, SyntheticItem

__all__ = [
    "EXPORT_COLUMNS",
    "SYNTHETIC_COLUMNS",
    "defuse_formula",
    "export_labels",
    "final_query",
    "final_rows",
]

EXPORT_COLUMNS = [
    "id",
    "text",
    "label",
    "source",
    "confidence",
    "human_votes",
    "annotators",
    "model_label",
    "model_probability",
    "gold_label",
    "batch",
]

#: With ``include_synthetic``, after the ``synthetic`` flag: a synthetic item's review
#: (pending, accepted or rejected), its reviewer's account name and the LLM judge's label.
SYNTHETIC_COLUMNS = ["synthetic_review", "synthetic_reviewer", "judged_label"]


def _synthetic_reviews(session: Any) -> dict[str, dict[str, Any]]:
    """The review columns of every synthetic item by id (training data: few next to the items)."""
    rows = session.execute(
        select(SyntheticItem.item_id, SyntheticItem.review, Annotator.name, SyntheticItem.judged_label)
        .outerjoin(Annotator, Annotator.id == SyntheticItem.reviewed_by)
    ).all()  # fmt: skip
    return {
        item_id: dict(zip(SYNTHETIC_COLUMNS, (review or "pending", name, judged), strict=True))
        for item_id, review, name, judged in rows
    }


def final_query(
    model_version: str | None, include_pending: bool, include_synthetic: bool = False
) -> Select[Item, FinalLabel, Prediction, str]:
    """Every item (only finalized ones unless ``include_pending``) in import order, with its
    final label, the prediction of the model that decided it (a finished batch keeps the
    model of its time), else the current model's (``model_version``), and a synthetic item's
    intended label; None where missing. Synthetic items are training data, not labelled
    items: they come only with ``include_synthetic``."""
    query = (
        select(Item, FinalLabel, Prediction, SyntheticItem.label.label("intended"))
        .outerjoin(FinalLabel, FinalLabel.item_id == Item.id)
        .outerjoin(SyntheticItem, SyntheticItem.item_id == Item.id)
        .outerjoin(
            Prediction,
            (Prediction.item_id == Item.id)
            # The column inside coalesce (never NULL: the same value) keeps SQLite off the
            # model_version index, where every prediction of one model shares a key and each
            # item the model decided scanned them all (O(n^2): 13 of export's 15 s at 5,000
            # items); it joins by item_id instead.
            & (
                func.coalesce(Prediction.model_version, Prediction.model_version)
                == func.coalesce(FinalLabel.model_version, model_version or "")
            ),
        )
        .order_by(Item.seq)
        .execution_options(yield_per=CHUNK_ROWS)
    )
    synthetic = Item.role == "synthetic"
    if not include_pending:
        kept = FinalLabel.item_id.is_not(None)
        query = query.where(kept | synthetic if include_synthetic else kept)
    return query if include_synthetic else query.where(~synthetic)


def _input_columns(store: Store, taken: set[str]) -> dict[str, str]:
    """The items' input columns besides the id and the gold column, in first-seen order, as
    {export column: field}: each text field on its own where an item has several
    (``Item.text_parts``; ``text`` holds them joined), then what the import kept besides
    (``Item.fields``). A field named like one of duolabel's columns (``taken``) is exported
    as ``field_<name>``."""
    keys: dict[str, None] = {}
    with store.read() as session:
        query = select(Item.text_parts, Item.fields).execution_options(yield_per=CHUNK_ROWS)
        for parts, fields in session.execute(query):
            keys.update(dict.fromkeys(_inputs_of(parts, fields)))
    return {(f"field_{k}" if k in taken or k.startswith("p_") else k): k for k in keys}


def _inputs_of(parts: dict[str, Any] | None, fields: dict[str, Any] | None) -> dict[str, Any]:
    """An item's input values by field: its text fields (when it has several), then the rest."""
    return {**(parts or {}), **(fields or {})}


def _export_rows(
    store: Store,
    model_version: str | None,
    include_pending: bool,
    extra: Callable[[str | None], dict[str, Any]],
    labels: list[str],
    include_synthetic: bool = False,
    inputs: dict[str, str] | None = None,
) -> Iterator[list[dict[str, Any]]]:
    inputs = inputs or {}
    with store.read() as session:
        query = final_query(model_version, include_pending, include_synthetic)
        reviews = _synthetic_reviews(session) if include_synthetic else {}
        unreviewed = dict.fromkeys(SYNTHETIC_COLUMNS)  # a real item's review columns: empty
        out: list[dict[str, Any]] = []
        for item, final, pred, intended in session.execute(query):
            probs = (pred.calibrated or pred.probs) if pred is not None else None
            label = final.label if final else intended
            flag = (
                {"synthetic": item.role == "synthetic", **reviews.get(item.id, unreviewed)}
                if include_synthetic
                else {}
            )
            out.append(
                {
                    "id": item.id,
                    "text": item.text,
                    "label": label,
                    **extra(label),
                    "source": final.source if final else "synthetic" if intended else "pending",
                    "confidence": round(final.confidence, 6) if final else None,
                    "human_votes": final.n_votes if final else 0,
                    "annotators": ";".join(str(a) for a in final.annotators) if final else "",
                    "model_label": pred.label if pred is not None else None,
                    "model_probability": round(max(probs.values()), 6) if probs else None,
                    "gold_label": item.gold_label,
                    "batch": item.batch,
                    **{
                        column: _inputs_of(item.text_parts, item.fields).get(key)
                        for column, key in inputs.items()
                    },
                    **flag,
                    **{
                        f"p_{name}": round(float(probs.get(name, 0.0)), 6) if probs else None
                        for name in labels
                    },
                }
            )
            if len(out) >= CHUNK_ROWS:
                yield out
                out = []
        if out:
            yield out


def final_rows(
    store: Store,
    task: TaskConfig | None,
    *,
    model_version: str | None = None,
    include_pending: bool = False,
    include_synthetic: bool = False,
) -> tuple[list[str], Iterator[list[dict[str, Any]]]]:
    """The columns of an export and its rows in chunks (dicts with those keys): see
    :func:`export_labels`; the shape every export format and ``Project.to_pandas("final")`` share."""
    labels = task.label_names if task is not None else []
    task_kind: TaskType | None = task_type(task.type) if task is not None else None

    def extra(label: str | None) -> dict[str, Any]:
        return task_kind.export_columns(label, labels) if task_kind is not None else {}

    # The columns a final label gets: every row carries the same keys, pending or not.
    sample = extra(labels[0]) if labels else {}
    at = EXPORT_COLUMNS.index("label") + 1
    distribution = [f"p_{name}" for name in labels]
    flagged = ["synthetic", *SYNTHETIC_COLUMNS] if include_synthetic else []
    # The user's own input columns travel with their items (after duolabel's columns).
    inputs = _input_columns(store, {*EXPORT_COLUMNS, *sample, "synthetic", *SYNTHETIC_COLUMNS})
    columns = [*EXPORT_COLUMNS[:at], *sample, *EXPORT_COLUMNS[at:], *inputs, *flagged, *distribution]
    rows = _export_rows(store, model_version, include_pending, extra, labels, include_synthetic, inputs)
    return columns, rows


def export_labels(
    store: Store,
    path: str | Path,
    *,
    fmt: str | None = None,
    model_version: str | None = None,
    include_pending: bool = False,
    include_synthetic: bool = False,
    task: TaskConfig | None = None,
) -> int:
    """Write final labels with their provenance; returns the number of rows written.

    With ``task``, the task type's export columns follow ``label`` (``rank`` for ordinal),
    and the model's calibrated distribution ends each row, one column ``p_<label>`` per
    label. The file is written next to its destination and moved into place at the end, so
    a crash never leaves a half-written export behind; a symbolic link is written through,
    and a destination that is a device, pipe or folder is refused
    (:func:`duolabel.files.atomic_write`). ``include_synthetic`` adds the
    synthetic training items (source ``synthetic``, their intended label), a column
    ``synthetic`` that flags them and their review (:data:`SYNTHETIC_COLUMNS`). CSV cells that
    a spreadsheet would run as a formula are defused (:func:`defuse_formula`); JSONL and
    Parquet are exact.
    """
    path = Path(path)
    outcome = "Nothing was exported."
    kind = detect_format(path, fmt, outcome=outcome)
    with atomic_write(path, outcome=outcome) as tmp:
        return _write_labels(store, tmp, kind, model_version, include_pending, include_synthetic, task)


def _write_labels(
    store: Store,
    tmp: Path,
    kind: str,
    model_version: str | None,
    include_pending: bool,
    include_synthetic: bool,
    task: TaskConfig | None,
) -> int:
    """:func:`export_labels` into the temporary file ``tmp``."""
    count = 0
    labels = task.label_names if task is not None else []
    columns, chunks = final_rows(
        store,
        task,
        model_version=model_version,
        include_pending=include_pending,
        include_synthetic=include_synthetic,
    )
    # The task type's columns, for their Parquet types.
    sample = task_type(task.type).export_columns(labels[0], labels) if task is not None and labels else {}
    distribution = [f"p_{name}" for name in labels]
    flagged = ["synthetic", *SYNTHETIC_COLUMNS] if include_synthetic else []
    # The user's own input columns: every column the schema below does not type itself.
    typed = {*EXPORT_COLUMNS, *sample, *flagged, *distribution}
    inputs = [c for c in columns if c not in typed]
    if kind == "csv":
        with tmp.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow([defuse_formula(c) for c in columns])
            for chunk in chunks:
                writer.writerows([defuse_formula(r[c]) for c in columns] for r in chunk)
                count += len(chunk)
    elif kind == "jsonl":
        with tmp.open("w", encoding="utf-8") as handle:
            for chunk in chunks:
                handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in chunk)
                count += len(chunk)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema(
            [
                ("id", pa.string()),
                ("text", pa.string()),
                ("label", pa.string()),
                *((name, pa.scalar(value).type) for name, value in sample.items()),
                ("source", pa.string()),
                ("confidence", pa.float64()),
                ("human_votes", pa.int64()),
                ("annotators", pa.string()),
                ("model_label", pa.string()),
                ("model_probability", pa.float64()),
                ("gold_label", pa.string()),
                ("batch", pa.string()),
                *((name, pa.string()) for name in inputs),
                *((name, pa.bool_() if name == "synthetic" else pa.string()) for name in flagged),
                *((name, pa.float64()) for name in distribution),
            ]
        )
        with pq.ParquetWriter(tmp, schema) as writer:
            for chunk in chunks:
                # Input columns are text here (a column may mix numbers and words across
                # rows); CSV and JSONL keep each value as imported.
                for r in chunk:
                    r.update({c: None if r[c] is None else str(r[c]) for c in inputs})
                writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                count += len(chunk)
    return count
