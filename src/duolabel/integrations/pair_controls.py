"""Swapped duplicates of pairs with a known answer, imported with them (``import --swapped``).

A person who always picks the left response is right on half of a pairwise project's controls
by chance. Importing each control pair with its *swapped twin* (the same prompt, the two
responses exchanged, the gold flipped: :func:`~duolabel.core.pairwise.swapped_control`) makes a
position habit cost half the controls whatever the gold, so the control accuracy tells judging
from position. The twin must look like any other task: its id is the original's with a short
digest of it appended (``p17-3fa2c1``), never a word saying what it is (workers never see ids;
the admin's item browser does).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from duolabel.config import TaskConfig
from duolabel.core.pairwise import PAIR_FIELDS, swapped_control
from duolabel.errors import ProjectError
from duolabel.io import WITH_GOLD, ImportResult, import_records, read_records
from duolabel.store import Store

__all__ = ["import_with_swapped", "twin_id"]


def twin_id(item_id: str) -> str:
    """The id of a pair's swapped twin: the id and six hex digits of a digest of it.

    Examples
    --------
    >>> twin_id("p17")
    'p17-be5b12'
    """
    return f"{item_id}-{hashlib.sha256(f'swapped:{item_id}'.encode()).hexdigest()[:6]}"


def _with_twins(rows: Iterable[Any], rename: dict[str, str], id_field: str, gold: str) -> Iterator[Any]:
    """Each row (its columns renamed to fields), then its swapped twin when it is a whole pair."""
    for row in rows:
        if row.values is None:
            yield row
            continue
        values = {rename.get(k, k): v for k, v in row.values.items()}
        yield replace(row, values=values)
        needed = (id_field, *PAIR_FIELDS, gold)
        if all(values.get(name) not in (None, "") for name in needed):
            # An incomplete row gets its problem once, on itself, not again on a twin.
            twin = swapped_control(values, gold_column=gold, id_field=id_field, suffix="")
            twin[id_field] = twin_id(str(values[id_field]))
            yield replace(row, values=twin)


def import_with_swapped(
    store: Store,
    task: TaskConfig,
    path: str | Path,
    *,
    role: str = "control",
    gold_column: str | None = None,
    columns: dict[str, str] | None = None,
    fmt: str | None = None,
    **options: Any,
) -> ImportResult:
    """Import a CSV / JSONL / Parquet file of pairs with known answers and, after each, its
    swapped twin (:func:`twin_id`); the result counts both. Only for a pairwise project's
    ``control`` or ``golden`` items (gold in ``gold_column``).

    Examples
    --------
    >>> project.import_file("c.jsonl", role="control", gold_column="gold", swapped=True)  # doctest: +SKIP
    ImportResult(file='c.jsonl', rows=20, added=20, unchanged=0, promoted=0)
    """
    if task.type != "pairwise":
        raise ProjectError(f"--swapped applies only to a pairwise project (task.type is {task.type!r})")
    if role not in WITH_GOLD or not gold_column:
        raise ProjectError(
            "--swapped imports pairs with a known answer: give --role control (or golden) and --gold COLUMN"
        )
    if fmt is not None and fmt not in ("csv", "jsonl", "parquet"):
        raise ProjectError(f"--swapped reads CSV, JSONL or Parquet files, not {fmt}")
    rename = dict(columns or {})
    path = Path(path)
    header, rows = read_records(path, fmt)
    gold = rename.get(gold_column, gold_column)
    return import_records(
        store,
        task,
        source=str(path),
        header=None if header is None else [rename.get(c, c) for c in header],
        rows=_with_twins(rows, rename, task.id_field, gold),
        role=role,
        gold_column=gold,
        **options,
    )
