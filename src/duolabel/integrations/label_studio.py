"""Label Studio's JSON export in and out.

A Label Studio export is a JSON list of tasks::

    {"id": 17, "data": {"text": "..."},
     "annotations": [{"completed_by": 3, "lead_time": 4.2, "result": [
         {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["spam"]}}]}],
     "predictions": [{"model_version": "v1", "score": 0.93, "result": [...the same shape...]}]}

In: ``data`` becomes an item (its keys renamed by ``columns``; with no id field, Label Studio's
task ``id``), each annotation's choice a recorded answer of an imported worker (as
``duolabel import-answers`` stores them: :mod:`duolabel.people.imported`), and the prediction a
prediction of an ``external`` labeler (:mod:`duolabel.predictions`; its ``score``, or the
result's, is the probability of its choice). The whole file is checked before anything is
stored, every problem named by file, task (1-based position in the list) and field.

Out: each item is a task whose ``data`` has the id and text fields, the model's prediction a
pre-annotation (``predictions``, with ``model_version`` and ``score``), and the final label an
annotation, with its provenance (source, confidence, votes, annotators) under
``meta.duolabel``, where the model's full distribution also travels so that a duolabel project
reading the file back gets the same predictions, not only their top label.

The JSON is written and read here by hand rather than through ``label-studio-sdk``: the shape
is a few keys, and the SDK is an HTTP client for a running Label Studio server with a large
dependency tree (its own pydantic models, httpx, lxml, ...) that would add nothing to a file
format, which is all duolabel needs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy import select

from duolabel.config import TaskConfig
from duolabel.context import Context
from duolabel.core.tasks import AnswerError, check_item_answer, task_type
from duolabel.errors import DataError, Problem
from duolabel.export import final_query
from duolabel.files import atomic_write
from duolabel.integrations._common import relocate
from duolabel.integrations.label_studio_spans import span_label_config, span_results, spans_of_results
from duolabel.io import CHUNK_ROWS, MAX_PROBLEMS, Answer, ImportResult, _cell, _Problems, _Row, import_records
from duolabel.people.imported import ImportedAnswers, record_imported_answers
from duolabel.predictions import PredictionImport, import_prediction_rows
from duolabel.store import Item, Store

__all__ = ["FROM_NAME", "LabelStudioImport", "export_tasks", "import_label_studio", "label_config"]

#: The name of the ``<Choices>`` tag in the labeling config duolabel writes for (``from_name``).
FROM_NAME = "label"
#: The worker an annotation without ``completed_by`` is credited to.
UNKNOWN_WORKER = "label-studio"


@dataclass
class LabelStudioImport:
    """What a Label Studio import did: tasks read; the item, answer and prediction imports
    (None for a part not asked for); annotations with no choice (another control's result,
    or cancelled), labels the model gave in a duolabel export (not answers), and predictions
    left out because no ``labeler`` was named."""

    file: str
    tasks: int = 0
    items: ImportResult | None = None
    answers: ImportedAnswers | None = None
    predictions: PredictionImport | None = None
    annotations_skipped: int = 0
    predictions_skipped: int = 0
    model_labels_skipped: int = 0

    def summary(self) -> str:
        parts = [f"{self.file}: {self.tasks:,} tasks"]
        if self.items is not None:
            parts.append(f"{self.items.added:,} new items, {self.items.unchanged:,} already imported")
        if self.answers is not None:
            parts.append(
                f"{self.answers.added:,} new answers from {self.answers.workers:,} workers "
                f"({self.answers.unchanged:,} already imported)"
            )
        if self.annotations_skipped:
            parts.append(f"{self.annotations_skipped:,} annotations without a choice skipped")
        if self.model_labels_skipped:
            gave = f"{self.model_labels_skipped:,} labels the model gave"
            parts.append(f"{gave} (a duolabel export) not taken as answers")
        if self.predictions is not None:
            p = self.predictions
            done = "already imported" if p.unchanged else f"{p.added:,} predictions stored"
            parts.append(f"{p.labeler} version {p.model_version}: {done}")
        if self.predictions_skipped:
            parts.append(
                f"{self.predictions_skipped:,} predictions not imported (name one with --labeler NAME)"
            )
        return "; ".join(parts) + "."


@dataclass
class _Parsed:
    """A file checked for shape: item rows, answers and prediction rows, each numbered in
    its own sequence, with where each number is in the file (task, field path)."""

    items: list[_Row] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    predictions: list[_Row] = field(default_factory=list)
    where: dict[tuple[str, int], tuple[int, str]] = field(default_factory=dict)
    annotations_skipped: int = 0
    predictions_skipped: int = 0
    model_labels_skipped: int = 0


def _model_final(entry: dict[str, Any]) -> bool:
    """Whether a task is duolabel's export of an item whose final label the model gave.

    Examples
    --------
    >>> _model_final({"meta": {"duolabel": {"final": {"source": "model"}}}}), _model_final({"meta": 1})
    (True, False)
    """
    meta = entry.get("meta")
    ours = meta.get("duolabel") if isinstance(meta, dict) else None
    final = ours.get("final") if isinstance(ours, dict) else None
    return isinstance(final, dict) and final.get("source") == "model"


def _kind(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "true/false"}.get(
        type(value), type(value).__name__
    )


def _load(path: Path) -> list[Any]:
    if not path.is_file():
        why = "is a directory, expected a file" if path.is_dir() else "no such file"
        raise DataError([Problem(str(path), None, None, why)])
    try:
        with path.open(encoding="utf-8") as handle:
            tasks = json.load(handle)
    except UnicodeDecodeError as exc:
        raise DataError(
            [Problem(str(path), None, None, f"undecodable bytes at {exc.start}: expected UTF-8")]
        ) from None
    except json.JSONDecodeError as exc:
        message = f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        raise DataError([Problem(str(path), None, None, message)]) from None
    if not isinstance(tasks, list):
        message = f"got a JSON {_kind(tasks)}, expected a list of tasks (Label Studio's JSON export)"
        raise DataError([Problem(str(path), None, None, message)])
    return tasks


def _choice(result: Any, from_name: str | None) -> tuple[str | None, str | None, Any]:
    """The one choice of a ``result`` list: (label, problem, the result entry); (None, None,
    None) when it holds no choices result (an annotation of another control)."""
    if not isinstance(result, list):
        return None, f"got a JSON {_kind(result)}, expected a list of results", None
    found = [
        r
        for r in result
        if isinstance(r, dict) and r.get("type") == "choices" and from_name in (None, r.get("from_name"))
    ]
    if not found:
        return None, None, None
    if len({r.get("from_name") for r in found}) > 1:
        names = ", ".join(sorted(repr(r.get("from_name")) for r in found))
        return None, f"choices from several controls ({names}); pick one with from_name", None
    value = found[0].get("value")
    choices = value.get("choices") if isinstance(value, dict) else None
    if not (isinstance(choices, list) and len(choices) == 1 and isinstance(choices[0], str)):
        return None, f"got choices {choices!r}, expected a list of one label", None
    return choices[0], None, found[0]


def _worker(annotation: dict[str, Any]) -> str | None:
    """Who answered: Label Studio exports ``completed_by`` as a user id, or as an object with
    the user's email (``duolabel`` names the worker by it)."""
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        who = who.get("email") or who.get("id")
    if who is None:
        return UNKNOWN_WORKER
    if isinstance(who, bool) or not isinstance(who, (int, str)):
        return None
    return f"{UNKNOWN_WORKER}:{who}" if isinstance(who, int) else (_cell(who) or None)


