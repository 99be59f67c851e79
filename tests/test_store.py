"""The store on SQLite and a real PostgreSQL server: migrations, WAL, concurrent writers."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from sqlalchemy import func, inspect, select, text

from duolabel.store import Annotator, Item, Run, open_store

TABLES = {
    "items",
    "predictions",
    "annotators",
    "assignments",
    "annotations",
    "final_labels",
    "runs",
    "embeddings",
    "routes",
    "expert_tasks",
    "audits",
    "redactions",
    "synthetic_items",
    "alembic_version",
}


def test_migrations_create_every_table_and_reopen(tmp_path, database_url):
    store = open_store(database_url, tmp_path)
    assert set(inspect(store.engine).get_table_names()) >= TABLES
    with store.write() as session:
        session.add(Annotator(name="ann", password_hash="x"))
    store.close()
    store = open_store(database_url, tmp_path)  # already at head: nothing to do, data kept
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(Annotator)) == 1
        assert session.scalar(text("select version_num from alembic_version")) == "0013"
    store.close()


def test_write_rolls_back_on_error(tmp_path, database_url):
    store = open_store(database_url, tmp_path)
    try:
        with store.write() as session:
            session.add(Run(kind="label"))
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(Run)) == 0
    store.close()


def test_sqlite_is_in_wal_mode(tmp_path):
    store = open_store(None, tmp_path)
    with store.read() as session:
        assert session.scalar(text("PRAGMA journal_mode")) == "wal"
    store.close()


def _writer(folder: str, prefix: str, n: int) -> None:
    store = open_store(None, folder)
    for i in range(n):
        with store.write() as session:
            seq = session.scalar(select(func.coalesce(func.max(Item.seq), 0))) + 1
            session.add(Item(id=f"{prefix}{i}", seq=seq, text="t", fields={}, content_hash="h"))
    store.close()


def test_two_processes_write_one_sqlite_store(tmp_path: Path):
    open_store(None, tmp_path).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), p, 60)) for p in ("a", "b")]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    store = open_store(None, tmp_path)
    with store.read() as session:
        seqs = list(session.scalars(select(Item.seq)))
    assert len(seqs) == 120 and len(set(seqs)) == 120  # no lost or interleaved write
    store.close()


def test_bad_database_url_is_a_clear_error(tmp_path):
    import pytest

    from duolabel.errors import ProjectError

    with pytest.raises(ProjectError, match="database_url"):
        open_store("nosuchdb://x", tmp_path)
    with pytest.raises(ProjectError, match="cannot open the store"):
        open_store("postgresql://nobody@127.0.0.1:1/none", tmp_path)
    # A kind without its driver: not told to install duolabel's PostgreSQL extra (an
    # independent tester was), and the password is not printed.
    from duolabel.errors import SetupError

    with pytest.raises(SetupError) as missing:
        open_store("mysql://me:secret@127.0.0.1/db", tmp_path)
    said = str(missing.value)
    assert "needs the driver" in said and "postgres]" not in said and "secret" not in said
