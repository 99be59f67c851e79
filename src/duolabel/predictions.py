"""Bring your own predictions: a file of model outputs made outside duolabel (an LLM batch
job, autolabel, another team's model) becomes the predictions of an ``external`` labeler,
stored like any labeler's, so calibration, routing, fusion, simulation, the report and the
export work on it unchanged.

A file has an ``id`` column (or the project's ``task.id_field``) and either

- ``label`` and ``confidence``: the probability of that label, the rest spread evenly over
  the other labels (so a confidence under 1/K makes another label the most probable), or
- one column ``p_<label>`` per label of the project: a distribution, whose row must sum to
  1 within :data:`SUM_TOLERANCE` and is then normalised; a ``label`` column beside them,
  where given, must be one of the most probable labels,

plus an optional ``cost`` (what that prediction cost, in ``costs.currency``; summed into the
ledger). A row whose prediction cells are all empty is an abstention: people decide the item.
Other columns are ignored. Files are read like item files (CSV, JSONL, Parquet or a
DataFrame), every bad row is reported with its file, row and column, and a file with any bad
row imports nothing.

The predictions' version is a hash of the rows (not of the file's bytes, so the same
predictions as CSV or Parquet, in any order, are the same version): importing the same
predictions again changes nothing, and a changed file is a new version that becomes the
labeler's current one. One file should cover every item the labeler labels, golden items
included; the labeling stage names the items a version lacks.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from duolabel.config import EXTERNAL_PREFIX, ExternalLabelerConfig
from duolabel.context import Context
from duolabel.core.probs import as_dict
from duolabel.core.tasks import AnswerError, task_type
from duolabel.errors import DataError, Problem, ProjectError
from duolabel.io import (
    CHUNK_ROWS,
    MAX_PROBLEMS,
    _cell,
    _Problems,
    _read_frame,
    _Row,
    _type_problem,
    read_records,
)
from duolabel.ledger import labeler_versions, ledger_run, model_cost
from duolabel.store import Item, Prediction

__all__ = ["SUM_TOLERANCE", "PredictionImport", "import_prediction_rows", "import_predictions"]

#: How far a row of ``p_<label>`` values may sum from 1 before it is refused. Values written
#: with two decimals stay within it for up to a few labels; a row further off is most likely
#: not a distribution (logits, percentages, a label's column missing).
SUM_TOLERANCE = 0.01
_PREFIX = "p_"


@dataclass
class PredictionImport:
    """What an import of predictions did.

    ``added`` predictions were stored (``golden`` of them on golden items, ``abstained``
    of them abstentions); ``controls`` rows were for control items, which no model labels,
    and were skipped; ``unchanged`` says the same predictions were already the labeler's
    current version, so nothing was written.
    """

    file: str
    labeler: str
    model_version: str
    rows: int = 0
    added: int = 0
    golden: int = 0
    abstained: int = 0
    controls: int = 0
    cost: float = 0.0
    unchanged: bool = False
    run_id: int | None = None


@dataclass(frozen=True)
class _Parsed:
    row: int
    item: str
    probs: tuple[float, ...] | None  # None: an abstention
    cost: float


def _labeler(ctx: Context, name: str) -> ExternalLabelerConfig:
    bare = name.removeprefix(EXTERNAL_PREFIX)
    for cfg in ctx.config.labeler:
        if isinstance(cfg, ExternalLabelerConfig) and cfg.name == bare:
            return cfg
    known = [c.name for c in ctx.config.labeler if isinstance(c, ExternalLabelerConfig)]
    have = f" (it has {', '.join(map(repr, known))})" if known else ""
    raise ProjectError(
        f"--labeler {name!r}: the project has no external labeler of that name{have}; add "
        f"'- {{backend: external, name: {bare}}}' under labeler: in duolabel.yaml"
    )


def _number(value: Any) -> float | None:
    """A numeric cell as a float, None when empty; ValueError with the reason otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"got {str(value).lower()} (a true/false value)")
    wrong = _type_problem(value, reserved=False)
    if wrong is not None:
        raise ValueError(wrong)
    if isinstance(value, (int, float)) or hasattr(value, "item"):
        number = float(value)
        if number != number:  # NaN: an empty cell of pandas or Parquet
            return None
    else:
        text = _cell(value)
        if text is None:
            return None
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"got {text!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"got {number}")
    return number


