"""Items in (CSV, JSONL, Parquet, DataFrame), streaming; final labels go out through
:mod:`duolabel.export`.

Import reads a file in chunks and stages each chunk in ``staged_items`` in a short transaction
of its own, so memory does not grow with the file and the web app's writers never wait for a
whole file; a file with no bad row is then published into ``items``, again in short
transactions (:func:`_publish`), and a file with any bad row imports nothing. Validation is
the one place that checks the input contract; every problem found (up to ``max_problems``)
is reported as ``file, row N, column 'x': got ..., expected ...``.

Row numbers are the ones a person finds in the file: for CSV the physical line where the
record starts (the header is row 1, as in a spreadsheet); for JSONL the line number; for
Parquet and DataFrames the 1-based record number.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Row, Table, delete, func, insert, select
from sqlalchemy.orm import Session

from duolabel.config import TaskConfig
from duolabel.core.tasks import AnswerError, check_item_answer, task_type
from duolabel.errors import DataError, Problem, ProjectError
from duolabel.files import undefused
from duolabel.store import Item, StagedItem, Store
from duolabel.store.bulk import insert_many, select_in
from duolabel.store.golden import make_golden
from duolabel.store.tables import utcnow

__all__ = [
    "ROLES",
    "ImportResult",
    "import_file",
    "import_records",
    "label_values",
    "read_answers",
    "read_records",
    "stating",
]

CHUNK_ROWS = 5_000
#: Rows of the file published into ``items`` per transaction (see :func:`_publish`).
PUBLISH_ROWS = 2_000
#: On a database with one writer (SQLite), once a publish transaction had to wait for another
#: writer, the import pauses after each of them at least this long, and at least twice as long
#: as the transaction held the lock: SQLite lets a waiting writer sleep up to 100 ms between
#: tries, and an import that takes the lock back at once starved the web app's writers (submit
#: p95 5.4 s during a 1,000,000-row publish; docs/benchmarks.md). Alone, it never pauses.
#: It learns of another writer only by waiting for one: a writer that only ever arrived while
#: the import held the lock would go unseen; the web app's many short writers are seen.
PUBLISH_PAUSE = 0.1
#: A wait for the write lock longer than this means another writer is about.
CONTENDED = 0.005
#: How long an import waits for another one's publish (a 1,000,000-row file takes seconds).
IMPORT_LOCK_WAIT = 3600.0
MAX_PROBLEMS = 50
#: An import whose newest staged row is older than this was killed (it stages every few seconds).
STALE_IMPORT = timedelta(hours=1)
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
# regular: work to label; golden: expert-labelled, trains and calibrates the model;
# control: a known answer hidden among people's work, for quality control only.
ROLES = ("regular", "golden", "control")
WITH_GOLD = ("golden", "control")

# Python's csv module refuses fields over 128 KiB by default; a long document is not an error.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass
class ImportResult:
    """What an import did: rows read, items added, items already present unchanged."""

    file: str
    rows: int = 0
    added: int = 0
    unchanged: int = 0
    promoted: int = 0  # regular items already in the project that became golden (their gold came)
    run_id: int | None = None


@dataclass
class _Row:
    number: int
    values: dict[str, Any] | None
    problem: Problem | None = None
    batch: str | None = None  # this row's batch where a source has several (a DatasetDict's splits)


@dataclass
class _Problems:
    file: str
    cap: int
    found: list[Problem] = field(default_factory=list)
    more: int = 0

    def add(self, row: int | None, column: str | None, message: str) -> None:
        if len(self.found) < self.cap:
            self.found.append(Problem(self.file, row, column, message))
        else:
            self.more += 1

    def add_problem(self, problem: Problem) -> None:
        self.add(problem.row, problem.column, problem.message)


def detect_format(path: Path, fmt: str | None = None, *, outcome: str = "Nothing was imported.") -> str:
    if fmt:
        if fmt not in set(FORMATS.values()):
            raise DataError(
                [Problem(str(path), None, None, f"format {fmt!r} is not one of csv, jsonl, parquet")],
                outcome=outcome,
            )
        return fmt
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise DataError(
            [
                Problem(
                    str(path),
                    None,
                    None,
                    f"cannot tell the format from the extension {suffix!r}; expected "
                    ".csv, .jsonl or .parquet (or pass --format)",
                )
            ],
            outcome=outcome,
        )
    return FORMATS[suffix]


# ---------------------------------------------------------------------------
# Readers: each yields the header (or None when rows carry their own keys) and rows.


def _open_csv(path: Path) -> Any:
    # surrogateescape keeps undecodable bytes as lone surrogates, so one bad cell is
    # reported with its row and column instead of aborting the whole read.
    return path.open(encoding="utf-8-sig", errors="surrogateescape", newline="")


def _csv_problem(exc: csv.Error) -> str:
    return (
        f"not valid CSV: {exc}; a double quote opened on this row is not closed where expected "
        '(a quote inside a quoted field is written twice: "")'
    )


def _read_csv(path: Path) -> tuple[list[str], Iterator[_Row]]:
    # strict: a quote left open is an error, not a field that swallows the rows after it.
    with _open_csv(path) as handle:
        try:
            header = next(csv.reader(handle, strict=True), [])
        except csv.Error as exc:
            raise DataError([Problem(str(path), 1, None, _csv_problem(exc))]) from None
    _check_header(path, header)

    def rows() -> Iterator[_Row]:
        with _open_csv(path) as handle:
            reader = csv.reader(handle, strict=True)
            next(reader, None)
            line = reader.line_num + 1
            while True:
                try:
                    record = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    yield _bad_row(path, line, _csv_problem(exc))
                    return
                if record:
                    if len(record) != len(header):
                        expected = f"expected {len(header)} (as in the header)"
                        yield _bad_row(path, line, f"got {len(record)} fields, {expected}")
                    else:
                        yield _Row(line, dict(zip(header, record, strict=True)))
                line = reader.line_num + 1

    return header, rows()


def _bad_row(path: Path, number: int, message: str, column: str | None = None) -> _Row:
    return _Row(number, None, Problem(str(path), number, column, message))


def _check_header(path: Path, header: list[str]) -> None:
    """A column named twice would silently keep one of the two values: refuse it."""
    seen: set[str] = set()
    twice = [c for c in header if c in seen or seen.add(c)]  # type: ignore[func-returns-value]
    if twice:
        raise DataError(
            [Problem(str(path), 1, c, "the header has this column twice") for c in dict.fromkeys(twice)]
        )


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for key, item in pairs:
        if key in value:
            raise _DuplicateKey(key)
        value[key] = item
    return value


def _read_jsonl(path: Path) -> tuple[None, Iterator[_Row]]:
    def rows() -> Iterator[_Row]:
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                try:
                    # Without its line break, so that a line cut short is reported at its end
                    # (json would point at column 1 of a second line).
                    value = json.loads(raw.decode("utf-8").rstrip("\r\n"), object_pairs_hook=_unique_keys)
                except _DuplicateKey as exc:
                    yield _bad_row(path, number, "the object has this key twice", exc.key)
                    continue
                except UnicodeDecodeError as exc:
                    yield _bad_row(
                        path, number, f"undecodable bytes at position {exc.start}: expected UTF-8 text"
                    )
                    continue
                except json.JSONDecodeError as exc:
                    # Some of json's messages end in "at" ("Invalid control character at").
                    reason = exc.msg.removesuffix(" at")
                    yield _bad_row(path, number, f"malformed JSON line: {reason} at column {exc.colno}")
                    continue
                if not isinstance(value, dict):
                    kind = type(value).__name__
                    yield _bad_row(
                        path, number, f"got a JSON {kind}, expected an object with the item's fields"
                    )
                    continue
                yield _Row(number, value)

    return None, rows()


def _read_parquet(path: Path) -> tuple[list[str], Iterator[_Row]]:
    import pyarrow.parquet as pq

    try:
        # pre_buffer (pyarrow's default) reads every column chunk of the file ahead into
        # memory, so peak memory would grow with the file; reading one row group at a time
        # is as fast for a local file.
        parquet = pq.ParquetFile(path, pre_buffer=False)
    except Exception as exc:  # pyarrow raises several types for a non-Parquet file
        raise DataError([Problem(str(path), None, None, f"not a readable Parquet file: {exc}")]) from None
    header = list(parquet.schema_arrow.names)
    _check_header(path, header)

    def rows() -> Iterator[_Row]:
        number = 0
        for batch in parquet.iter_batches(batch_size=CHUNK_ROWS):
            for record in batch.to_pylist():
                number += 1
                yield _Row(number, record)

    return header, rows()


def _read_frame(frame: Any) -> tuple[list[str], Iterator[_Row]]:
    header = [str(c) for c in frame.columns]

    def rows() -> Iterator[_Row]:
        for start in range(0, len(frame), CHUNK_ROWS):
            chunk = frame.iloc[start : start + CHUNK_ROWS]
            for offset, record in enumerate(chunk.to_dict("records")):
                yield _Row(start + offset + 1, {str(k): v for k, v in record.items()})

    return header, rows()


def read_records(path: Path, fmt: str | None = None) -> tuple[list[str] | None, Iterator[_Row]]:
    """Open ``path`` for streaming: its header (None for JSONL) and an iterator of rows."""
    _check_input(path)
    kind = detect_format(path, fmt)
    if kind != "parquet":
        _check_utf8(path)
    return {"csv": _read_csv, "jsonl": _read_jsonl, "parquet": _read_parquet}[kind](path)


# Byte-order marks of the encodings a spreadsheet's "Unicode text" export uses; every row of
# such a file would be undecodable bytes, and the header a column list nobody wrote.
_OTHER_BOMS = {
    b"\xff\xfe\x00\x00": "UTF-32",
    b"\x00\x00\xfe\xff": "UTF-32",
    b"\xff\xfe": "UTF-16",
    b"\xfe\xff": "UTF-16",
}


def _check_utf8(path: Path) -> None:
    """Refuse a text file in UTF-16 or UTF-32 (told by its byte-order mark) up front."""
    with path.open("rb") as handle:
        start = handle.read(4)
    for bom, name in _OTHER_BOMS.items():
        if start.startswith(bom):
            raise DataError(
                [Problem(str(path), None, None, f"is {name} text, expected UTF-8: save it as UTF-8")]
            )


def _check_input(path: Path, *, outcome: str = "Nothing was imported.") -> None:
    if path.is_dir():
        raise DataError([Problem(str(path), None, None, "is a directory, expected a file")], outcome=outcome)
    if not path.is_file():
        raise DataError([Problem(str(path), None, None, "no such file")], outcome=outcome)


def label_values(path: str | Path, column: str = "label", *, fmt: str | None = None) -> list[str]:
    """The distinct values of ``column`` in a file, in order of first appearance (for
    ``duolabel init --from FILE``: the labels of a golden file). A list cell (a multi-label
    golden file) gives each of its values; a cell ``import`` would refuse (binary, true/false,
    an object) is refused here too, naming the file, row and column."""
    path = Path(path)
    found: dict[str, None] = {}
    with stating("No project was created."):
        header, rows = read_records(path, fmt)
        if header is not None and column not in header:
            have = ", ".join(repr(h) for h in header) or "no columns"
            raise DataError([Problem(str(path), 1, column, f"missing column; the file has {have}")])
        for row in rows:
            if row.problem is not None:
                raise DataError([row.problem])
            value: Any = (row.values or {}).get(column)
            for one in value if _is_list(value) else [value]:
                if (problem := _type_problem(one, reserved=True)) is not None:
                    raise DataError([Problem(str(path), row.number, column, problem)])
                if (text := _cell(one)) is not None:
                    found.setdefault(text)
    return list(found)


@contextmanager
def stating(outcome: str) -> Iterator[None]:
    """Re-raise a :class:`DataError` of the block with ``outcome`` as its last line, for a
    command that reads a file without importing it ("No project was created.")."""
    try:
        yield
    except DataError as exc:
        raise DataError(exc.problems, more=exc.more, outcome=outcome) from None


# ---------------------------------------------------------------------------
# Validation and insertion


def _type_problem(value: Any, *, reserved: bool) -> str | None:
    """What is wrong with a value's type, if anything. ``str()`` of these would be stored
    silently as text a person never wrote (``b'...'``, ``['a', 'list']``, ``True``)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "got binary data, expected text (store the column as a string, not binary)"
    if isinstance(value, (list, tuple, dict, set)) or getattr(value, "ndim", 0) > 0:
        kind = "an object" if isinstance(value, dict) else "a list"
        return f"got {kind} ({_short(value)}), expected a single value"
    if reserved and isinstance(value, bool):
        return f"got {str(value).lower()} (a true/false value), expected text"
    return None


