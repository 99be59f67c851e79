"""Bulk inserts that skip SQLAlchemy's per-row work (an import's staged items)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Table, bindparam, insert

__all__ = ["insert_many", "select_in"]

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