def _shape(keys: list[str], labels: list[str], id_field: str) -> tuple[str, list[tuple[str, str]]]:
    """Which kind of file (``confidence`` or ``distribution``) the columns make, and what is
    wrong with them as (column, message)."""
    wrong: list[tuple[str, str]] = []
    if "id" not in keys and id_field not in keys:
        wrong.append(("id", "missing column"))
    given = [k for k in keys if k.startswith(_PREFIX)]
    if given:
        named = ", ".join(map(repr, labels))
        wrong += [
            (k, f"{k[len(_PREFIX) :]!r} is not a label of the project ({named})")
            for k in given
            if k[len(_PREFIX) :] not in labels
        ]
        wrong += [
            (f"{_PREFIX}{label}", "missing column (one p_<label> per label)")
            for label in labels
            if f"{_PREFIX}{label}" not in keys
        ]
        return "distribution", wrong
    wrong += [
        (c, "missing column; give label and confidence, or one p_<label> column per label")
        for c in ("label", "confidence")
        if c not in keys
    ]
    return "confidence", wrong


def _parse(
    values: dict[str, Any], number: int, mode: str, ctx: Context, problems: _Problems, tolerance: float
) -> _Parsed | None:
    """One row as a prediction, or None after adding its problems."""
    labels = ctx.config.task.label_names
    kind = task_type(ctx.config.task.type)
    id_column = "id" if "id" in values else ctx.config.task.id_field
    before = len(problems.found) + problems.more
    item = (
        _cell(values.get(id_column)) if _type_problem(values.get(id_column), reserved=True) is None else None
    )
    if item is None:
        problems.add(number, id_column, "got an empty id, expected the id of an item of the project")
    try:
        cost = _number(values.get("cost")) or 0.0
        if cost < 0:
            raise ValueError(f"got {cost}")
    except ValueError as exc:
        problems.add(number, "cost", f"{exc}, expected what the prediction cost (a number >= 0)")
        cost = 0.0
    label = values.get("label")
    if (wrong := _type_problem(label, reserved=True)) is not None:
        problems.add(number, "label", wrong)
        label = None
    label = _cell(label)

    def known(given: str) -> str | None:
        """``given`` as one of the project's labels, or None after adding the problem."""
        try:
            return kind.check_answer(given, labels)
        except AnswerError as exc:
            problems.add(number, "label", f"got {exc.got!r}, expected {exc.expected}")
            return None

    probs: np.ndarray | None = None
    if mode == "confidence":
        try:
            confidence = _number(values.get("confidence"))
            if confidence is not None and not 0 <= confidence <= 1:
                raise ValueError(f"got {confidence}")
        except ValueError as exc:
            problems.add(number, "confidence", f"{exc}, expected the probability of the label, in [0, 1]")
            return None
        if (label is None) != (confidence is None):
            problems.add(
                number,
                "label" if label is None else "confidence",
                "got an empty cell; give both label and confidence, or leave both empty for an item "
                "the model did not answer",
            )
        elif label is not None and confidence is not None and (label := known(label)) is not None:
            rest = (1.0 - confidence) / (len(labels) - 1)
            probs = np.array([confidence if name == label else rest for name in labels])
    else:
        cells: list[float | None] = []
        refused: set[str] = set()  # reported once, by _number
        for name in labels:
            try:
                cells.append(_number(values.get(_PREFIX + name)))
            except ValueError as exc:
                problems.add(number, _PREFIX + name, f"{exc}, expected a probability in [0, 1]")
                cells.append(math.nan)
                refused.add(name)
        if any(c is not None for c in cells):
            for name, value in zip(labels, cells, strict=True):
                if name in refused:
                    continue
                if value is None:
                    problems.add(
                        number,
                        _PREFIX + name,
                        "got an empty cell; give every p_<label> (0 where the model gives none), "
                        "or leave them all empty for an item the model did not answer",
                    )
                elif not 0 <= value <= 1:
                    problems.add(number, _PREFIX + name, f"got {value}, expected a probability in [0, 1]")
            if all(c is not None and 0 <= c <= 1 for c in cells):
                raw = np.array(cells, dtype=float)
                total = float(raw.sum())
                if abs(total - 1.0) > tolerance:
                    problems.add(
                        number,
                        None,
                        f"the p_<label> columns sum to {total:.4g}, expected 1 (within {tolerance})",
                    )
                else:
                    probs = raw / total
        if probs is not None and label is not None and (label := known(label)) is not None:
            top = labels[int(np.argmax(probs))]
            if probs[labels.index(label)] < probs.max() - 1e-9:
                problems.add(
                    number,
                    "label",
                    f"got {label!r}, but p_{top} is higher: the label must be a most probable "
                    "one (or leave the label column out)",
                )
    if len(problems.found) + problems.more > before or item is None:
        return None
    return _Parsed(number, item, None if probs is None else tuple(float(p) for p in probs), cost)