def _is_list(value: Any) -> bool:
    """A list cell: a JSON array in JSONL, a list column's value (a numpy array) from Parquet."""
    return isinstance(value, (list, tuple)) or getattr(value, "ndim", 0) == 1


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _cell(value: Any) -> str | None:
    """A cell as text; None for missing / NaN / empty."""
    if value is None:
        return None
    if isinstance(value, float) and value != value:  # NaN from pandas / Parquet
        return None
    text = value if isinstance(value, str) else str(value)
    text = text.strip()
    return text or None


def _text_problem(text: str) -> str | None:
    """What keeps a cell's text from being stored as it is, if anything: undecodable bytes (kept
    as lone surrogates by the reader), or a NUL character, which PostgreSQL's text cannot hold
    (the import failed there with a database error) and SQLite would keep but cut in places."""
    if "\x00" in text:
        return "holds a NUL character (\\x00), which text cannot store: remove it"
    if text.isascii():  # most cells, at C speed: ASCII holds no surrogate
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "undecodable bytes: expected UTF-8 text"
    return None


# The encoder json.dumps(..., sort_keys=True, ensure_ascii=False, default=str) would build
# on every call, built once: the same output, without the per-row construction.
_HASH_JSON = json.JSONEncoder(sort_keys=True, ensure_ascii=False, default=str)


