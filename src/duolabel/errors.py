"""The one exception tree of duolabel.

::

    DuolabelError                 anything a user can fix; the CLI prints one line, exit code 2
    ├── ConfigError               duolabel.yaml is missing, malformed or has a bad value
    ├── DataError                 an input file has bad rows (carries file, row, column per problem)
    ├── ProjectError              the project or its store is in a state the command cannot work on
    ├── SetupError                a dependency, model or service is missing; the message has the fix
    ├── LabelerError              a labeler cannot produce probabilities (e.g. too few golden items)
    └── AccessError               the web app refuses a request: no login, wrong role, too many tries

Anything else escaping to the CLI is a bug in duolabel and keeps its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AccessError",
    "ConfigError",
    "DataError",
    "DuolabelError",
    "Interrupted",
    "LabelerError",
    "Problem",
    "ProjectError",
    "SetupError",
    "shown",
]

#: How many characters of a value an error quotes at most (:func:`shown`).
SHOWN_CHARS = 50


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """``value`` as an error quotes it: its ``repr``, cut to ``limit`` characters with "…".

    Whatever a user sent is quoted through this, so a 100 KB label makes a one-line error,
    not a 100 KB one.

    Examples
    --------
    >>> shown("eggs"), shown("x" * 1000, limit=8)
    ("'eggs'", "'xxxxxx…")
    """
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class DuolabelError(Exception):
    """Base of every error a user can act on."""

    exit_code = 2


class Interrupted(DuolabelError):
    """The user pressed Ctrl-C (SIGINT). Raised instead of KeyboardInterrupt by the command
    line, so that it ends with a sentence about what was kept rather than "Aborted!"."""

    exit_code = 130  # the shell's code for a process ended by SIGINT


class ConfigError(DuolabelError):
    """The project file is missing, malformed or holds a bad value."""


class ProjectError(DuolabelError):
    """The project or its store cannot serve the request."""


class SetupError(DuolabelError):
    """A dependency, model or service is missing; the message says how to install it."""


class LabelerError(DuolabelError):
    """A labeler cannot produce probabilities."""


class AccessError(DuolabelError):
    """The web app refuses a request; ``status`` is its HTTP status code.

    401: not logged in; 403: the role or account may not do this; 404: not yours (the
    same answer as for something that does not exist); 429: too many failed logins.
    """

    def __init__(self, message: str, *, status: int = 403) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Problem:
    """One bad cell of an input file: where it is and what is wrong.

    ``unit`` names what ``row`` counts: ``"row"`` in a table, ``"task"`` in a JSON list of
    tasks (a Label Studio export), whose ``column`` is then a field path (``data.text``).
    """

    file: str
    row: int | None
    column: str | None
    message: str
    unit: str = "row"

    def __str__(self) -> str:
        where = [self.file]
        if self.row is not None:
            where.append(f"{self.unit} {self.row}")
        if self.column is not None:
            where.append(f"{'column' if self.unit == 'row' else 'field'} '{self.column}'")
        return f"{', '.join(where)}: {self.message}"


class DataError(DuolabelError):
    """An input file has one or more bad rows; nothing was imported.

    ``problems`` holds every problem found (up to the validation cap);
    ``str()`` is all of them, one per line, with a count of any left unreported.
    """

    def __init__(
        self, problems: list[Problem], *, more: int = 0, outcome: str = "Nothing was imported."
    ) -> None:
        self.problems = list(problems)
        self.more = more
        lines = [str(p) for p in self.problems]
        if more:
            lines.append(f"... and {more} more problem(s) not shown")
        lines.append(outcome)
        super().__init__("\n".join(lines))
