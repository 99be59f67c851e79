"""What every part of the command line shares: the consoles, the project arguments, opening a project."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

out = Console()
err = Console(stderr=True)

ProjectArg = Annotated[Path, typer.Argument(help="The project folder (holds duolabel.yaml).")]
ProjectOpt = Annotated[Path, typer.Option("--project", "-p", help="The project folder.")]


def wide_when_not_a_terminal() -> None:
    # Written to a file or a pipe, Rich would fit tables into 80 columns and cut them; there
    # is no terminal to fit, so nothing is cut (COLUMNS still sets a width when given).
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = 10_000


def _open(path: Path):
    from duolabel.project import Project

    return Project.open(path)