_json_string = json.encoder.encode_basestring  # what _HASH_JSON writes for one string


def content_hash(text: str, fields: dict[str, Any], role: str, gold: str | None) -> str:
    if fields or not isinstance(gold, str | None):
        payload = _HASH_JSON.encode([text, fields, role, gold])
    else:
        # The common row (no extra columns), written as _HASH_JSON writes it, byte for byte
        # (tests/test_io.py checks), without its per-call machinery: a third of an import's
        # time went to the encoder.
        last = "null" if gold is None else _json_string(gold)
        payload = f"[{_json_string(text)}, {{}}, {_json_string(role)}, {last}]"
    return hashlib.sha256(payload.encode("utf-8", "surrogateescape")).hexdigest()


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, float):
        return None if value != value else value
    if hasattr(value, "item"):  # numpy scalars
        return _jsonable(value.item())
    return str(value)


def import_records(
    store: Store,
    task: TaskConfig,
    *,
    source: str,
    header: list[str] | None,
    rows: Iterable[_Row],
    role: str = "regular",
    gold_column: str | None = None,
    columns: dict[str, str] | None = None,
    batch: str | None = None,
    max_problems: int = MAX_PROBLEMS,
    progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Validate and import a stream of rows in one transaction; see the module docstring."""
    if role not in ROLES:
        raise ProjectError(f"role {role!r} is not one of {', '.join(map(repr, ROLES))}")
    if role in WITH_GOLD and not gold_column:
        raise ProjectError(f"{source}: {role} items need a gold-label column (--gold COLUMN)")
    rename = dict(columns or {})
    labels = task.label_names
    kind = task_type(task.type)
    id_field = task.id_field
    # Fields a task type needs on every item (pairwise: the two responses), kept in Item.fields.
    item_fields = list(getattr(kind, "item_fields", ()))
    required = [id_field, *task.text_fields, *item_fields] + ([gold_column] if gold_column else [])
    reserved = {id_field, *task.text_fields, *item_fields, *([gold_column] if gold_column else [])}
    problems = _Problems(source, max_problems)
    result = ImportResult(file=source)

    if header is not None:
        _check_renames(source, header, rename)
        present = {rename.get(c, c) for c in header}
        missing = [c for c in required if c not in present]
        if missing:
            raise DataError(
                [
                    Problem(
                        source,
                        1 if header else None,
                        c,
                        f"missing column; the file has {', '.join(repr(h) for h in header) or 'no columns'}"
                        + (f" (map one with --map FILE_COLUMN={c})" if header else ""),
                    )
                    for c in missing
                ]
            )

    batch_name = batch or Path(source).stem
    import_id = uuid.uuid4().hex
    drop_stale_imports(store)
    last_row = 0
    chunk: list[tuple[int, dict[str, Any]]] = []
    # Gold labels for regular items already in the project (a file of suggested golden items
    # filled in by experts, see duolabel.stages.learn): they become golden when the import publishes.
    promotions: dict[str, str] = {}

    def flush() -> None:
        # Each chunk is checked with a read and staged in one short write transaction, so the
        # web app's writers wait for a chunk at most, never for the file (issue 12 item 9).
        if not chunk:
            return
        ids = [values["id"] for _, values in chunk]
        # An id a CSV export guarded against formulas ('=A1 for =A1) names the item it came
        # from when there is no item of the id as written (the golden round trip).
        plain = {i: undefused(i) for i in ids}
        with store.read() as session:
            looked_up = [*ids, *{p for i, p in plain.items() if p != i}]
            existing: dict[str, str] = dict(
                select_in(session, _ITEMS, ["id", "content_hash"], "id", looked_up)
            )
            for _, values in chunk:
                if values["id"] not in existing and plain[values["id"]] in existing:
                    values["id"] = plain[values["id"]]
            ids = [values["id"] for _, values in chunk]
            staged = select_in(session, _STAGED, ["id"], "id", ids, import_id=import_id)
            earlier = {row[0] for row in staged}
        fresh: list[dict[str, Any]] = []
        seen_here: set[str] = set()
        now = utcnow()
        for number, values in chunk:
            item_id = values["id"]
            if item_id in seen_here or item_id in earlier:
                problems.add(number, id_field, f"duplicate id {item_id!r}: it appears earlier in this file")
                continue
            seen_here.add(item_id)
            if item_id in existing:
                if existing[item_id] == values["content_hash"]:
                    result.unchanged += 1
                elif role == "golden" and existing[item_id] in _as_regular(values):
                    promotions[item_id] = values["gold_label"]
                else:
                    problems.add(number, id_field, _changed(item_id, values, existing[item_id], role))
                continue
            # The row number orders the items: seq is the published base plus it.
            values.update(import_id=import_id, ord=number, role=role, created_at=now)
            fresh.append(values)
        if fresh:
            # A Core insert on the table, not the ORM bulk insert: every row carries every
            # column, so it is one executemany per chunk. (The ORM path leaves None values
            # out of each row's INSERT, which splits a chunk into a statement per run of
            # rows with and without a gold label: ~500 statements per 5,000 rows at 5% gold.)
            with store.write() as session:
                insert_many(session, _STAGED, fresh)
        chunk.clear()

    try:
        for row in rows:
            last_row = max(last_row, row.number or 0)
            result.rows += 1
            if progress is not None and result.rows % 1000 == 0:
                progress(1000)
            if row.problem is not None:
                problems.add_problem(row.problem)
                continue
            raw = row.values or {}
            values = {rename.get(k, k): v for k, v in raw.items()} if rename else raw
            bad = False
            for col in required:
                if col not in values:
                    problems.add(row.number, col, "missing field")
                    bad = True
            if bad:
                continue
            cells = {}
            for col, value in values.items():
                if type(value) is str:  # a CSV cell: no type to check (the fast path)
                    cell = (value.strip() or None) if col in reserved else value
                    if cell is not None and (wrong := _text_problem(cell)) is not None:
                        problems.add(row.number, col, wrong)
                        bad = True
                    cells[col] = cell
                    continue
                if col == gold_column and kind.list_valued and _is_list(value):
                    cells[col] = value  # a list label (multi_label) in JSONL or Parquet: checked below
                    continue
                wrong = _type_problem(value, reserved=col in reserved)
                if wrong is not None:
                    problems.add(row.number, col, wrong)
                    bad = True
                    continue
                cell = _cell(value) if col in reserved else value
                if isinstance(cell, str) and (wrong := _text_problem(cell)) is not None:
                    problems.add(row.number, col, wrong)
                    bad = True
                cells[col] = cell
            if bad:
                continue
            item_id = cells[id_field]
            if item_id is None:
                problems.add(row.number, id_field, "got an empty id, expected a non-empty id")
                continue
            parts = [cells[c] for c in task.text_fields]
            if parts.count(None) == len(parts):
                col = task.text_fields[0] if len(task.text_fields) == 1 else "/".join(task.text_fields)
                problems.add(row.number, col, "got empty text, expected the item's text")
                continue
            empty = [c for c in item_fields if cells[c] is None]
            for col in empty:
                problems.add(row.number, col, f"got an empty {col}, expected its text")
            if empty:
                continue
            text = "\n\n".join([p for p in parts if p is not None])
            gold = cells[gold_column] if gold_column else None
            if gold is not None or role in WITH_GOLD:
                try:
                    gold = check_item_answer(kind, gold, labels, text)
                except AnswerError as exc:
                    got = "an empty gold label" if gold is None else repr(exc.got)
                    problems.add(row.number, gold_column, f"got {got}, expected {exc.expected}")
                    continue
            extra = {k: _jsonable(v) for k, v in cells.items() if k not in reserved or k in item_fields}
            chunk.append(
                (
                    row.number,
                    {
                        "id": item_id,
                        "text": text,
                        "fields": extra,
                        # Kept apart for the labeling page's one block per field; outside
                        # the content hash, which `text` already covers.
                        "text_parts": dict(zip(task.text_fields, parts, strict=True))
                        if len(parts) > 1
                        else None,
                        "gold_label": gold,
                        "gold_source": source if gold is not None else None,
                        "content_hash": content_hash(text, extra, role, gold),
                        "batch": row.batch or batch_name,
                    },
                )
            )
            if len(chunk) >= CHUNK_ROWS:
                flush()
        flush()
        if progress is not None:
            progress(result.rows % 1000)
        if result.rows == 0 and not problems.found:
            problems.add(None, None, "the file has no rows")
        if problems.found:
            raise DataError(problems.found, more=problems.more)
        _publish(store, import_id, result, problems, promotions, source=source, last_row=last_row)
    finally:
        _drop_staged(store, import_id, last_row)
    return result


# SQLAlchemy types a mapped class's __table__ as a FromClause; it is a Table.
_ITEMS: Table = Item.__table__  # type: ignore[assignment]
_STAGED: Table = StagedItem.__table__  # type: ignore[assignment]


def _changed(item_id: str, values: dict[str, Any] | None = None, existing: str = "", given: str = "") -> str:
    """Why a row cannot be the item of its id already in the project (content hash
    ``existing``): another role (the same text and gold label imported as a control, say; told
    when the row's ``values`` and its role ``given`` are known), or other content."""
    if values is not None:
        text, fields, gold = values["text"], values["fields"], values.get("gold_label")
        for role in (r for r in ROLES if r != given):
            if existing in {content_hash(text, fields, role, known) for known in (gold, None)}:
                return (
                    f"id {item_id!r} is already in the project as a {role} item with the same text; "
                    f"an item keeps the role it was first imported with (this file gives it role "
                    f"{given!r}): give it a new id to use it as both"
                )
    return (
        f"id {item_id!r} is already in the project with different content; "
        "give the item a new id or keep the old content"
    )


_ITEM_COLUMNS = (
    "id",
    "text",
    "fields",
    "text_parts",
    "content_hash",
    "batch",
    "role",
    "gold_label",
    "gold_source",
    "created_at",
)


def _check_renames(source: str, header: list[str], rename: dict[str, str]) -> None:
    """Refuse a rename (``--map FILE_COLUMN=FIELD``) of a column the file lacks, and two columns
    that would become one field: the last one silently won."""
    have = ", ".join(repr(h) for h in header) or "no columns"
    problems = [
        Problem(source, 1, column, f"--map renames this column, but the file has {have}")
        for column in rename
        if column not in header
    ]
    became: dict[str, str] = {}
    for column in header:
        field = rename.get(column, column)
        if field in became:
            both = f"columns {became[field]!r} and {column!r}"
            problems.append(Problem(source, 1, column, f"{both} would both be field {field!r}: map only one"))
        became.setdefault(field, column)
    if problems:
        raise DataError(problems)


def _as_regular(values: dict[str, Any]) -> set[str]:
    """The content hashes a row would have as the regular item it came from: its text and
    input columns as written, or as they were before a CSV export wrote them (without the
    apostrophe it puts before formula-like text, and without the empty columns it writes for
    an item that has none: :func:`duolabel.stages.learn.suggest_golden`)."""
    text, fields = values["text"], values["fields"]
    restored = {k: undefused(v) if isinstance(v, str) else v for k, v in fields.items()}
    variants = [fields, restored]
    variants += [{k: v for k, v in f.items() if v != ""} for f in variants]
    return {content_hash(t, f, "regular", None) for t in {text, undefused(text)} for f in variants}


def _publish(
    store: Store,
    import_id: str,
    result: ImportResult,
    problems: _Problems,
    promotions: dict[str, str] | None = None,
    *,
    source: str = "",
    last_row: int,
) -> None:
    """Move an import's staged items into ``items``, ``PUBLISH_ROWS`` rows of the file per
    short transaction; regular items in ``promotions`` become golden with their gold label.

    Every item is checked against the project first (items another import published since
    they were staged), so a file with a clash publishes nothing. Imports publish one at a
    time (the project lock ``import``); a writer of the web app waits for one transaction,
    never for the file: a 1,000,000-row file took 8 s in one transaction, and every answer
    sent meanwhile waited that long (docs/benchmarks.md, issue 12 item 9). The file's items
    appear over those seconds; an import killed meanwhile leaves the part it published,
    and running it again publishes the rest (the part already in counts as unchanged)."""
    staged = StagedItem.__table__.c

    def clashes(session: Session, *where: ColumnElement[bool]) -> list[Row]:
        return list(
            session.execute(
                select(staged.id, staged.ord, staged.content_hash, Item.content_hash)
                .join(Item, Item.id == staged.id)
                .where(staged.import_id == import_id, *where)
            )
        )

    def refuse(found: list[Row]) -> None:
        for item_id, row, ours, theirs in found:
            if ours != theirs:
                problems.add(row, None, _changed(item_id))
        if problems.found:
            raise DataError(problems.found, more=problems.more)

    with store.lock("import", wait=IMPORT_LOCK_WAIT):
        with store.read() as session:
            found = clashes(session)
            base = session.scalar(select(func.coalesce(func.max(Item.seq), 0))) or 0
        result.unchanged += sum(ours == theirs for _, _, ours, theirs in found)
        refuse(found)
        checked = {item_id for item_id, *_ in found}
        turns = _Turns(store)
        for low in range(0, last_row + 1, PUBLISH_ROWS):
            part = (staged.ord >= low, staged.ord < low + PUBLISH_ROWS)
            with turns.write() as session:
                # Only a writer that is not an import (none makes items with a user's ids
                # today) could clash after the check above: refused, though what was
                # published before stays, as after a kill.
                refuse([c for c in clashes(session, *part) if c[0] not in checked])
                missing = ~select(Item.id).where(Item.id == staged.id).exists()
                fresh = select(*(staged[c] for c in _ITEM_COLUMNS), (staged.ord + base).label("seq")).where(
                    staged.import_id == import_id, *part, missing
                )
                # Counted in the same transaction, before the insert: a driver may report no
                # rowcount for INSERT ... SELECT (psycopg on PostgreSQL gives -1).
                result.added += session.scalar(select(func.count()).select_from(fresh.subquery())) or 0
                session.execute(insert(Item.__table__).from_select([*_ITEM_COLUMNS, "seq"], fresh))  # type: ignore[arg-type]  # see flush()
        if promotions:
            with store.write() as session:
                for item_id, gold in promotions.items():
                    result.promoted += int(make_golden(session, item_id, gold, source=source))


class _Turns:
    """Write transactions one after another that leave room for other writers: on a store
    with one writer, once one of them had to wait for the lock, a pause before each next one
    (see ``PUBLISH_PAUSE``)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.others = False  # another process writes to the store
        self.held = 0.0  # seconds the last transaction held the write lock

    @contextmanager
    def write(self) -> Iterator[Session]:
        if self.others:
            _pause(max(PUBLISH_PAUSE, 2 * self.held))
        with self.store.write() as session:
            began = time.perf_counter()
            session.execute(select(1))  # begins the transaction: waits for the write lock
            locked = time.perf_counter()
            self.others = self.store.single_writer and (self.others or locked - began > CONTENDED)
            yield session
        self.held = time.perf_counter() - locked  # the commit included


def _pause(seconds: float) -> None:
    time.sleep(seconds)


def _drop_staged(store: Store, import_id: str, last_row: int) -> None:
    """Delete an import's staged rows, a range of rows per short transaction, leaving room
    for other writers (a million rows deleted back to back would hold the web app's writers
    up as a publish did)."""
    staged = StagedItem.__table__.c
    turns = _Turns(store)
    for low in range(0, last_row + 1, CHUNK_ROWS):
        with turns.write() as session:
            session.execute(
                delete(StagedItem).where(
                    staged.import_id == import_id, staged.ord >= low, staged.ord < low + CHUNK_ROWS
                )
            )


def drop_stale_imports(store: Store, *, older_than: timedelta = STALE_IMPORT) -> None:
    """Delete what killed imports left in ``staged_items``: an import stages a chunk every
    few seconds, so one whose newest row is older than ``older_than`` is gone."""
    cutoff = utcnow() - older_than
    with store.read() as session:
        stale = session.execute(
            select(StagedItem.import_id, func.max(StagedItem.ord))
            .group_by(StagedItem.import_id)
            .having(func.max(StagedItem.created_at) < cutoff)
        ).all()
    for import_id, last_row in stale:
        _drop_staged(store, import_id, last_row)


def import_file(
    store: Store,
    task: TaskConfig,
    path: str | Path,
    *,
    fmt: str | None = None,
    **options: Any,
) -> ImportResult:
    """Import one CSV / JSONL / Parquet file of items; see :func:`import_records`."""
    path = Path(path)
    header, rows = read_records(path, fmt)
    return import_records(store, task, source=str(path), header=header, rows=rows, **options)


@dataclass(frozen=True)
class Answer:
    """One recorded human answer from an answers file, checked against the project."""

    row: int
    item: str
    worker: str
    label: str
    seconds: float | None


ANSWER_COLUMNS = {
    "item": ("item", "item_id", "task"),
    "worker": ("worker", "worker_id", "annotator"),
    "label": ("label",),
    "seconds": ("seconds", "time"),
}


def read_answers(
    store: Store,
    task: TaskConfig,
    path: str | Path,
    *,
    fmt: str | None = None,
    max_problems: int = MAX_PROBLEMS,
) -> list[Answer]:
    """Read and check a file of recorded answers (``item, worker, label`` and optional
    ``seconds`` or ``time``, the seconds spent): every item must be in the project, every
    label one of the task's, a worker answers an item once. All problems at once."""
    path = Path(path)
    header, rows = read_records(path, fmt)
    problems = _Problems(str(path), max_problems)

    def column(present: Iterable[str], what: str) -> str | None:
        return next((c for c in ANSWER_COLUMNS[what] if c in present), None)

    if header is not None:
        missing = [w for w in ("item", "worker", "label") if column(header, w) is None]
        if missing:
            have = ", ".join(repr(h) for h in header) or "no columns"
            raise DataError(
                [Problem(str(path), 1, w, f"missing column; the file has {have}") for w in missing]
            )
    kind = task_type(task.type)
    answers: list[Answer] = []
    seen: dict[tuple[str, str], int] = {}
    for row in rows:
        if row.problem is not None:
            problems.add_problem(row.problem)
            continue
        values = row.values or {}
        cells: dict[str, Any] = {}
        for what in ANSWER_COLUMNS:
            name = column(values, what)
            value = values.get(name) if name is not None else None
            if what == "label" and kind.list_valued and _is_list(value):
                cells[what] = value  # a list label (multi_label) in JSONL or Parquet
                continue
            wrong = _type_problem(value, reserved=True)
            if wrong is not None:
                problems.add(row.number, name, wrong)
                cells[what] = None
                continue
            cells[what] = _cell(value)
            if cells[what] is not None and (wrong := _text_problem(cells[what])) is not None:
                problems.add(row.number, name, wrong)
                cells[what] = None
                continue
            if what != "seconds" and cells[what] is None:
                problems.add(row.number, name or what, f"got an empty {what}, expected a non-empty {what}")
        item, worker, label, seconds_text = (cells[w] for w in ANSWER_COLUMNS)
        if worker is not None and len(worker) > 100:
            problems.add(row.number, column(values, "worker"), "got a worker name over 100 characters")
            worker = None
        if label is not None:
            try:
                label = kind.check_answer(label, task.label_names)
            except AnswerError as exc:
                problems.add(row.number, "label", f"got {exc.got!r}, expected {exc.expected}")
                label = None
        seconds = None
        if seconds_text is not None:
            try:
                seconds = float(seconds_text)
            except ValueError:
                seconds = -1.0
            if not 0 <= seconds < float("inf"):
                name = column(values, "seconds")
                problems.add(
                    row.number, name, f"got {seconds_text!r}, expected seconds spent (a number >= 0)"
                )
                continue
        if item is None or worker is None or label is None:
            continue
        if (item, worker) in seen:
            problems.add(
                row.number,
                column(values, "worker"),
                f"{worker!r} answers {item!r} again (row {seen[item, worker]})",
            )
            continue
        seen[item, worker] = row.number
        answers.append(Answer(row.number, item, worker, label, seconds))
    # Answers that point into the item's text (spans) are checked against it: read it too.
    against_text = getattr(kind, "check_against_text", None)
    known: dict[str, str] = {}
    with store.read() as session:
        ids = sorted({a.item for a in answers})
        for start in range(0, len(ids), CHUNK_ROWS):
            chunk = ids[start : start + CHUNK_ROWS]
            query = select(Item.id, Item.text if against_text is not None else Item.id)
            known.update(session.execute(query.where(Item.id.in_(chunk))).all())
    for answer in answers:
        if answer.item not in known:
            item_column = column(header or ANSWER_COLUMNS["item"], "item") or "item"
            problems.add(
                answer.row, item_column, f"no item {answer.item!r} in the project; import the items first"
            )
        elif against_text is not None:
            try:
                against_text(answer.label, known[answer.item])
            except AnswerError as exc:
                problems.add(answer.row, "label", f"got {exc.got!r}, expected {exc.expected}")
    if not answers and not problems.found:
        problems.add(None, None, "the file has no rows")
    if problems.found:
        raise DataError(problems.found, more=problems.more)
    return answers


def import_frame(store: Store, task: TaskConfig, frame: Any, **options: Any) -> ImportResult:
    header, rows = _read_frame(frame)
    return import_records(store, task, source="DataFrame", header=header, rows=rows, **options)
