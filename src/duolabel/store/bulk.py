"""Bulk inserts that skip SQLAlchemy's per-row work (an import's staged items)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

from sqlalchemy import JSON, Table, bindparam, insert, null
from sqlalchemy.orm import DeclarativeBase

__all__ = ["insert_many", "new_rows", "select_in"]

_UNSET = object()


class _Processed:
    """One column's bind processor, run once per run of the same value (a chunk's time) and
    once for every empty dict (rows without extra fields)."""

    __slots__ = ("empty", "index", "last", "process", "result")

    def __init__(self, index: int, process: Callable[[Any], Any]) -> None:
        self.index, self.process = index, process
        self.last: Any = _UNSET
        self.result: Any = None
        self.empty: Any = _UNSET

    def __call__(self, value: Any) -> Any:
        if value is self.last:
            return self.result
        if isinstance(value, dict) and not value:
            if self.empty is _UNSET:
                self.empty = self.process(value)
            return self.empty
        self.last, self.result = value, self.process(value)
        return self.result


def insert_many(session: Any, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` (dicts with the same keys) with one DB-API ``executemany``.

    What SQLAlchemy's executemany does per row (build its parameters, run each column's
    bind processor) is done here once per distinct value: a chunk's rows share their
    import, role, batch and time, and most have no extra fields. It took half of an import's
    time before (benchmarks/io.py).

    Examples
    --------
    >>> from sqlalchemy import JSON, Column, MetaData, String, create_engine, select
    >>> from sqlalchemy.orm import Session
    >>> table = Table("t", MetaData(), Column("id", String, primary_key=True), Column("fields", JSON))
    >>> engine = create_engine("sqlite://")
    >>> table.metadata.create_all(engine)
    >>> with Session(engine) as session:
    ...     insert_many(session, table, [{"id": "a", "fields": {}}, {"id": "b", "fields": {"n": 1}}])
    ...     session.execute(select(table)).all()
    [('a', {}), ('b', {'n': 1})]
    """
    connection = session.connection()
    dialect = connection.dialect
    names = list(rows[0])
    compiled = insert(table).values({name: bindparam(name) for name in names}).compile(dialect=dialect)
    # Only some columns have a bind processor (JSON; DateTime on SQLite); the rest pass as they are.
    slots = [
        _Processed(i, process)
        for i, name in enumerate(names)
        if (process := table.c[name].type._cached_bind_processor(dialect)) is not None
    ]

    def processed(row: dict[str, Any]) -> list[Any]:
        out = [row[name] for name in names]
        for slot in slots:
            out[slot.index] = slot(out[slot.index])
        return out

    if compiled.positional:
        order = [names.index(name) for name in compiled.positiontup or ()]
        params: list[Any] = [tuple(out[i] for i in order) for out in map(processed, rows)]
    else:
        params = [dict(zip(names, processed(row), strict=True)) for row in rows]
    connection.exec_driver_sql(str(compiled), params)


def new_rows(objects: Sequence[DeclarativeBase]) -> tuple[Table, list[dict[str, Any]]]:
    """The table and column values of new ORM objects of one class, for :func:`insert_many`.

    What a flush would insert: each column's value, or its Python-side default where the
    object leaves it unset (a callable default, such as a timestamp, is called once for all
    rows: one transaction's time, and without an execution context: a default that reads
    one must be set on every object); the autoincrement key is left to the database.

    Examples
    --------
    >>> from sqlalchemy import Integer, String
    >>> from sqlalchemy.orm import mapped_column
    >>> class Base(DeclarativeBase): ...
    >>> class Row(Base):
    ...     __tablename__ = "rows"
    ...     id = mapped_column(Integer, primary_key=True, autoincrement=True)
    ...     name = mapped_column(String)
    ...     kind = mapped_column(String, default="plain")
    >>> new_rows([Row(name="a"), Row(name="b", kind="odd")])[1]
    [{'name': 'a', 'kind': 'plain'}, {'name': 'b', 'kind': 'odd'}]
    """
    table = cast(Table, objects[0].__table__)
    states = [obj.__dict__ for obj in objects]  # only the attributes set on each object
    given = set().union(*states)
    everywhere = given.intersection(*states)
    defaults: dict[str, Any] = {}
    for column in table.columns:
        default = column.default
        if column is table.autoincrement_column:
            continue
        if column.key in everywhere:  # every object sets it: no default is asked for
            defaults[column.key] = None
        elif default is not None and getattr(default, "is_scalar", False):
            defaults[column.key] = default.arg  # type: ignore[attr-defined]
        elif default is not None and getattr(default, "is_callable", False):
            defaults[column.key] = default.arg(None)  # type: ignore[attr-defined]
        elif column.key in given:
            # Unset on some objects: SQL NULL, as a flush leaves it (a JSON column would
            # store None as JSON 'null').
            defaults[column.key] = null() if isinstance(column.type, JSON) else None
        # A column no object sets and without a default is left out: NULL or its server default.
    return table, [{key: state.get(key, value) for key, value in defaults.items()} for state in states]


def select_in(
    session: Any,
    table: Table,
    columns: Sequence[str],
    key: str,
    values: Sequence[Any],
    **equal: Any,
) -> list[tuple[Any, ...]]:
    """``SELECT columns FROM table WHERE key IN values AND column = value ...`` as one
    DB-API call: SQLAlchemy renders an expanded ``IN`` anew per call, a bound name per value,
    which cost an import of 5,000-row chunks more than the query itself.

    Examples
    --------
    >>> from sqlalchemy import Column, MetaData, String, create_engine, insert
    >>> from sqlalchemy.orm import Session
    >>> table = Table("t", MetaData(), Column("id", String, primary_key=True), Column("kind", String))
    >>> engine = create_engine("sqlite://")
    >>> table.metadata.create_all(engine)
    >>> with Session(engine) as session:
    ...     _ = session.execute(insert(table), [{"id": "a", "kind": "x"}, {"id": "b", "kind": "y"}])
    ...     select_in(session, table, ["id"], "id", ["a", "b", "c"], kind="x")
    [('a',)]
    """
    if not values:
        return []
    connection = session.connection()
    dialect = connection.dialect
    quote = dialect.identifier_preparer.quote
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    conditions = [f"{quote(name)} = {mark}" for name in equal]
    conditions.append(f"{quote(key)} IN ({', '.join([mark] * len(values))})")
    sql = (
        f"SELECT {', '.join(quote(c) for c in columns)} FROM {quote(table.name)} "
        f"WHERE {' AND '.join(conditions)}"
    )
    return [tuple(row) for row in connection.exec_driver_sql(sql, (*equal.values(), *values))]
