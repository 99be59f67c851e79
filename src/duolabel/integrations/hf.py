"""Hugging Face ``datasets`` in and out (the ``hf`` extra: ``pip install 'duolabel[hf]'``).

In: a ``Dataset``, a ``DatasetDict`` (one split, or all with each split as the items' batch)
or a folder written by ``save_to_disk``, through the same validation and all-or-nothing
import as a CSV file (:func:`duolabel.io.import_records`). A ``ClassLabel`` column is read as
its label names, so a gold column of class ids imports as the project's labels.

Out: final labels with their provenance, the columns of the CSV export, as a ``Dataset``
written with ``save_to_disk``. The rows stream through a Parquet file (the Parquet export)
that ``datasets`` then reads in its own Arrow format, so memory does not grow with the project.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from duolabel.config import TaskConfig
from duolabel.errors import DataError, Problem, ProjectError, SetupError
from duolabel.export import export_labels
from duolabel.integrations._common import relocate, setup_hint
from duolabel.integrations.hf_spans import span_row, token_tags
from duolabel.io import CHUNK_ROWS, ImportResult, _Row, import_records
from duolabel.store import Store

__all__ = ["export_dataset", "import_dataset", "is_dataset", "is_saved_dataset"]

# What save_to_disk writes: a Dataset's state.json and dataset_info.json, a DatasetDict's
# dataset_dict.json.
_MARKERS = ("dataset_dict.json", "state.json")


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise SetupError(setup_hint("hf", "datasets")) from None
    return datasets


def is_dataset(data: Any) -> bool:
    """Whether ``data`` is a ``datasets`` object, told without importing ``datasets``."""
    return type(data).__module__.split(".")[0] == "datasets" and type(data).__name__ in (
        "Dataset",
        "DatasetDict",
    )


def is_saved_dataset(path: Path) -> bool:
    """Whether ``path`` is a folder ``save_to_disk`` wrote."""
    return path.is_dir() and any((path / marker).is_file() for marker in _MARKERS)


def _rows(dataset: Any, start: int, batch: str | None) -> Iterator[_Row]:
    """A Dataset's rows, numbered from ``start + 1``; ClassLabel ids as their names."""
    names = {
        column: feature
        for column, feature in dataset.features.items()
        if type(feature).__name__ == "ClassLabel"
    }
    number = start
    for table in dataset.with_format("arrow").iter(batch_size=CHUNK_ROWS):
        for record in table.to_pylist():
            number += 1
            for column, feature in names.items():
                value = record.get(column)
                # -1 is how datasets writes "no label" in a ClassLabel column.
                record[column] = feature.int2str(value) if isinstance(value, int) and value >= 0 else None
            yield _Row(number, record, batch=batch)