def _probability(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) and 0 <= value <= 1 else None


class _Reader:
    """Checks every task for shape and labels, collecting all problems (up to the cap) and
    what the three imports need (see the module docstring)."""

    def __init__(
        self,
        ctx: Context,
        path: Path,
        *,
        columns: dict[str, str],
        from_name: str | None,
        model_version: str | None,
        max_problems: int,
        items: bool = True,
    ) -> None:
        self.task = ctx.config.task
        self.items = items
        self.kind = task_type(self.task.type)
        self.path = path
        self.columns = columns
        self.from_name = from_name
        self.model_version = model_version
        self.problems = _Problems(str(path), max_problems)
        self.out = _Parsed()
        self.seen: dict[tuple[str, str], int] = {}  # (item, worker) -> task
        # spans: <Labels> regions, not <Choices>, checked against the task's own text.
        self.spans = self.task.type == "spans"
        self.text = ""

    def bad(self, index: int, where: str | None, message: str) -> None:
        if len(self.problems.found) < self.problems.cap:
            self.problems.found.append(Problem(str(self.path), index, where, message, unit="task"))
        else:
            self.problems.more += 1

    def count(self) -> int:
        return len(self.problems.found) + self.problems.more

    def read(self, tasks: list[Any]) -> _Parsed:
        for index, entry in enumerate(tasks, start=1):
            self.entry(index, entry)
        if not tasks:
            self.problems.add(None, None, "the file has no tasks")
        if self.problems.found:
            raise DataError(self.problems.found, more=self.problems.more)
        return self.out

    def entry(self, index: int, entry: Any) -> None:
        if not isinstance(entry, dict):
            self.bad(index, None, f"got a JSON {_kind(entry)}, expected a task object")
            return
        data = entry.get("data")
        if not isinstance(data, dict):
            got = "missing" if data is None else f"got a JSON {_kind(data)}"
            self.bad(index, "data", f"{got}, expected an object with the item's fields")
            return
        values = {str(self.columns.get(k, k)): v for k, v in data.items()}
        if self.items:
            # The item import would find a missing text field too, but only once every task
            # passed here: named now, it is listed with the tasks' other problems.
            original = {field: key for key, field in self.columns.items()}
            for name in self.task.text_fields:
                if name not in values:
                    self.bad(index, f"data.{original.get(name, name)}", "missing field")
        id_field = self.task.id_field
        # A task exported from Label Studio always has its own id; data often has none.
        if id_field not in values and isinstance(entry.get("id"), (int, str)):
            values[id_field] = entry["id"]
        self.out.items.append(_Row(index, values))
        self.text = "\n\n".join(str(values.get(f) or "") for f in self.task.text_fields if values.get(f))
        # A bad id is the item import's to report; answers and predictions then wait for it.
        item = _cell(values.get(id_field)) if isinstance(values.get(id_field), (str, int)) else None
        model_final = _model_final(entry)
        for j, annotation in enumerate(self.array(index, entry, "annotations")):
            if model_final and isinstance(annotation, dict) and "completed_by" not in annotation:
                # duolabel's own export of a label the model gave (its final label, source
                # model): no person answered it, so it is no answer of anyone's.
                self.out.model_labels_skipped += 1
                continue
            self.annotation(index, f"annotations[{j}]", annotation, item)
        predictions = [
            (j, p)
            for j, p in enumerate(self.array(index, entry, "predictions"))
            if self.model_version is None
            or (isinstance(p, dict) and str(p.get("model_version")) == self.model_version)
        ]
        if len(predictions) > 1:
            versions = ", ".join(
                repr(p.get("model_version")) if isinstance(p, dict) else "?" for _, p in predictions
            )
            self.bad(
                index,
                "predictions",
                f"{len(predictions)} predictions ({versions}); pick one with --model-version",
            )
            return
        for j, prediction in predictions:
            self.prediction(index, f"predictions[{j}]", entry, prediction, item)

    def array(self, index: int, entry: dict[str, Any], key: str) -> list[Any]:
        value = entry.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.bad(index, key, f"got a JSON {_kind(value)}, expected a list")
            return []
        return value

    def choice(self, index: int, where: str, result: Any) -> tuple[str | None, dict[str, Any]]:
        """The checked label of a result list (None: none, or a problem added) and its entry."""
        label: Any
        found: dict[str, Any] = {}
        if self.spans:
            label, problem = spans_of_results(result, self.from_name)
        else:
            label, problem, found = _choice(result, self.from_name)
        if problem is not None:
            self.bad(index, where, problem)
            return None, {}
        if label is None:
            return None, {}
        try:
            return check_item_answer(self.kind, label, self.task.label_names, self.text), found
        except AnswerError as exc:
            self.bad(index, where, f"got {exc.got!r}, expected {exc.expected}")
            return None, found

    def annotation(self, index: int, where: str, annotation: Any, item: str | None) -> None:
        if not isinstance(annotation, dict):
            self.bad(index, where, f"got a JSON {_kind(annotation)}, expected an annotation object")
            return
        # A spans annotation without regions marked nothing: an answer ([]), not another control's.
        if annotation.get("was_cancelled") or (
            not self.spans and _choice(annotation.get("result"), self.from_name) == (None, None, None)
        ):
            self.out.annotations_skipped += 1  # cancelled, or an answer to another control only
            return
        before = self.count()
        label, _ = self.choice(index, f"{where}.result", annotation.get("result"))
        worker = _worker(annotation)
        if worker is None:
            self.bad(
                index, f"{where}.completed_by", f"got {annotation.get('completed_by')!r}, expected a user id"
            )
        seconds = annotation.get("lead_time")
        if seconds is not None and _seconds(seconds) is None:
            self.bad(index, f"{where}.lead_time", f"got {seconds!r}, expected seconds spent (a number >= 0)")
        if self.count() > before or item is None or label is None or worker is None:
            return
        if (item, worker) in self.seen:
            message = f"{worker!r} answers {item!r} again (task {self.seen[item, worker]})"
            self.bad(index, f"{where}.completed_by", message)
            return
        self.seen[item, worker] = index
        number = len(self.out.answers) + 1
        self.out.answers.append(Answer(number, item, worker, label, _seconds(seconds)))
        self.out.where["answers", number] = (index, where)

    def prediction(
        self, index: int, where: str, entry: dict[str, Any], prediction: Any, item: str | None
    ) -> None:
        if not isinstance(prediction, dict):
            self.bad(index, where, f"got a JSON {_kind(prediction)}, expected a prediction object")
            return
        before = self.count()
        label, found = self.choice(index, f"{where}.result", prediction.get("result"))
        score = found.get("score", prediction.get("score"))
        if label is not None and _probability(score) is None:
            got = "no score" if score is None else f"got {score!r}"
            self.bad(index, f"{where}.score", f"{got}, expected the probability of its choice, in [0, 1]")
        if self.count() > before or item is None:
            return
        row: dict[str, Any] = {"id": item}
        probs = _our_probs(entry, prediction)
        if label is None:
            row.update(label=None, confidence=None)  # no choice: an abstention, people decide
        elif probs is not None:
            # duolabel's own export: the model's whole distribution, not only its top label.
            row.update({f"p_{name}": probs.get(name, 0.0) for name in self.task.label_names})
        else:
            row.update(label=label, confidence=score)
        number = len(self.out.predictions) + 1
        self.out.predictions.append(_Row(number, row))
        self.out.where["predictions", number] = (index, where)


