"""The whole project file: :class:`ProjectConfig`, and reading it with errors that name the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import ErrorDetails, PydanticCustomError

from duolabel.config.common import PROJECT_FILE, _Strict
from duolabel.config.labelers import EmbeddingLabelerConfig, LabelerConfig, labeler_settings
from duolabel.config.sections import (
    AggregationConfig,
    AuditConfig,
    CalibrationConfig,
    CostsConfig,
    DataSource,
    DistillConfig,
    ExportConfig,
    LearningConfig,
    PrivacyConfig,
    QualityConfig,
    RoutingConfig,
    TaskConfig,
    WebConfig,
)
from duolabel.errors import ConfigError


class ProjectConfig(_Strict):
    task: TaskConfig = Field(description="What is labelled and with which labels.")
    data: list[DataSource] = Field([], description="Files `duolabel run` imports (optional).")
    labeler: list[LabelerConfig] = Field(
        [EmbeddingLabelerConfig()],
        description="The labeler, or a list of labelers whose calibrated outputs are averaged.",
    )
    calibration: CalibrationConfig = Field(CalibrationConfig(), description="Confidence calibration.")
    routing: RoutingConfig = Field(RoutingConfig(), description="Which items people label.")
    quality: QualityConfig = Field(QualityConfig(), description="Quality control for people.")
    costs: CostsConfig = Field(CostsConfig(), description="Prices for the cost ledger.")
    audit: AuditConfig = Field(AuditConfig(), description="Expert audits of shipped labels.")
    aggregation: AggregationConfig = Field(
        AggregationConfig(), description="How people's answers (and the model) become final labels."
    )
    learning: LearningConfig = Field(
        LearningConfig(), description="Active learning: which items to label next, and when to stop."
    )
    web: WebConfig = Field(WebConfig(), description="The annotation web app: logins and invitations.")
    export: ExportConfig = Field(ExportConfig(), description="Where final labels are written.")
    distill: DistillConfig = Field(
        DistillConfig(),
        description="Distillation: a small model learns from an LLM labeler's confident labels and "
        "replaces it once it is as accurate on the golden items.",
    )
    privacy: PrivacyConfig = Field(
        PrivacyConfig(), description="Personal data kept on this machine when a labeler is remote."
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the store; empty means duolabel.db in the project folder.",
    )

    @field_validator("labeler", mode="before")
    @classmethod
    def _labeler_list(cls, value: Any) -> Any:
        # One labeler may be written as a mapping; `backend` defaults to embedding.
        entries = [value] if isinstance(value, dict) else value
        if isinstance(entries, list):
            return [{"backend": "embedding", **e} if isinstance(e, dict) else e for e in entries]
        return value

    @field_validator("labeler")
    @classmethod
    def _unique_names(cls, labelers: list[Any]) -> list[Any]:
        names = [lab.label_name for lab in labelers]
        if not labelers:
            raise ValueError("at least one labeler")
        if len(set(names)) != len(names) or "ensemble" in names:
            raise ValueError(f"labeler names must be unique and not 'ensemble' (got {names}); set name:")
        return labelers

    @field_validator("distill")
    @classmethod
    def _distill_names(cls, distill: DistillConfig, info: ValidationInfo) -> DistillConfig:
        labelers = {lab.label_name: lab for lab in info.data.get("labeler", [])}
        llms = [name for name, lab in labelers.items() if lab.llm]
        teacher = distill.teacher or (llms[0] if len(llms) == 1 else None)
        if distill.enabled or distill.teacher:
            problem = _distill_problem(distill, teacher, labelers, llms)
            if problem:
                raise PydanticCustomError(
                    "bad_reference", "{key}: {problem}", {"key": problem[0], "problem": problem[1]}
                )
        return distill.model_copy(update={"teacher": teacher})


def _distill_problem(
    distill: DistillConfig, teacher: str | None, labelers: dict[str, Any], llms: list[str]
) -> tuple[str, str] | None:
    """What is wrong with the distill section's names, as (key, message), or None."""
    named = ", ".join(map(repr, llms)) or "none"
    if teacher is None:
        return "teacher", f"name the LLM labeler that teaches (the project's LLM labelers: {named})"
    if teacher not in labelers:
        return "teacher", f"{teacher!r} is not a labeler of this project (its LLM labelers: {named})"
    if not labelers[teacher].llm:
        return "teacher", f"{teacher!r} is not an LLM labeler; name one of the LLM labelers: {named}"
    student = distill.student
    if not student.trainable:
        return (
            "student.backend",
            f"{student.backend!r} does not train; use a trainable backend such as 'embedding'",
        )
    if student.label_name in labelers or student.label_name == "ensemble":
        return (
            "student.name",
            f"{student.label_name!r} is taken by a labeler; give the student a name of its own",
        )
    return None


