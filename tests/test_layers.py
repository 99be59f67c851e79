"""The package's shape is checked, not hoped for: import-linter's contracts (``[tool.importlinter]``
in pyproject.toml), no import cycle anywhere in the package, mypy clean over src/, and the public
API (``duolabel.__all__``) exactly as docs/api.md lists it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import grimp
import networkx as nx

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_import_contracts_hold():
    result = subprocess.run(
        [str(BIN / "lint-imports"), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def _module_graph() -> nx.DiGraph:
    # TYPE_CHECKING imports count too: a cycle that only type hints close is still one.
    graph = grimp.build_graph("duolabel", cache_dir=None)
    edges = nx.DiGraph()
    for module in graph.modules:
        if ".migrations" in module:
            continue
        edges.add_node(module)
        for imported in graph.find_modules_directly_imported_by(module):
            # ``from duolabel.x import y`` names the package ``duolabel.x``; a module importing
            # its own parent package's public names is how a package re-exports, not a cycle.
            if not module.startswith(imported + "."):
                edges.add_edge(module, imported)
    return edges


def test_no_import_cycle_anywhere_in_the_package():
    cycles = [sorted(c) for c in nx.strongly_connected_components(_module_graph()) if len(c) > 1]
    assert cycles == [], f"import cycles: {cycles}"


def test_core_imports_nothing_of_duolabel_but_core_and_errors():
    graph = _module_graph()
    bad = [
        (module, imported)
        for module, imported in graph.edges
        if module.startswith("duolabel.core")
        and not imported.startswith("duolabel.core")
        and imported not in ("duolabel", "duolabel.errors")
    ]
    assert bad == []


def test_mypy_is_clean_over_src():
    result = subprocess.run(
        [str(BIN / "mypy"), "--no-incremental"], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_public_api_matches_the_docs():
    import duolabel

    text = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    documented = re.findall(r"^### `([A-Za-z_]+)`", text, flags=re.M)
    assert sorted(documented) == sorted(duolabel.__all__), (
        "duolabel.__all__ changed: document each public name in docs/api.md under '### `name`'"
    )
