"""Writing the commented project file and the settings reference (docs/configuration.md)."""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from duolabel.config.common import Choices
from duolabel.config.labelers import BACKENDS
from duolabel.config.project import ProjectConfig
from duolabel.config.sections import DistillConfig
from duolabel.core.tasks import TASK_TYPES


class _OneLineDumper(yaml.SafeDumper):
    """PyYAML's safe dumper, writing any value on one line.

    A value is written after ``key: `` at its section's indentation, so it must not span
    lines: PyYAML would wrap a long string at ``width`` and write a multi-line one as a
    folded single-quoted scalar, both continued at column 0, which is no longer inside the
    section (the example's instructions broke ``config set`` that way).
    """


def _one_line_str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    # In double quotes every line break is an escape (\n, \r, \N, \L, \P), so the value stays
    # on one line; so is a space at either end that YAML does not count as one (U+00A0, U+3000).
    breaks = any(c in text for c in "\n\r\x85\u2028\u2029")
    style = '"' if breaks or text[:1].isspace() or text[-1:].isspace() else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_OneLineDumper.add_representer(str, _one_line_str)


def _yaml_value(value: Any) -> str:
    """``value`` as YAML on one line (flow style, never wrapped).

    Examples
    --------
    >>> print(_yaml_value("two\\nlines: # not a comment"))
    "two\\nlines: # not a comment"
    >>> print(_yaml_value({"labels": ["a b", "c"], "rate": 0.5}))
    {labels: [a b, c], rate: 0.5}
    """
    text = yaml.dump(
        value, Dumper=_OneLineDumper, default_flow_style=True, allow_unicode=True, width=float("inf")
    )
    # Not str.strip(): it would take a no-break space that is the value itself.
    return text.removesuffix("\n").removesuffix("\n...")


def field_choices(annotation: Any) -> tuple[list[str], bool]:
    """The fixed values a setting's type allows, and whether plug-ins may add names.

    Examples
    --------
    >>> field_choices(Literal["none", "balanced"] | None)
    (['none', 'balanced'], False)
    >>> field_choices(float)
    ([], False)
    """
    if typing.get_origin(annotation) is Literal:
        return [str(v) for v in typing.get_args(annotation)], False
    if typing.get_origin(annotation) is typing.Annotated:
        marked = [m for m in annotation.__metadata__ if isinstance(m, Choices)]
        if marked:
            return list(marked[0].names), True
        return field_choices(annotation.__origin__)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        names: list[str] = []
        plugins = False
        for arg in typing.get_args(annotation):
            found, more = field_choices(arg)
            names += [n for n in found if n not in names]
            plugins = plugins or more
        return names, plugins
    return [], False


def _quoted(names: list[str], *, plugins: bool = False) -> str:
    quoted = [f"'{name}'" for name in names]
    if plugins:
        return f"{', '.join(quoted)} or an installed plug-in's"
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


#: Added to the help of a labeler entry's backend: the backends one can switch to.
SWITCH_HINT = "switch with 'duolabel config set labeler.backend NAME'"


def field_help(name: str, field: FieldInfo) -> str:
    """A setting's one line of help, ending with the values it takes when they are fixed."""
    text = field.description or ""
    if name == "backend":
        return f"{text} Backends: {_quoted(list(BACKENDS), plugins=True)}; {SWITCH_HINT}."
    marked = [m for m in field.metadata if isinstance(m, Choices)]
    names, plugins = (list(marked[0].names), True) if marked else field_choices(field.annotation)
    if len(names) < 2 or all(f"{n}" in text for n in names):
        return text
    return f"{text} One of {_quoted(names, plugins=plugins)}."


def _render_section(model: BaseModel, indent: str) -> list[str]:
    lines: list[str] = []
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        help_text = field_help(name, field)
        help_line = f"{indent}# {help_text}" if help_text else None
        if help_line:
            lines.append(help_line)
        if isinstance(value, list) and len(value) == 1 and name == "labeler":
            value = value[0]  # one labeler is written as a mapping, with its help comments
        if isinstance(value, BaseModel):
            lines.append(f"{indent}{name}:")
            lines.extend(_render_section(value, indent + "  "))
        elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
            lines.append(f"{indent}{name}:")
            for entry in value:
                dumped = entry.model_dump(exclude_defaults=False)
                first = True
                for key, item in dumped.items():
                    prefix = f"{indent}  - " if first else f"{indent}    "
                    lines.append(f"{prefix}{key}: {_yaml_value(item)}")
                    first = False
        else:
            lines.append(f"{indent}{name}: {_yaml_value(value)}")
    return lines


