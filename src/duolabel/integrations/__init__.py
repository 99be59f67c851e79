"""Other tools' formats in and out: Label Studio's JSON export (:mod:`.label_studio`), Hugging
Face ``datasets`` (:mod:`.hf`) and pandas frames of the project's tables (:mod:`.frames`).

The functions here pick the reader or writer for what a ``Project`` method was given: a
``Dataset`` object or a ``save_to_disk`` folder, a ``.json`` file (Label Studio's export is the
one JSON list duolabel reads), or ``fmt`` naming one; anything else is a CSV / JSONL / Parquet
file for :mod:`duolabel.io` and :mod:`duolabel.export`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from duolabel.context import Context
from duolabel.errors import DataError, Problem, ProjectError

__all__ = ["FORMATS", "export_to", "import_items", "integration"]

#: The ``--format`` values the integrations add to csv, jsonl and parquet.
FORMATS = ("label-studio", "hf")


def integration(data: Any, fmt: str | None = None) -> str | None:
    """Which integration reads or writes ``data`` (``"label-studio"``, ``"hf"``), or None for
    the CSV / JSONL / Parquet readers and writers."""
    from duolabel.integrations.hf import is_dataset, is_saved_dataset

    if fmt is not None:
        return fmt if fmt in FORMATS else None
    if is_dataset(data):
        return "hf"
    if isinstance(data, (str, Path)):
        path = Path(data)
        if is_saved_dataset(path):
            return "hf"
        if path.suffix.lower() == ".json":
            return "label-studio"
    return None


def _refuse(options: dict[str, Any], names: tuple[str, ...], what: str) -> None:
    given = [n for n in names if options.get(n) is not None]
    if given:
        raise ProjectError(f"--{given[0].replace('_', '-')} applies only to {what}")


def import_items(ctx: Context, data: Any, *, fmt: str | None = None, **options: Any) -> Any:
    """Import items from ``data`` in whichever format it is (see the module docstring);
    ``split`` is for datasets, ``labeler``, ``model_version`` and ``from_name`` for a Label
    Studio export (whose annotations and predictions come in with its items), ``swapped`` for
    a pairwise project's controls (each with its swapped twin, :mod:`.pair_controls`);
    ``progress`` is advanced by the rows a CSV, JSONL or Parquet file has read."""
    options = {k: v for k, v in options.items() if v is not None}
    progress = options.pop("progress", None)  # rows read, for the CSV / JSONL / Parquet reader
    kind = integration(data, fmt)
    if options.pop("swapped", False):  # pairwise controls with their swapped twins
        from duolabel.integrations.pair_controls import import_with_swapped

        _refuse(options, ("split", "labeler", "model_version", "from_name"), "a Label Studio export")
        if kind is not None:
            raise ProjectError(f"--swapped reads CSV, JSONL or Parquet files, not {kind}")
        return import_with_swapped(ctx.store, ctx.config.task, data, fmt=fmt, **options)
    if kind == "hf":
        from duolabel.integrations.hf import import_dataset

        _refuse(options, ("labeler", "model_version", "from_name"), "a Label Studio export")
        return import_dataset(ctx.store, ctx.config.task, data, **options)
    _refuse(options, ("split",), "a Hugging Face dataset")
    if kind == "label-studio":
        from duolabel.integrations.label_studio import import_label_studio

        return import_label_studio(ctx, data, **options)
    _refuse(options, ("labeler", "model_version", "from_name"), "a Label Studio export")
    from duolabel.io import import_file

    return import_file(ctx.store, ctx.config.task, data, fmt=fmt, progress=progress, **options)


def export_to(ctx: Context, path: str | Path, *, fmt: str | None = None, **options: Any) -> int:
    """Write final labels to ``path`` in whichever format ``fmt`` or its extension names
    (``.json``: Label Studio tasks; ``--format hf``: a ``save_to_disk`` folder)."""
    kind = (
        fmt if fmt in FORMATS else ("label-studio" if fmt is None and Path(path).suffix == ".json" else None)
    )
    flat = ("csv", "jsonl", "parquet")
    if fmt is not None and kind is None and fmt not in flat:
        formats = ", ".join([*flat, *FORMATS])
        raise DataError(
            [Problem(str(path), None, None, f"format {fmt!r} is not one of {formats}")],
            outcome="Nothing was exported.",
        )
    include_synthetic = options.pop("include_synthetic", False)
    if kind is not None and include_synthetic:
        # Synthetic items are training data, flagged in a column only the flat formats have.
        raise DataError(
            [Problem(str(path), None, None, f"--include-synthetic writes CSV, JSONL or Parquet, not {kind}")],
            outcome="Nothing was exported.",
        )
    if kind == "label-studio":
        from duolabel.integrations.label_studio import export_tasks

        options.pop("task", None)
        return export_tasks(ctx.store, ctx.config.task, path, **options)
    if kind == "hf":
        from duolabel.integrations.hf import export_dataset

        return export_dataset(ctx.store, path, **options)
    from duolabel.export import export_labels

    return export_labels(ctx.store, path, fmt=fmt, include_synthetic=include_synthetic, **options)
