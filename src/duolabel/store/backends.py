"""Storage backends: what a kind of database needs beyond SQLAlchemy's own dialect.

Every backend shares the tables and the Alembic revisions; a backend only says how its URL is
spelt for SQLAlchemy, which engine options it wants and what to set up on each connection. One
is registered per SQLAlchemy dialect name in :data:`STORES`; a plug-in adds one through the
``duolabel.stores`` entry point group. A dialect with no registered backend runs with
SQLAlchemy's defaults.
"""

from __future__ import annotations

import os
import socket
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, event, text

from duolabel.core.registry import Registry

__all__ = ["STORES", "LockBusy", "PostgresBackend", "SQLiteBackend", "StoreBackend"]

SQLITE_BUSY_TIMEOUT_MS = 30_000


class LockBusy(Exception):
    """A project lock is held by another process; ``holder`` says which, as far as known."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


def holder_note() -> str:
    """Who takes a lock: this process, its host and the time, for the message of the next one."""
    since = datetime.now(UTC).isoformat(timespec="seconds")
    return f"pid {os.getpid()} since {since} on {socket.gethostname()}"


class StoreBackend:
    """The defaults: the URL as given, SQLAlchemy's engine options, nothing per connection."""

    #: Writers of one process queue on a lock of the Store (a database with a single writer).
    single_writer = False
    #: Execution options for :meth:`duolabel.store.Store.glance`: statements outside a
    #: transaction (no BEGIN or COMMIT sent).
    autocommit: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"}

    def url(self, url: str) -> str:
        return url

    def engine_options(self, connections: int) -> dict[str, Any]:
        """Keep ``connections`` open between requests, as many as threads use the store at once.

        SQLAlchemy's default pool keeps 5 and closes every connection opened beyond them as
        soon as it is returned: with the web app's 8 request threads a PostgreSQL server
        started and ended a session every few answers (130 sessions in a 25 s load run against
        12), each a new server process with cold caches and without the prepared statements,
        so next-task's statements were planned anew; 12% fewer answers/s (docs/benchmarks.md).
        Past ``connections``, SQLAlchemy opens up to 10 more for a burst and closes them after.
        """
        return {"pool_pre_ping": True, "pool_size": connections}

    def setup(self, engine: Engine) -> None:
        """Hook the engine's events (called once, before the migrations run)."""

    def analyze(self, engine: Engine, tables: Sequence[str]) -> None:
        """Bring the query planner's statistics on ``tables`` up to date (after a bulk write).

        The default does nothing: SQLite plans without statistics unless ANALYZE was ever run
        on it, and its rules of thumb already prefer the indexes the queue's queries need.
        """

    @contextmanager
    def lock(self, engine: Engine, name: str) -> Iterator[None]:
        """Hold the project-wide lock ``name`` or raise :class:`LockBusy` at once.

        The lock must die with its holder (a killed process never leaves it behind). The
        default has no such lock and lets the caller through.
        """
        yield


STORES: Registry[type[StoreBackend]] = Registry("storage backend", group="duolabel.stores")


@STORES.register("sqlite")
class SQLiteBackend(StoreBackend):
    """SQLite in WAL mode with a busy timeout; write transactions begin IMMEDIATE."""

    single_writer = True
    # The driver's own autocommit is already on (isolation_level None below): just no BEGIN.
    autocommit: dict[str, Any] = {"duolabel_autocommit": True}

    def engine_options(self, connections: int) -> dict[str, Any]:
        # SQLAlchemy's own pool: a SQLite connection is a file opened in this process, not a
        # server process, and a pool of web.threads + 2 measured no faster (158 against 165
        # answers/s in 4 back-to-back pairs at 50 annotators; docs/benchmarks.md).
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
            options = conn.get_execution_options()
            if options.get("duolabel_autocommit", False):
                return
            conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get("duolabel_write", False) else "BEGIN")

    @contextmanager
    def lock(self, engine: Engine, name: str) -> Iterator[None]:
        """An advisory lock (``flock``) on a file beside the database: the OS releases it when
        the holder exits or is killed, so it is never stale. The file keeps the holder's note."""
        database = engine.url.database
        if not database or database == ":memory:" or database.startswith("file:"):
            yield
            return
        import fcntl  # POSIX; imported here so that the module still imports elsewhere

        fd = os.open(f"{database}.{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LockBusy(os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "unknown") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, holder_note().encode(), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


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

    def analyze(self, engine: Engine, tables: Sequence[str]) -> None:
        """``ANALYZE`` the tables. Autovacuum would, but only a minute or more after a bulk
        write; until then the planner takes thousands of fresh routes for a few hundred and
        sorts them all on every next-task instead of reading queue order through the index
        (issue 12: 27 ms per next-task query on 5,000 routes, PostgreSQL busy on both cores).
        ANALYZE reads a fixed-size sample of each table, so it stays quick on large ones."""
        preparer = engine.dialect.identifier_preparer
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.exec_driver_sql("ANALYZE " + ", ".join(preparer.quote(name) for name in tables))

    #: The first key of every duolabel advisory lock ("duol"); the second is the lock's name.
    LOCK_CLASS = 0x64756F6C

    @contextmanager
    def lock(self, engine: Engine, name: str) -> Iterator[None]:
        """A session-level advisory lock on a connection of its own: PostgreSQL releases it
        when that session ends, so a killed holder never leaves it behind. The holder's note
        travels as the session's ``application_name``, which the next one reads back."""
        key = zlib.crc32(name.encode()) & 0x7FFFFFFF
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            got = conn.scalar(text("SELECT pg_try_advisory_lock(:a, :b)"), {"a": self.LOCK_CLASS, "b": key})
            if not got:
                holder = conn.scalar(
                    text(
                        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                        " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :a AND l.objid = :b"
                        " AND l.objsubid = 2 AND l.database = (SELECT oid FROM pg_database"
                        " WHERE datname = current_database())"
                    ),
                    {"a": self.LOCK_CLASS, "b": key},
                )
                raise LockBusy(str(holder or "unknown").removeprefix("duolabel "))
            conn.execute(
                text("SELECT set_config('application_name', :note, false)"),
                {"note": f"duolabel {holder_note()}"[:63]},
            )
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:a, :b)"), {"a": self.LOCK_CLASS, "b": key})
                conn.execute(text("RESET application_name"))