def _is_tag(loc: tuple[Any, ...], i: int) -> bool:
    """Whether ``loc[i]`` is a labeler entry's union tag (its backend): ``labeler.0.<tag>``
    or ``distill.student.<tag>``."""
    return i == 2 and (
        loc[0] == "labeler" and isinstance(loc[1], int) or tuple(loc[:2]) == ("distill", "student")
    )


def _clean(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """The location without the union tags (``labeler.0.llama.n_ctx`` -> ``labeler.0.n_ctx``)."""
    return tuple(p for i, p in enumerate(loc) if not _is_tag(loc, i))


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in _clean(loc)) or "(top level)"


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    for candidate in [annotation, *getattr(annotation, "__args__", ())]:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names allowed next to the unknown key at ``loc``."""
    current: Any = model
    for i, part in enumerate(loc[:-1]):
        if _is_tag(loc, i):
            current = labeler_settings(part)
            if current is None:
                return []
            continue
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part)
        if field is None:
            return []
        current = _nested_model(field.annotation)
        if current is None:
            # a list of a tagged union: the tag that follows in loc picks the model
            current = model
    return list(current.model_fields)


def _format_error(err: ErrorDetails, source: str) -> str:
    loc = tuple(err["loc"])
    if err["type"] == "extra_forbidden":
        allowed = ", ".join(_allowed_keys(ProjectConfig, loc))
        return f"{source}: unknown key '{_loc(loc)}'; allowed here: {allowed}"
    if err["type"] == "union_tag_invalid":
        got, allowed = err["ctx"].get("tag"), err["ctx"]["expected_tags"]
        return f"{source}: key '{_loc(loc)}.backend': got {got!r}, expected one of {allowed}"
    if err["type"] == "missing":
        return f"{source}: missing key '{_loc(loc)}'"
    if err["type"] == "bad_reference":
        return f"{source}: key '{_loc(loc)}.{err['ctx']['key']}': {err['ctx']['problem']}"
    got = err.get("input")
    msg = err["msg"]
    for prefix in ("Value error, ", "Input should be ", "List should have "):
        msg = msg.removeprefix(prefix)
    msg = msg.removesuffix(" after validation")
    return f"{source}: key '{_loc(loc)}': got {got!r}, expected {msg[0].lower() + msg[1:]}"


def parse_config(data: Any, *, source: str = PROJECT_FILE) -> ProjectConfig:
    """Validate a mapping as a project configuration; errors name the key and value."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of settings, got {type(data).__name__}")
    try:
        return ProjectConfig.model_validate(data)
    except ValidationError as exc:
        lines = [_format_error(e, source) for e in exc.errors()]
        raise ConfigError("\n".join(lines)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last
    one silently, so a second ``routing:`` would undo the first without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(
                    f"{self.name}, line {line}: key {key!r} is given twice (first on line {seen[key]}); "
                    "keep one of them"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_config(project_dir: str | Path) -> ProjectConfig:
    """Read and validate ``duolabel.yaml`` in ``project_dir``."""
    path, data = read_project_file(project_dir)
    return parse_config(data, source=str(path))


def read_project_file(project_dir: str | Path) -> tuple[Path, Any]:
    """The path of ``duolabel.yaml`` in ``project_dir`` and its YAML data, not validated."""
    path = Path(project_dir) / PROJECT_FILE
    if not path.is_file():
        raise ConfigError(f"{path}: no project file here; create one with 'duolabel init {project_dir}'")
    try:
        loader = _UniqueKeyLoader(path.read_text(encoding="utf-8"))
        loader.name = str(path)
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}{where}: not valid YAML: {problem}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})") from None
    return path, data


# ---------------------------------------------------------------------------
# Writing the commented project file and the settings reference