def _seconds(value: Any) -> float | None:
    """``lead_time`` as seconds spent; None when missing or not a number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        return None
    return float(value)


def _our_probs(entry: dict[str, Any], prediction: dict[str, Any]) -> dict[str, Any] | None:
    """The distribution duolabel's export put under ``meta.duolabel`` for this prediction."""
    meta = entry.get("meta")
    ours = meta.get("duolabel") if isinstance(meta, dict) else None
    if not isinstance(ours, dict) or ours.get("model_version") != prediction.get("model_version"):
        return None
    probs = ours.get("probs")
    return probs if isinstance(probs, dict) else None


def _check_items_known(ctx: Context, path: Path, parsed: _Parsed) -> None:
    """Answers and predictions imported without their items need those items in the project."""
    needed: dict[str, int] = {}
    for answer in parsed.answers:
        needed.setdefault(answer.item, parsed.where["answers", answer.row][0])
    for row in parsed.predictions:
        needed.setdefault(str((row.values or {})["id"]), parsed.where["predictions", row.number][0])
    known: set[str] = set()
    with ctx.store.read() as session:
        ids = sorted(needed)
        for start in range(0, len(ids), CHUNK_ROWS):
            known.update(session.scalars(select(Item.id).where(Item.id.in_(ids[start : start + CHUNK_ROWS]))))
    missing = sorted((index, item) for item, index in needed.items() if item not in known)
    if missing:
        raise DataError(
            [
                Problem(
                    str(path),
                    index,
                    "data",
                    f"no item {item!r} in the project; import the items first",
                    unit="task",
                )
                for index, item in missing
            ]
        )


