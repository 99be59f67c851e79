"""``duolabel config set``: change settings of ``duolabel.yaml`` by dotted key, validated.

The file is read as YAML (so a file that no longer validates, say after a backend was
changed by hand, can still be mended), the values are put in, the whole is validated with
the project file's models, and only then is the file rewritten, commented, by
:func:`~duolabel.config.render.render_config`. Comments of the user's own are not carried into
the new file: when the old one held any, it is kept beside it as ``duolabel.yaml.bak``. An
invalid value changes nothing, and neither does a rewritten file that would not read back as
the settings given.

A labeler entry's ``backend`` is special: a new backend starts from its own defaults, so
the old backend's keys are dropped (its ``name`` and ``weight`` are kept).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from duolabel.config.project import ProjectConfig, parse_config, read_project_file, read_project_text
from duolabel.config.render import render_config
from duolabel.errors import ConfigError

__all__ = ["Edit", "own_comments", "parse_value", "set_values"]

#: What a labeler entry keeps when its backend changes (the other keys are the backend's).
_KEPT_ON_SWITCH = {"name": None, "weight": 1.0}


def parse_value(key: str, text: str) -> Any:
    """``text`` read as a YAML value: ``0.95`` is a number, ``[a, b]`` a list, ``null`` empty.

    Examples
    --------
    >>> parse_value("routing.target_accuracy", "0.95"), parse_value("labeler.backend", "llama")
    (0.95, 'llama')
    """
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{key}: {text!r} is not a YAML value ({problem}); quote it") from None


def _entries(parent: dict[str, Any], name: str) -> list[Any]:
    """The list under ``name``, as a list: one labeler may be written as a mapping."""
    value = parent.get(name)
    if name == "labeler" and value is None:
        value = [{"backend": "embedding"}]
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        value = []
    parent[name] = value
    return value


def _is_entry_list(name: str) -> bool:
    return name in ("labeler", "data")


def _step(node: Any, part: str, key: str, parts: list[str], i: int) -> tuple[Any, int]:
    """The child of ``node`` named by ``parts[i]`` (made when missing), and the next index."""
    if _is_entry_list(part) and isinstance(node, dict):
        entries = _entries(node, part)
        following = parts[i + 1] if i + 1 < len(parts) else None
        if following is not None and following.isdigit():
            index = int(following)
            if index >= len(entries):
                raise ConfigError(f"{key}: {part} has {len(entries)} entries (numbered from 0)")
            return entries[index], i + 2
        if len(entries) != 1:
            raise ConfigError(
                f"{key}: {part} has {len(entries)} entries; name one by its number, "
                f"e.g. {part}.0.{'.'.join(parts[i + 1 :])}"
            )
        return entries[0], i + 1
    if not isinstance(node, dict):
        raise ConfigError(f"{key}: {'.'.join(parts[:i])} is not a section with keys")
    child = node.get(part)
    if child is None:
        child = node[part] = {}
    return child, i + 1


def _put(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ConfigError(f"{key!r}: not a dotted key such as routing.target_accuracy")
    whole_entry = len(parts) >= 2 and parts[-1].isdigit() and _is_entry_list(parts[-2])
    node: Any = data
    i = 0
    while i < len(parts) - (2 if whole_entry else 1):
        node, i = _step(node, parts[i], key, parts, i)
    if whole_entry:  # labeler.1 {backend: llama}: the whole entry, checked with the rest
        if not isinstance(node, dict):
            raise ConfigError(f"{key}: {'.'.join(parts[:-2])} is not a section with keys")
        if not isinstance(value, dict):
            raise ConfigError(
                f"{key}: an entry of {parts[-2]} is a section such as {{backend: llama}}, got {value!r}"
            )
        entries, index = _entries(node, parts[-2]), int(parts[-1])
        if index >= len(entries):
            raise ConfigError(f"{key}: {parts[-2]} has {len(entries)} entries (numbered from 0)")
        entries[index] = value
        return
    last = parts[-1]
    if not isinstance(node, dict):
        raise ConfigError(f"{key}: {'.'.join(parts[:-1])} is not a section with keys")
    if last == "backend" and node.get("backend", "embedding") != value:
        old = node.get("name") or node.get("backend", "embedding")
        kept = {k: node[k] for k, default in _KEPT_ON_SWITCH.items() if node.get(k, default) != default}
        node.clear()
        node.update(kept)
        distill = data.get("distill")
        if isinstance(distill, dict) and distill.get("teacher") == old and not distill.get("enabled"):
            distill["teacher"] = None  # it named the old labeler only because it was the LLM one
    node[last] = value


@dataclass(frozen=True)
class Edit:
    """What :func:`set_values` wrote: the new settings, and where the file it replaced was kept
    (``None`` unless that held comments of the user's own)."""

    config: ProjectConfig
    backup: Path | None = None


def set_values(project_dir: str | Path, pairs: Sequence[tuple[str, str]]) -> Edit:
    """Set each dotted ``key`` to its ``value`` (YAML text) and rewrite ``duolabel.yaml``.

    Keys follow the file: ``routing.target_accuracy``, ``labeler.backend`` (``labeler.1.model``
    when there are several labelers). The new settings are validated together; when any is
    invalid the file is left as it was and the error names the key.

    Examples
    --------
    >>> import duolabel, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> duolabel.init_project(folder, labels=["spam", "ham"]).close()
    >>> set_values(folder, [("routing.target_accuracy", "0.95")]).config.routing.target_accuracy
    0.95
    """
    path, data = read_project_file(project_dir)
    if not isinstance(data, dict):
        data = {}
    written_by_duolabel = _rendered_comments(copy.deepcopy(data), str(path))
    for key, text in pairs:
        _put(data, key, parse_value(key, text))
    try:
        config = parse_config(data, source=str(path))
    except ConfigError as exc:
        switched = [key for key, _ in pairs if key.endswith("backend")]
        if switched and "missing key" in str(exc):
            # A backend with a required key (openai's model) is switched to in one command.
            raise ConfigError(
                f"{exc}\nnothing was changed; give the new backend's required keys in the same "
                f"command: duolabel config set {switched[0]} NAME KEY VALUE"
            ) from None
        raise
    text = render_config(config)
    _check_reads_back(text, config, path)
    old = path.read_text(encoding="utf-8")
    backup = None
    if own_comments(old) - own_comments(text) - written_by_duolabel:
        # The file is rendered anew with duolabel's comments; the user's own are kept here
        # (duolabel's comments on keys the change dropped, a switched backend's, are not theirs).
        backup = path.with_name(path.name + ".bak")
        backup.write_text(old, encoding="utf-8")
    # Written beside and moved over it: a crash never leaves half a project file.
    temporary = path.with_name(path.name + ".new")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
    return Edit(config, backup)


def _rendered_comments(data: dict[str, Any], source: str) -> set[str]:
    """The comments duolabel itself writes in the project file for ``data`` (none when it is invalid)."""
    try:
        return own_comments(render_config(parse_config(data, source=source)))
    except ConfigError:
        return set()


def own_comments(text: str) -> set[str]:
    """The comments of a project file's text, each stripped: what a rewrite would lose when
    the new text does not hold them too.

    Examples
    --------
    >>> sorted(own_comments("# ask Bob first\\ntask:\\n  overlap: 2  # two people\\n  url: a#b\\n"))
    ['# ask Bob first', '# two people']
    """
    found = set()
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            found.add(stripped)
        elif " #" in stripped:  # a comment after a value (a '#' inside a word is not one)
            found.add(stripped[stripped.index(" #") + 1 :])
    return found


def _check_reads_back(text: str, config: ProjectConfig, path: Path) -> None:
    """``ConfigError`` unless ``text`` reads back as ``config``: a value the renderer cannot
    write faithfully must not replace a working project file."""
    problem = ""
    try:
        written = parse_config(read_project_text(text, source=str(path)), source=str(path))
    except ConfigError as exc:
        problem = str(exc).splitlines()[0]
    else:
        key = _first_difference(config.model_dump(), written.model_dump())
        if key is None:
            return
        problem = f"{key} would read back differently"
    raise ConfigError(
        f"{path}: the rewritten file would not read back as the settings given ({problem}); "
        "nothing was changed. This is a bug in duolabel: please report it, and edit the file "
        "by hand meanwhile"
    )


def _first_difference(wanted: Any, got: Any, key: str = "") -> str | None:
    """The dotted key of the first value that differs between two dumped configs, or ``None``.

    Examples
    --------
    >>> _first_difference({"task": {"labels": [1, 2]}}, {"task": {"labels": [1, 3]}})
    'task.labels.1'
    """
    if isinstance(wanted, dict) and isinstance(got, dict) and wanted.keys() == got.keys():
        found = (_first_difference(wanted[k], got[k], f"{key}.{k}".lstrip(".")) for k in wanted)
        return next((k for k in found if k is not None), None)
    if isinstance(wanted, list) and isinstance(got, list) and len(wanted) == len(got):
        found = (
            _first_difference(w, g, f"{key}.{i}".lstrip("."))
            for i, (w, g) in enumerate(zip(wanted, got, strict=True))
        )
        return next((k for k in found if k is not None), None)
    same = wanted == got or (wanted != wanted and got != got)  # NaN is itself here
    return None if same else key or "the file"
