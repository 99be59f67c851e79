"""Storage backends: what a kind of database needs beyond SQLAlchemy's own dialect.

Every backend shares the tables and the Alembic revisions; a backend only says how its URL is
spelt for SQLAlchemy, which engine options it wants and what to set up on each connection. One
is registered per SQLAlchemy dialect name in :data:`STORES`; a plug-in adds one through the
``duolabel.stores`` entry point group. A dialect with no registered backend runs with
SQLAlchemy's defaults.
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import Engine, event

from duolabel.core.registry import Registry

__all__ = ["STORES", "PostgresBackend", "SQLiteBackend", "StoreBackend"]

SQLITE_BUSY_TIMEOUT_MS = 30_000


class StoreBackend:
    """The defaults: the URL as given, SQLAlchemy's engine options, nothing per connection."""

    #: Writers of one process queue on a lock of the Store (a database with a single writer).
    single_writer = False

    def url(self, url: str) -> str:
        return url

    def engine_options(self) -> dict[str, Any]:
        return {"pool_pre_ping": True}

    def setup(self, engine: Engine) -> None:
        """Hook the engine's events (called once, before the migrations run)."""


STORES: Registry[type[StoreBackend]] = Registry("storage backend", group="duolabel.stores")


@STORES.register("sqlite")
class SQLiteBackend(StoreBackend):
    """SQLite in WAL mode with a busy timeout; write transactions begin IMMEDIATE."""

    single_writer = True

    def engine_options(self) -> dict[str, Any]:
        return {}

    def setup(self, engine: Engine) -> None:
        _create_private(engine.url.database)

        # pysqlite's own transaction handling issues BEGIN lazily (deferred), which lets two
        # writers deadlock on the read->write lock upgrade; take control of BEGIN instead.
        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
            cur.execute("PRAGMA foreign_keys = ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            write = conn.get_execution_options().get("duolabel_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _create_private(database: str | None) -> None:
    """Create the database file readable by its owner only (0600) before SQLite opens it:
    it holds password hashes and session tokens. SQLite gives its -wal and -shm files the
    mode of the database file. An existing file keeps the mode its owner gave it."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    try:
        fd = os.open(database, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    except OSError:
        return  # a missing folder and the like: SQLite's own open reports it
    os.close(fd)
    # os.open applies the umask, which can only remove bits: no need to chmod.


@STORES.register("postgresql")
class PostgresBackend(StoreBackend):
    """PostgreSQL through psycopg 3 (the driver the ``postgres`` extra installs)."""

    def url(self, url: str) -> str:
        if url.startswith("postgresql://"):
            return "postgresql+psycopg://" + url.removeprefix("postgresql://")
        return url
