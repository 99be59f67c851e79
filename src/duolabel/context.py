"""What a stage is given: the project folder, its validated configuration and its store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from duolabel.config import ProjectConfig
from duolabel.store import Store

__all__ = ["Context"]


@dataclass(eq=False)
class Context:
    """The small context every stage takes (``Project`` is one, with the library's methods)."""

    path: Path
    config: ProjectConfig
    store: Store

    def resolve(self, relative: str | Path) -> Path:
        """A path from the project file, relative to the project folder."""
        path = Path(relative)
        return path if path.is_absolute() else self.path / path