def import_dataset(
    store: Store,
    task: TaskConfig,
    data: Any,
    *,
    split: str | None = None,
    batch: str | None = None,
    **options: Any,
) -> ImportResult:
    """Import the items of a ``Dataset``, a ``DatasetDict`` or a ``save_to_disk`` folder.

    Of a ``DatasetDict``, ``split`` picks one split; without it every split is imported in
    one go, each row's batch its split's name (unless ``batch`` names one for all). Other
    options as for :func:`duolabel.io.import_records`; a problem names the split and its
    row (1-based), and any bad row imports nothing.

    Examples
    --------
    >>> import duolabel, tempfile
    >>> from datasets import Dataset, DatasetDict
    >>> project = duolabel.init_project(tempfile.mkdtemp(), labels=["spam", "ham"])
    >>> train = Dataset.from_dict({"id": ["a", "b"], "text": ["Win!", "Hi mum"]})
    >>> test = Dataset.from_dict({"id": ["c"], "text": ["Free money"]})
    >>> import_dataset(project.store, project.config.task, DatasetDict(train=train, test=test)).added
    3
    >>> project.close()
    """
    datasets = _datasets()
    source = "Dataset"
    if isinstance(data, (str, Path)):
        source = str(data)
        if not is_saved_dataset(Path(data)):
            raise DataError([Problem(source, None, None, "is not a folder written by save_to_disk")])
        data = datasets.load_from_disk(source)
    if isinstance(data, datasets.DatasetDict):
        known = list(data)
        if split is not None and split not in data:
            have = ", ".join(map(repr, known)) or "none"
            raise ProjectError(f"{source}: no split {split!r}; the dataset has {have}")
        parts = [(split, data[split])] if split is not None else [(name, data[name]) for name in known]
    elif not isinstance(data, datasets.Dataset):
        raise ProjectError(
            f"expected a Dataset, a DatasetDict or a save_to_disk folder, got {type(data).__name__}"
        )
    elif split is not None:
        raise ProjectError(f"{source}: --split {split!r} given, but this is a single Dataset with no splits")
    else:
        parts = [(None, data)]
    starts: list[tuple[int, str | None]] = []
    # spans: words with BIO tag ids (the Hub's NER shape) become text and span lists.
    shape = token_tags(parts[0][1].features) if task.type == "spans" else None

    def rows() -> Iterator[_Row]:
        start = 0
        for name, dataset in parts:
            starts.append((start, name))
            for row in _rows(dataset, start, None if batch is not None or name is None else name):
                if shape is not None and row.values is not None:
                    row = replace(row, values=span_row(row.values, shape, task.text_fields[0]))
                yield row
            start += len(dataset)

    # One header for all splits when they share it, so a missing column is named once.
    same = len({tuple(d.column_names) for _, d in parts}) == 1
    header = list(parts[0][1].column_names) if same else None
    if header is not None and shape is not None:
        text = task.text_fields[0]  # the words become the text
        header = [c for c in header if c != shape.words] + ([] if text in header else [text])
    default_batch = batch or (parts[0][0] if len(parts) == 1 else None) or Path(source).name
    try:
        return import_records(
            store, task, source=source, header=header, rows=rows(), batch=default_batch, **options
        )
    except DataError as error:
        if len(parts) == 1 and parts[0][0] is None:
            raise

        def where(problem: Problem) -> Problem:
            row = problem.row or 0
            before = [(s, n) for s, n in starts if s < row]
            if not before:  # a column every split lacks, found before any row was read
                return problem
            start, name = max(before)
            return replace(problem, file=f"{source}[{name!r}]", row=row - start)

        raise relocate(error, where) from None


def export_dataset(
    store: Store,
    path: str | Path,
    *,
    task: TaskConfig | None = None,
    model_version: str | None = None,
    include_pending: bool = False,
) -> int:
    """Write final labels with their provenance as a ``Dataset`` saved with ``save_to_disk``
    into folder ``path`` (the columns of :func:`duolabel.export.export_labels`); returns the
    rows written. A folder that is not a saved dataset is never overwritten."""
    datasets = _datasets()
    path = Path(path)
    if path.exists() and not is_saved_dataset(path):
        what = "a file" if path.is_file() else "a folder that save_to_disk did not write"
        raise DataError(
            [Problem(str(path), None, None, f"is {what}; name a new folder")], outcome="Nothing was exported."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as scratch:
        parquet = Path(scratch) / "labels.parquet"
        count = export_labels(
            store,
            parquet,
            fmt="parquet",
            task=task,
            model_version=model_version,
            include_pending=include_pending,
        )
        # datasets draws progress bars on stderr; the CLI prints its own line.
        was_on = datasets.utils.logging.is_progress_bar_enabled()
        datasets.disable_progress_bars()
        try:
            dataset = datasets.Dataset.from_parquet(str(parquet), cache_dir=str(Path(scratch) / "cache"))
            fresh = Path(scratch) / "dataset"
            dataset.save_to_disk(str(fresh))
        finally:
            if was_on:
                datasets.enable_progress_bars()
        del dataset  # its Arrow cache lives in the scratch folder
        # Swapped in at the end, so a crash never leaves a half-written dataset behind.
        if path.exists():
            shutil.rmtree(path)
        fresh.replace(path)
    return count