def import_label_studio(
    ctx: Context,
    path: str | Path,
    *,
    items: bool = True,
    answers: bool = True,
    labeler: str | None = None,
    model_version: str | None = None,
    from_name: str | None = None,
    columns: dict[str, str] | None = None,
    max_problems: int = MAX_PROBLEMS,
    **item_options: Any,
) -> LabelStudioImport:
    """Import a Label Studio JSON export: its items (``items``), annotations as recorded
    answers (``answers``) and, given an external ``labeler``'s name, its predictions (those of
    ``model_version`` where tasks have several). ``columns`` renames ``data`` keys to the
    project's fields; ``from_name`` picks the ``<Choices>`` control where there are several;
    ``item_options`` (``role``, ``gold_column``, ``batch``) go to the item import.

    A file with any bad task imports nothing. The three parts are stored in turn, each in its
    own transaction; a conflict only the store can show (an answer a worker gave differently
    before) stops at that part and the message says what was imported.

    Examples
    --------
    >>> import duolabel, json, tempfile
    >>> from pathlib import Path
    >>> project = duolabel.init_project(tempfile.mkdtemp(), labels=["spam", "ham"])
    >>> path = Path(tempfile.mkdtemp()) / "export.json"
    >>> choice = {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["spam"]}}
    >>> task = {"id": 1, "data": {"text": "Win!"}, "annotations": [{"result": [choice]}]}
    >>> _ = path.write_text(json.dumps([task]))
    >>> import_label_studio(project, path).summary()  # doctest: +ELLIPSIS
    '...: 1 tasks; 1 new items, 0 already imported; 1 new answers from 1 workers (0 already imported).'
    >>> project.close()
    """
    path = Path(path)
    source = str(path)
    tasks = _load(path)
    reader = _Reader(
        ctx,
        path,
        columns=dict(columns or {}),
        from_name=from_name,
        model_version=model_version,
        max_problems=max_problems,
        items=items,
    )
    parsed = reader.read(tasks)
    result = LabelStudioImport(file=source, tasks=len(tasks))
    if labeler is None:
        # Worth a word only where the items come in: the other parts are asked for by name.
        result.predictions_skipped = len(parsed.predictions) if items else 0
        parsed.predictions = []
    if answers:
        result.annotations_skipped = parsed.annotations_skipped
        result.model_labels_skipped = parsed.model_labels_skipped
    else:
        parsed.answers = []
    if not items:
        _check_items_known(ctx, path, parsed)
    done: list[str] = []

    # An item problem names the key as the file has it (before --map renamed it).
    original = {field: key for key, field in (columns or {}).items()}

    def moved(part: str, column_of: dict[str, str]) -> Any:
        def where(problem: Problem) -> Problem:
            index, prefix = parsed.where.get((part, problem.row or 0), (problem.row, ""))
            if part == "items":
                name = problem.column
                column = None if name is None else f"data.{original.get(name, name)}"
            else:
                tail = column_of.get(problem.column or "", "")
                column = f"{prefix}{tail}" if prefix else problem.column
            return replace(problem, row=index, column=column, unit="task")

        outcome = f"Imported {' and '.join(done)}; nothing more." if done else "Nothing was imported."
        return lambda error: relocate(error, where, outcome=outcome)

    if items:
        try:
            result.items = import_records(
                ctx.store,
                ctx.config.task,
                source=source,
                header=None,
                rows=parsed.items,
                max_problems=max_problems,
                **item_options,
            )
        except DataError as error:
            raise moved("items", {})(error) from None
        done.append("the items")
    if parsed.answers:
        try:
            result.answers = record_imported_answers(ctx.store, parsed.answers, source=source)
        except DataError as error:
            raise moved("answers", {"worker": ".completed_by", "label": ".result"})(error) from None
        done.append("the answers")
    if parsed.predictions:
        assert labeler is not None
        try:
            result.predictions = import_prediction_rows(
                ctx, source, None, parsed.predictions, labeler=labeler, max_problems=max_problems
            )
        except DataError as error:
            raise moved("predictions", {"label": ".result", "confidence": ".score"})(error) from None
    return result


