"""A project's tables as pandas DataFrames (``Project.to_pandas``).

Each frame has the columns of the file duolabel reads or writes for the same thing, so a frame
goes back in unchanged: ``"answers"`` has ``item, worker, label, seconds`` (what
``import-answers`` reads), ``"predictions"`` has ``id`` and one ``p_<label>`` per label, the raw
distribution (what ``import-predictions`` reads), ``"final"`` the columns of ``duolabel export``
and ``"items"`` the id, the text (the text fields joined) and the other fields as columns, under
the project's field names (what ``import`` reads), then batch, role and gold label.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from sqlalchemy import select

from duolabel.config import TaskConfig
from duolabel.errors import ProjectError
from duolabel.export import final_rows
from duolabel.io import CHUNK_ROWS
from duolabel.store import Annotation, Annotator, Item, Prediction, Store

__all__ = ["FRAMES", "to_pandas"]

#: What :func:`to_pandas` gives.
FRAMES = ("items", "predictions", "answers", "final")


def _items(store: Store, task: TaskConfig) -> pd.DataFrame:
    # The id and the (joined) text under the project's own field names, as an import reads them.
    # The other text fields are empty: the store keeps only the joined text.
    id_column, text_column, *others = task.id_field, *task.text_fields
    ours = [id_column, text_column, *others, "batch", "role", "gold_label", "gold_source"]
    rows: list[dict[str, Any]] = []
    with store.read() as session:
        query = select(Item).order_by(Item.seq).execution_options(yield_per=CHUNK_ROWS)
        for item in session.scalars(query):
            # An item field named like a column of ours keeps its own name with a prefix.
            fields = {(f"field_{k}" if k in ours else k): v for k, v in item.fields.items()}
            rows.append(
                {
                    id_column: item.id,
                    text_column: item.text,
                    **dict.fromkeys(others),
                    **fields,
                    "batch": item.batch,
                    "role": item.role,
                    "gold_label": item.gold_label,
                    "gold_source": item.gold_source,
                }
            )
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=ours)


def _predictions(store: Store, task: TaskConfig) -> pd.DataFrame:
    labels = task.label_names
    columns = ["id", "labeler", "model_version", "label", "abstained", "out_of_fold", "raw_confidence"]
    columns += ["confidence", *(f"p_{n}" for n in labels), *(f"calibrated_{n}" for n in labels)]
    rows: list[dict[str, Any]] = []
    with store.read() as session:
        query = (
            select(Prediction, Item.seq)
            .join(Item, Item.id == Prediction.item_id)
            .order_by(Prediction.labeler, Prediction.model_version, Item.seq)
            .execution_options(yield_per=CHUNK_ROWS)
        )
        for pred, _ in session.execute(query):
            calibrated = pred.calibrated or {}
            rows.append(
                {
                    "id": pred.item_id,
                    "labeler": pred.labeler,
                    "model_version": pred.model_version,
                    "label": pred.label or None,
                    "abstained": pred.abstained,
                    "out_of_fold": pred.out_of_fold,
                    "raw_confidence": None if pred.abstained else pred.raw_confidence,
                    "confidence": pred.confidence,
                    **{f"p_{n}": pred.probs.get(n) for n in labels},
                    **{f"calibrated_{n}": calibrated.get(n) for n in labels},
                }
            )
    return pd.DataFrame(rows, columns=columns)


def _answers(store: Store, task: TaskConfig) -> pd.DataFrame:
    columns = ["item", "worker", "label", "seconds", "kind", "role", "created_at", "unsure", "comment"]
    with store.read() as session:
        query = (
            select(
                Annotation.item_id,
                Annotator.name,
                Annotation.label,
                Annotation.seconds,
                Annotation.kind,
                Annotator.role,
                Annotation.created_at,
                Annotation.unsure,
                Annotation.comment,
            )
            .join(Annotator, Annotator.id == Annotation.annotator_id)
            .order_by(Annotation.id)
        )
        return pd.DataFrame(session.execute(query).all(), columns=columns)


def _final(store: Store, task: TaskConfig, model_version: str | None) -> pd.DataFrame:
    columns, chunks = final_rows(store, task, model_version=model_version)
    return pd.DataFrame([row for chunk in chunks for row in chunk], columns=columns)


def to_pandas(store: Store, task: TaskConfig, what: str, *, model_version: str | None = None) -> pd.DataFrame:
    """One of :data:`FRAMES` as a DataFrame, one row per item, prediction, answer or final
    label (see the module docstring); ``model_version`` picks the model whose prediction the
    ``"final"`` rows carry where the model that decided an item is not recorded.

    Examples
    --------
    >>> import duolabel, pandas as pd, tempfile
    >>> project = duolabel.init_project(tempfile.mkdtemp(), labels=["spam", "ham"])
    >>> items = pd.DataFrame({"id": ["m1", "m2"], "text": ["Win!", "Hi mum"], "lang": ["en", "en"]})
    >>> _ = project.add_items(items)
    >>> project.to_pandas("items")[["id", "text", "lang", "role"]]
       id    text lang     role
    0  m1    Win!   en  regular
    1  m2  Hi mum   en  regular
    >>> list(project.to_pandas("answers").columns)
    ['item', 'worker', 'label', 'seconds', 'kind', 'role', 'created_at', 'unsure', 'comment']
    >>> project.close()
    """
    if what == "final":
        return _final(store, task, model_version)
    readers = {"items": _items, "predictions": _predictions, "answers": _answers}
    if what not in readers:
        raise ProjectError(f"to_pandas({what!r}): expected one of {', '.join(map(repr, FRAMES))}")
    return readers[what](store, task)
