"""The project file, ``duolabel.yaml``, parsed into strict pydantic models.

Every setting has a default and one line of help (its ``description``); ``duolabel init``
writes the file from these models, and ``docs/configuration.md`` is generated from them,
so the docs cannot miss a setting.

The names of pluggable parts (``labeler[].backend``, ``calibration.method``,
``routing.policy``, ``aggregation.method``) are checked against their registries, so a
plug-in's name is accepted once it is installed (see :mod:`duolabel.core.registry`). A
plug-in labeler brings its settings class: the ``config`` attribute of its factory, a
subclass of :class:`LabelerSettings`.
"""

from duolabel.config.common import PROJECT_FILE
from duolabel.config.labelers import (
    BACKENDS,
    EXTERNAL_PREFIX,
    EmbeddingLabelerConfig,
    ExternalLabelerConfig,
    FineTuneLabelerConfig,
    LabelerConfig,
    LabelerSettings,
    LlamaLabelerConfig,
    OpenAILabelerConfig,
    SetFitLabelerConfig,
    labeler_settings,
)
from duolabel.config.project import ProjectConfig, load_config, parse_config
from duolabel.config.render import render_config, settings_markdown, settings_reference, task_types_markdown
from duolabel.config.sections import (
    AggregationConfig,
    AuditConfig,
    CalibrationConfig,
    CostsConfig,
    DataSource,
    DistillConfig,
    ExportConfig,
    LabelSpec,
    LearningConfig,
    PrivacyConfig,
    QualityConfig,
    RoutingConfig,
    SyntheticConfig,
    TaskConfig,
    WebConfig,
)

__all__ = [
    "BACKENDS",
    "EXTERNAL_PREFIX",
    "ExportConfig",
    "PROJECT_FILE",
    "AggregationConfig",
    "AuditConfig",
    "CalibrationConfig",
    "CostsConfig",
    "DataSource",
    "DistillConfig",
    "EmbeddingLabelerConfig",
    "ExternalLabelerConfig",
    "FineTuneLabelerConfig",
    "LabelSpec",
    "LabelerConfig",
    "LearningConfig",
    "LabelerSettings",
    "LlamaLabelerConfig",
    "OpenAILabelerConfig",
    "PrivacyConfig",
    "ProjectConfig",
    "QualityConfig",
    "RoutingConfig",
    "SetFitLabelerConfig",
    "SyntheticConfig",
    "TaskConfig",
    "WebConfig",
    "labeler_settings",
    "load_config",
    "parse_config",
    "settings_markdown",
    "settings_reference",
    "task_types_markdown",
    "render_config",
]