def label_config(task: TaskConfig) -> str:
    """The Label Studio labeling config that matches an export of this project.

    Examples
    --------
    >>> from duolabel.config import parse_config
    >>> labels = [{"name": "spam", "description": "."}, {"name": "ham", "description": "."}]
    >>> config = parse_config({"task": {"labels": labels}})
    >>> print(label_config(config.task))
    <View>
      <Text name="text" value="$text"/>
      <Choices name="label" toName="text" choice="single">
        <Choice value="spam"/>
        <Choice value="ham"/>
      </Choices>
    </View>
    """
    from xml.sax.saxutils import quoteattr

    if task.type == "spans":
        return span_label_config(task, FROM_NAME)
    if task.type == "pairwise":
        from duolabel.integrations.label_studio_pairs import pair_label_config

        return pair_label_config(task, FROM_NAME)
    text = task.text_fields[0]
    choices = "\n".join(f"    <Choice value={quoteattr(name)}/>" for name in task.label_names)
    return (
        f"<View>\n  <Text name={quoteattr(text)} value={quoteattr('$' + text)}/>\n"
        f"  <Choices name={quoteattr(FROM_NAME)} toName={quoteattr(text)} "
        'choice="single">\n'
        f"{choices}\n  </Choices>\n</View>"
    )


