from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.pg import INSTALL_HINT, PostgresServer, create_database

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
EXAMPLE = REPO / "examples" / "support_tickets"
_db_counter = itertools.count()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # In CI nothing may be skipped for a missing server, browser or model.
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
        if skipped:
            reporter.write_line(f"CI: {skipped} test(s) were skipped; failing the run", red=True)
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def pg_base_url() -> Iterator[str]:
    if url := os.environ.get("DUOLABEL_TEST_POSTGRES_URL"):
        yield url.rstrip("/")
        return
    server = PostgresServer()
    if not server.available:
        pytest.skip(INSTALL_HINT)
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_base_url: str) -> str:
    """A fresh, empty PostgreSQL database for one test."""
    return create_database(pg_base_url, f"duolabel_test_{os.getpid()}_{next(_db_counter)}")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """Run a test on both stores: None means the default SQLite file."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("pg_url")


@pytest.fixture(scope="module")
def llm_server():
    """The real llama.cpp OpenAI-compatible server on loopback, serving the bundled GGUF."""
    from tests.llm_server import LlamaServer, gguf_path, llm_missing

    if why := llm_missing():
        pytest.skip(why)
    server = LlamaServer(gguf_path()).start()
    try:
        yield server
    finally:
        server.close()


LABELS = ["billing", "shipping", "account", "product", "technical"]


def write_project(
    folder: Path, *, labels: list[str] = LABELS, database_url: str | None = None, **settings: object
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config: dict[str, object] = {
        "task": {"labels": [{"name": name, "description": f"about {name}"} for name in labels]},
        **settings,
    }
    if database_url:
        config["database_url"] = database_url
    (folder / "duolabel.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return folder


@pytest.fixture
def project(tmp_path: Path, database_url: str | None):
    from duolabel import Project

    with Project.open(write_project(tmp_path / "proj", database_url=database_url)) as proj:
        yield proj


@pytest.fixture
def example_copy(tmp_path: Path) -> Path:
    """A private copy of the bundled example project."""
    target = tmp_path / "support_tickets"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("duolabel.db*", "out"))
    return target


def shared_data(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is missing: the shared data sets sit beside the repository")
    return path
