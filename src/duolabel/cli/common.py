"""What every part of the command line shares: the consoles, the project arguments, opening a project."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

out = Console()
err = Console(stderr=True)

# A command that acts on the project alone takes its folder as an argument or as -p, as the
# commands whose argument is a file take it: `duolabel status p` and `duolabel status -p p`.
ProjectArg = Annotated[
    Path | None,
    typer.Argument(
        help="The project folder (holds duolabel.yaml); the current folder when neither it nor -p is given.",
        show_default=False,
    ),
]
ProjectAlso = Annotated[
    Path | None, typer.Option("--project", "-p", help="The project folder, as an option.", show_default=False)
]
ProjectOpt = Annotated[Path, typer.Option("--project", "-p", help="The project folder.")]


def project_folder(argument: Path | None, option: Path | None) -> Path:
    """The project folder given as an argument or as -p (the current folder when neither is).

    Examples
    --------
    >>> project_folder(None, Path("p")), project_folder(Path("p"), None), project_folder(None, None)
    (PosixPath('p'), PosixPath('p'), PosixPath('.'))
    >>> project_folder(Path("p"), Path.cwd() / "p")  # the same folder, written two ways
    PosixPath('p')
    >>> try:
    ...     project_folder(Path("p"), Path("q"))
    ... except typer.BadParameter as given_twice:
    ...     print(given_twice.message)
    two project folders: 'p' and -p 'q'; give one
    """
    if argument is not None and option is not None and argument.resolve() != option.resolve():
        raise typer.BadParameter(f"two project folders: {str(argument)!r} and -p {str(option)!r}; give one")
    return argument or option or Path(".")


def wide_when_not_a_terminal() -> None:
    # Written to a file or a pipe, Rich would fit tables into 80 columns and cut them; there
    # is no terminal to fit, so nothing is cut (COLUMNS still sets a width when given).
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = 10_000


def _open(path: Path | None, option: Path | None = None):
    from duolabel.project import Project

    return Project.open(project_folder(path, option))