def _result(task: TaskConfig, label: str, text: str) -> list[dict[str, Any]]:
    if task.type == "spans":
        return span_results(task, label, text, FROM_NAME)
    return [
        {
            "from_name": FROM_NAME,
            "to_name": task.text_fields[0],
            "type": "choices",
            "value": {"choices": [label]},
        }
    ]


def export_tasks(
    store: Store,
    task: TaskConfig,
    path: str | Path,
    *,
    model_version: str | None = None,
    include_pending: bool = False,
) -> int:
    """Write the project's items as Label Studio tasks (see the module docstring); returns
    the number of tasks. Written next to the destination and moved into place at the end
    (:func:`duolabel.files.atomic_write`)."""
    blank = dict.fromkeys(task.text_fields[1:], "")
    count = 0
    with (
        atomic_write(path, outcome="Nothing was exported.") as tmp,
        store.read() as session,
        tmp.open("w", encoding="utf-8") as handle,
    ):
        handle.write("[")
        for item, final, pred, _intended in session.execute(final_query(model_version, include_pending)):
            entry: dict[str, Any] = {
                "data": {task.id_field: item.id, task.text_fields[0]: item.text, **blank, **item.fields},
                "meta": {"duolabel": {"batch": item.batch, "role": item.role, "gold_label": item.gold_label}},
            }
            ours = entry["meta"]["duolabel"]
            if pred is not None and not pred.abstained:
                entry["predictions"] = [
                    {
                        "model_version": pred.model_version,
                        "score": round(pred.raw_confidence, 6),
                        "result": _result(task, pred.label, item.text),
                    }
                ]
                # The raw distribution: a project reading the file calibrates it itself.
                ours.update(
                    labeler=pred.labeler,
                    model_version=pred.model_version,
                    probs=pred.probs,
                    calibrated=pred.calibrated,
                )
            if final is not None:
                entry["annotations"] = [
                    {
                        "result": _result(task, final.label, item.text),
                        "ground_truth": final.source == "expert",
                    }
                ]
                ours["final"] = {
                    "label": final.label,
                    "source": final.source,
                    "confidence": round(final.confidence, 6),
                    "human_votes": final.n_votes,
                    "annotators": list(final.annotators),
                    "policy_version": final.policy_version,
                }
            handle.write(("\n" if count == 0 else ",\n") + json.dumps(entry, ensure_ascii=False))
            count += 1
        handle.write("\n]\n")
    return count