def render_config(config: ProjectConfig) -> str:
    """The project file for ``config``, every setting with its one-line help as a comment."""
    header = [
        "# duolabel project file. Every key is optional except task.labels;",
        "# see docs/configuration.md for the full reference. Change a setting with",
        "# 'duolabel config set KEY VALUE' (validated; an invalid value changes nothing).",
    ]
    llms = [lab.label_name for lab in config.labeler if lab.llm]
    if not config.distill.enabled and llms == [config.distill.teacher]:
        # The teacher was inferred (the only LLM labeler): left empty, it follows the labeler
        # when its backend changes instead of naming one that is gone.
        config = config.model_copy(update={"distill": config.distill.model_copy(update={"teacher": None})})
    return "\n".join(header + _render_section(config, "")) + "\n"


def settings_reference() -> list[tuple[str, str, str]]:
    """Every setting as (dotted key, default, help), for the docs."""
    rows: list[tuple[str, str, str]] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            key = f"{prefix}{name}"
            if name == "labeler" and model is ProjectConfig:
                rows.append((key, "", field.description or ""))
                for backend, config in BACKENDS.items():
                    walk(config, f"labeler ({backend}).")
                continue
            if name == "student" and model is DistillConfig:
                # a labeler entry: its keys are those of `labeler` above
                rows.append(
                    (key, _yaml_value({"backend": "embedding", "name": "distilled"}), field.description or "")
                )
                continue
            annotation = field.annotation
            args = getattr(annotation, "__args__", ())
            nested = next(
                (a for a in [annotation, *args] if isinstance(a, type) and issubclass(a, BaseModel)),
                None,
            )
            default = (
                "(required)"
                if field.is_required()
                else _yaml_value(
                    field.default.model_dump() if isinstance(field.default, BaseModel) else field.default
                )
            )
            if nested is not None and getattr(annotation, "__origin__", None) is not list:
                rows.append((key, "", field.description or ""))
                walk(nested, key + ".")
            else:
                rows.append((key, default, field_help(name, field)))
                if nested is not None:
                    walk(nested, key + "[].")

    walk(ProjectConfig, "")
    return rows


def settings_markdown() -> str:
    """docs/configuration.md: every setting with its default and help."""
    lines = [
        "# Configuration reference",
        "",
        "Generated from `duolabel/config/` by `python tools/gen_docs.py`; a test fails when it",
        "is out of date. Every key of `duolabel.yaml` is listed with its default. Unknown keys",
        "are errors that name the key.",
        "",
        "| key | default | what it does |",
        "|---|---|---|",
    ]
    for key, default, help_text in settings_reference():
        shown = f"`{default}`" if default else ""
        escaped = help_text.replace("|", "\\|")
        lines.append(f"| `{key}` | {shown} | {escaped} |")
    return "\n".join(lines + ["", *task_types_markdown()]) + "\n"


def task_types_markdown() -> list[str]:
    """The docs' "Task types" section: each built-in ``task.type`` with what it changes.

    Examples
    --------
    >>> [line.split(" | ")[0] for line in task_types_markdown() if line.startswith("| `")][1:]
    ['| `multi_label`', '| `ordinal`', '| `pairwise`', '| `single_label`', '| `spans`']
    """
    lines = [
        "## Task types",
        "",
        "`task.type` picks what differs between kinds of labeling (`duolabel/core/tasks.py`): how an",
        "answer is checked on import and in the web app, the agreement figures on the dashboard, the",
        "aggregator used while `aggregation.method` is empty, the answer widget and the extra export",
        "columns. A plug-in adds one through the `duolabel.task_types` entry point group.",
        "",
        "| `task.type` | what it is | default `aggregation.method` | widget | extra export columns |",
        "|---|---|---|---|---|",
    ]
    for name in TASK_TYPES.names():
        kind = TASK_TYPES.get(name)
        if not kind.__module__.startswith("duolabel."):
            continue  # an installed plug-in documents itself
        summary = " ".join((kind.__doc__ or "").strip().split("\n\n")[0].split())
        # One label named <label>: a column per label reads as is_<label>.
        columns = ", ".join(f"`{c}`" for c in kind().export_columns("<label>", ["<label>"])) or "none"
        lines.append(f"| `{name}` | {summary} | `{kind.default_aggregator}` | `{kind.widget}` | {columns} |")
    return lines