def _read(
    ctx: Context,
    source: str,
    header: list[str] | None,
    rows: Any,
    *,
    tolerance: float,
    max_problems: int,
) -> tuple[list[_Parsed], dict[str, str]]:
    """Every row checked against the project: the predictions and each item's role."""
    labels = ctx.config.task.label_names
    id_field = ctx.config.task.id_field
    problems = _Problems(source, max_problems)
    mode: str | None = None
    if header is not None:
        mode, wrong = _shape(header, labels, id_field)
        if wrong:
            raise DataError([Problem(source, 1 if header else None, c, m) for c, m in wrong])
    parsed: list[_Parsed] = []
    seen: dict[str, int] = {}
    count = 0
    for row in rows:
        count += 1
        if row.problem is not None:
            problems.add_problem(row.problem)
            continue
        values = row.values or {}
        row_mode = mode
        if row_mode is None:  # JSONL: each line has its own keys
            row_mode, wrong = _shape(list(values), labels, id_field)
            for column, message in wrong:
                problems.add(row.number, column, message.replace("missing column", "missing field"))
            if wrong:
                continue
        got = _parse(values, row.number, row_mode, ctx, problems, tolerance)
        if got is None:
            continue
        if got.item in seen:
            problems.add(
                row.number, "id", f"duplicate id {got.item!r}: it appears earlier (row {seen[got.item]})"
            )
            continue
        seen[got.item] = row.number
        parsed.append(got)
    roles: dict[str, str] = {}
    ids = list(seen)
    with ctx.store.read() as session:
        for start in range(0, len(ids), CHUNK_ROWS):
            part = ids[start : start + CHUNK_ROWS]
            roles.update(
                (i, r) for i, r in session.execute(select(Item.id, Item.role).where(Item.id.in_(part)))
            )
    for got in parsed:
        if got.item not in roles:
            problems.add(got.row, "id", f"no item {got.item!r} in the project; import the items first")
    if count == 0 and not problems.found:
        problems.add(None, None, "the file has no rows")
    if problems.found:
        raise DataError(problems.found, more=problems.more)
    return parsed, roles


