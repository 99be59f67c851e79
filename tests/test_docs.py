"""The docs match the code: generated references are current, the README starts right."""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))

import gen_docs  # noqa: E402


def test_generated_docs_are_current():
    stale = [
        str(path.relative_to(REPO))
        for path, text in gen_docs.generated().items()
        if not path.exists() or path.read_text(encoding="utf-8") != text
    ]
    assert stale == [], f"run 'python tools/gen_docs.py' to refresh {stale}"


def test_readme_opens_with_the_two_setup_commands():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", text, flags=re.S)
    first = [line.split("#")[0].strip() for line in blocks[0].splitlines()]
    first = [line for line in first if line]
    assert first == ["make example", "make test"]
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert [line for line in ci.splitlines() if line.startswith("make")] == ["make test"]


def test_every_setting_is_documented():
    from duolabel.config import settings_reference

    text = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert [key for key, _, _ in settings_reference() if f"`{key}`" not in text] == []


def test_docstring_examples_run():
    """Every ``Examples`` section in the package runs and prints what it shows."""
    import doctest
    import importlib
    import pkgutil

    import duolabel

    failed: list[str] = []
    for info in pkgutil.walk_packages(duolabel.__path__, "duolabel."):
        if ".migrations" in info.name:
            continue  # Alembic scripts run only inside Alembic
        module = importlib.import_module(info.name)
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        if result.failed:
            failed.append(f"{info.name}: {result.failed} of {result.attempted}")
    assert not failed, failed
