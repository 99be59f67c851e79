"""The project store: one database per project, migrated on open.

SQLite (the default, ``duolabel.db`` in the project folder) runs in WAL mode so that the
web server and a labeling job can work on one project at once: readers never block, and
every write transaction starts with ``BEGIN IMMEDIATE`` so two writers queue on the busy
timeout instead of failing with "database is locked" half-way through a transaction.
PostgreSQL (``database_url: postgresql://...``) uses the same tables and migrations.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from duolabel.errors import ProjectError, SetupError
from duolabel.store import tables
from duolabel.store.backends import STORES, LockBusy, StoreBackend
from duolabel.store.tables import *  # noqa: F403  # the tables, as tables.__all__ lists them

# The tables as tables.py lists them (less its own helpers), and the store itself.
__all__ = [name for name in tables.__all__ if name not in ("Base", "utcnow")]
__all__ += ["Store", "open_store", "tables"]

DB_FILE = "duolabel.db"


class Store:
    """A migrated database with short read and write transactions."""

    def __init__(self, engine: Engine, backend: StoreBackend | None = None) -> None:
        self.engine = engine
        self.backend = backend or _backend(engine.dialect.name)
        #: One write transaction holds the whole database (SQLite's BEGIN IMMEDIATE): nothing
        #: read inside it can change before it ends, so callers need no row locks.
        self.single_writer = single_writer = self.backend.single_writer
        # SQLite has one writer at a time. Writers of this process queue on this lock,
        # in turn; without it they poll SQLite's busy handler, which sleeps up to 100 ms
        # between tries, and a busy web server's latency goes to seconds. Other
        # processes still wait on the busy timeout.
        self._write_lock = threading.RLock() if single_writer else None
        writer = engine.execution_options(duolabel_write=True) if single_writer else engine
        self._read = sessionmaker(engine, expire_on_commit=False)
        self._glance = sessionmaker(
            engine.execution_options(**self.backend.autocommit), expire_on_commit=False
        )
        self._held: dict[str, tuple[int, int]] = {}  # lock name -> (thread, depth)
        self._write = sessionmaker(writer, expire_on_commit=False)

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction: committed on success, rolled back on any error."""
        with self._write_lock or nullcontext(), self._write() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session (SQLite: it never takes the write lock)."""
        with self._read() as session, session.begin():
            yield session

    @contextmanager
    def glance(self) -> Iterator[Session]:
        """A session for ONE read statement, outside any transaction (autocommit).

        A single statement always sees one consistent state, so it needs no BEGIN and COMMIT
        of its own; the web app's session check, run on every request, reads this way (issue
        12, the hot path). Use :meth:`read` for anything that reads twice.
        """
        with self._glance() as session:
            yield session

    @contextmanager
    def lock(self, name: str = "pipeline", *, wait: float = 0.0) -> Iterator[None]:
        """Hold the project-wide lock ``name`` across processes (the backend's kind of lock).

        Re-entrant within one thread, so a stage that takes it can call another that does. When
        another process holds it, try again for ``wait`` seconds, then raise a ProjectError that
        names the holder. Only the stages that must not overlap take it; the web app and the
        people's answers never do.
        """
        me = threading.get_ident()
        thread, depth = self._held.get(name, (me, 0))
        if depth and thread == me:
            self._held[name] = (me, depth + 1)
            try:
                yield
            finally:
                self._held[name] = (me, depth)
            return
        deadline = time.monotonic() + wait
        held = ExitStack()
        while True:
            try:
                held.enter_context(self.backend.lock(self.engine, name))
                break
            except LockBusy as busy:
                if time.monotonic() >= deadline:
                    raise ProjectError(
                        f"another duolabel process works on this project ({busy.holder}); "
                        "run again when it has finished"
                    ) from None
                time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
        with held:
            self._held[name] = (me, 1)
            try:
                yield
            finally:
                del self._held[name]

    #: The tables an annotator's requests read: :meth:`analyze` refreshes their statistics.
    QUEUE_TABLES = tuple(
        table.__tablename__
        for table in (Item, Route, Assignment, Annotation, Annotator, FinalLabel)  # noqa: F405
    )

    def analyze(self) -> None:
        """Refresh the query planner's statistics on the queue's tables after a bulk write (a
        routing run, an import) and before serving, so that next-task's plans stay reads of an
        index."""
        self.backend.analyze(self.engine, self.QUEUE_TABLES)

    def close(self) -> None:
        self.engine.dispose()


def _migrations_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(resources.files("duolabel.store") / "migrations"))
    return cfg


def _backend(dialect: str) -> StoreBackend:
    return STORES.get(dialect)() if dialect in STORES else StoreBackend()


def _dialect(url: str) -> str:
    """The dialect name of a URL (``postgresql+psycopg://`` -> ``postgresql``)."""
    return url.split(":", 1)[0].split("+", 1)[0]


def open_store(database_url: str | None, project_dir: str | Path = ".", *, connections: int = 5) -> Store:
    """Open (and create or migrate) the store for a project, keeping up to ``connections``
    database connections open for reuse on a database server
    (:meth:`~duolabel.store.backends.StoreBackend.engine_options`)."""
    url = database_url or f"sqlite:///{(Path(project_dir) / DB_FILE).resolve()}"
    backend = _backend(_dialect(url))
    url = backend.url(url)
    try:
        engine = create_engine(url, **backend.engine_options(connections))
    except NoSuchModuleError as exc:
        raise ProjectError(f"database_url {database_url!r}: unknown database kind ({exc})") from None
    except ArgumentError as exc:
        raise ProjectError(f"database_url {database_url!r}: not a database URL ({exc})") from None
    except ModuleNotFoundError as exc:
        dialect = _dialect(url)
        hint = (
            "pip install 'duolabel[postgres]'"
            if dialect == "postgresql"
            else f"install it; duolabel's stores are {', '.join(sorted(STORES.names()))} (a {dialect!r} "
            "store is untested)"
        )
        raise SetupError(f"database_url {_safe(url)!r} needs the driver {exc.name!r}: {hint}") from None
    backend.setup(engine)
    cfg = _migrations_config()
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    except OperationalError as exc:
        engine.dispose()
        raise ProjectError(f"cannot open the store at {_safe(url)}: {exc.orig}") from None
    return Store(engine, backend)


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
