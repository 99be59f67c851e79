"""How duolabel writes the files a user names (exports, reports, suggestion and review files).

Two rules every such file follows:

- It is written next to its destination and moved into place at the end
  (:func:`atomic_write`), so a crash never leaves a half-written file behind. A symbolic
  link is written through: its target is the file replaced, and the link stays. A destination
  that exists and is not a regular file (a device such as ``/dev/stdout``, a named pipe, a
  folder) is refused before anything is written: moving a file over it would replace the
  device or pipe itself.
- A CSV cell that a spreadsheet would run as a formula gets a leading apostrophe
  (:func:`defuse_formula`); :func:`undefused` reads such a cell back as the value it was.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from duolabel.errors import DataError, Problem

__all__ = ["FORMULA_STARTS", "atomic_write", "defuse_formula", "undefused", "writable_file"]

#: First characters that make a spreadsheet run a cell as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def defuse_formula(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula (``=HYPERLINK(...)``, ``@SUM``,
    ``-2+3``) gets a leading apostrophe, OWASP's advice against CSV injection; anything else
    is returned as it is. Every CSV duolabel writes passes its cells through this; JSONL and
    Parquet keep the exact values.

    Examples
    --------
    >>> defuse_formula("=1+2"), defuse_formula("plain"), defuse_formula(3)
    ("'=1+2", 'plain', 3)
    """
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def undefused(value: str) -> str:
    """The value :func:`defuse_formula` was given for a cell it may have written: without the
    leading apostrophe when one stands before a formula character; anything else as it is.

    Examples
    --------
    >>> undefused("'=1+2"), undefused("'plain"), undefused("-3")
    ('=1+2', "'plain", '-3')
    """
    return value[1:] if value.startswith("'") and value[1:].startswith(FORMULA_STARTS) else value


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "directory"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISFIFO, "named pipe"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return name
    return "special file"


def writable_file(path: str | Path, *, outcome: str) -> Path:
    """The regular file a write to ``path`` replaces: ``path`` itself, or the file a symbolic
    link at ``path`` points to (the whole chain followed), which may not exist yet.

    A destination that exists and is not a regular file is a :class:`~duolabel.errors.DataError`
    naming ``path`` and what it is, ending with ``outcome``.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode  # follows symbolic links: what a write would reach
    except FileNotFoundError:
        mode = None  # a new file, or a link to one
    if mode is not None and not stat.S_ISREG(mode):
        through = " (through a symbolic link)" if path.is_symlink() else ""
        raise DataError(
            [Problem(str(path), None, None, f"is a {_kind(mode)}{through}, not a regular file")],
            outcome=outcome,
        )
    return path.resolve() if path.is_symlink() else path


@contextmanager
def atomic_write(path: str | Path, *, outcome: str) -> Iterator[Path]:
    """A temporary path (``NAME.part``) beside the file a write to ``path`` replaces
    (:func:`writable_file`); what the block writes there replaces that file when it ends, and
    is removed when it raises. A replaced file's permissions carry over.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
    >>> with atomic_write(target, outcome="Nothing was written.") as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text()
    'done'
    """
    target = writable_file(path, outcome=outcome)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    try:
        yield tmp
        if target.exists():
            os.chmod(tmp, stat.S_IMODE(target.stat().st_mode))
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