def _version(parsed: list[_Parsed], labels: list[str]) -> str:
    """A hash of the predictions themselves, in id order (see the module docstring)."""
    rows = sorted(
        (p.item, None if p.probs is None else [round(x, 9) for x in p.probs], p.cost) for p in parsed
    )
    payload = json.dumps({"labels": labels, "rows": rows}, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def import_predictions(
    ctx: Context,
    data: str | Path | Any,
    *,
    labeler: str,
    fmt: str | None = None,
    tolerance: float = SUM_TOLERANCE,
    max_problems: int = MAX_PROBLEMS,
) -> PredictionImport:
    """Store a file's (or a DataFrame's) predictions as those of the project's external
    labeler ``labeler`` (``NAME`` or ``external:NAME``); see the module docstring.

    Examples
    --------
    >>> import duolabel, pandas as pd, tempfile
    >>> project = duolabel.init_project(tempfile.mkdtemp(), labels=["spam", "ham"])
    >>> project.add_items(pd.DataFrame({"id": ["m1"], "text": ["Win a prize!"]})).added
    1
    >>> import_predictions(project, pd.DataFrame({"id": ["m1"], "label": ["spam"]}), labeler="gpt")
    Traceback (most recent call last):
    ...
    duolabel.errors.ProjectError: --labeler 'gpt': the project has no external labeler of that name; ...
    >>> project.close()
    """
    _labeler(ctx, labeler)  # an unknown labeler is refused before the file is read
    if isinstance(data, (str, Path)):
        source = str(data)
        header, rows = read_records(Path(data), fmt)
    else:
        source = "DataFrame"
        header, rows = _read_frame(data)
    return import_prediction_rows(
        ctx, source, header, rows, labeler=labeler, tolerance=tolerance, max_problems=max_problems
    )


def import_prediction_rows(
    ctx: Context,
    source: str,
    header: list[str] | None,
    rows: Iterable[_Row],
    *,
    labeler: str,
    tolerance: float = SUM_TOLERANCE,
    max_problems: int = MAX_PROBLEMS,
) -> PredictionImport:
    """:func:`import_predictions` on rows already read (``header`` None: each row has its own
    keys, as in JSONL), for readers of other formats (a Label Studio export's predictions)."""
    cfg = _labeler(ctx, labeler)
    name = cfg.label_name
    labels = ctx.config.task.label_names
    parsed, roles = _read(ctx, source, header, rows, tolerance=tolerance, max_problems=max_problems)
    version = _version(parsed, labels)
    result = PredictionImport(file=source, labeler=name, model_version=version, rows=len(parsed))
    # Control items check people and no model labels them (as in the labeling stage).
    result.controls = sum(roles[p.item] == "control" for p in parsed)
    with ctx.store.read() as session:
        stored = set(
            session.scalars(
                select(Prediction.item_id).where(
                    Prediction.labeler == name, Prediction.model_version == version
                )
            )
        )
    # Synthetic items are training data only: a prediction for one is skipped like a control's.
    fresh = [p for p in parsed if p.item not in stored and roles[p.item] not in ("control", "synthetic")]
    if not fresh and labeler_versions(ctx).get(name) == version:
        result.unchanged = True
        return result
    kind = task_type(ctx.config.task.type)
    config = {
        "labeler": cfg.model_dump(),
        "labeler_name": name,
        "model_version": version,
        "imported_from": source,
    }
    # A "label" run like any labeler's: the newest finished one names the labeler's version.
    with ledger_run(ctx.store, "label", config) as run:
        result.run_id = run.id
        for start in range(0, len(fresh), CHUNK_ROWS):
            part = fresh[start : start + CHUNK_ROWS]
            answered = [p for p in part if p.probs is not None]
            picks = kind.predicted(np.array([p.probs for p in answered])) if answered else np.zeros(0)
            pick = dict(zip((p.item for p in answered), picks, strict=True))
            records = []
            for p in part:
                common = dict(
                    item_id=p.item,
                    labeler=name,
                    model_version=version,
                    run_id=run.id,
                    # We never train on an imported labeler's golden items, so its predictions
                    # there are as honest as out-of-fold ones: calibration learns from them.
                    out_of_fold=roles[p.item] == "golden",
                    usage={"cost": p.cost} if p.cost else {},
                )
                if p.probs is None:
                    records.append(
                        Prediction(**common, probs={}, label="", raw_confidence=0.0, abstained=True)
                    )
                    result.abstained += 1
                else:
                    records.append(
                        Prediction(
                            **common,
                            probs=as_dict(np.array(p.probs), labels),
                            label=labels[int(pick[p.item])],
                            raw_confidence=max(p.probs),
                        )
                    )
                result.golden += roles[p.item] == "golden"
                result.cost += p.cost
            result.added += len(records)
            usage = {"items": result.added, "seconds": 0.0, "cost": round(result.cost, 9)}
            with ctx.store.write() as session:
                session.add_all(records)
                run.record(session, usage, model_cost(ctx.config.costs, usage))
    return result
