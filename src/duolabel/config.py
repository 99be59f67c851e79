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

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    SerializeAsAny,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from duolabel.core.aggregation import AGGREGATORS
from duolabel.core.aggregation import BUILT_IN as BUILT_IN_AGGREGATORS
from duolabel.core.calibration import CALIBRATORS
from duolabel.core.policies import POLICIES
from duolabel.core.registry import LABELERS, Registry
from duolabel.core.strategies import STRATEGIES
from duolabel.core.tasks import TASK_TYPES
from duolabel.errors import ConfigError

__all__ = [
    "BACKENDS",
    "EXTERNAL_PREFIX",
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
    "ProjectConfig",
    "QualityConfig",
    "RoutingConfig",
    "SetFitLabelerConfig",
    "TaskConfig",
    "WebConfig",
    "load_config",
    "render_config",
]

PROJECT_FILE = "duolabel.yaml"

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def _choices(names: list[str]) -> str:
    quoted = [repr(name) for name in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def _registered(registry: Registry[Any], shown_first: tuple[str, ...]) -> AfterValidator:
    """Accept a name in ``registry`` (or in ``shown_first``, the built-ins' order in errors)."""

    def check(name: str) -> str:
        # Built-ins are registered when their core module loads; only an unknown name reads
        # the entry points (and so imports the installed plug-ins).
        if name in shown_first or name in registry:
            return name
        names = [*shown_first, *(n for n in registry.names() if n not in shown_first)]
        expected = {"expected": _choices(names)}
        raise PydanticCustomError("literal_error", "Input should be {expected}", expected)

    return AfterValidator(check)


#: ``calibration.method``: a registered calibrator, or auto.
CalibratorName = Annotated[
    str, _registered(CALIBRATORS, ("temperature", "vector", "isotonic", "histogram", "auto", "none"))
]
#: ``routing.policy``: a registered routing policy.
PolicyName = Annotated[str, _registered(POLICIES, ("threshold", "dynamic", "meta"))]
#: ``aggregation.method``: a registered aggregator.
AggregatorName = Annotated[str, _registered(AGGREGATORS, BUILT_IN_AGGREGATORS)]
#: ``learning.strategy``: a registered active-learning strategy.
StrategyName = Annotated[str, _registered(STRATEGIES, ("random", "least_confidence", "margin", "entropy"))]


class LabelSpec(_Strict):
    name: str = Field(description="The label as it is stored and exported.", min_length=1)
    description: str = Field("", description="One line shown to annotators and used in prompts.")


class TaskConfig(_Strict):
    type: str = Field(
        "single_label",
        description="Task type: single_label (one label per item) or ordinal (the labels are a "
        "scale, low to high in the order listed: ordinal agreement, median aggregation, a rank "
        "column in exports); a plug-in may register more.",
    )
    labels: list[LabelSpec] = Field(
        description="The labels, in display order, each with a one-line description.", min_length=2
    )
    instructions: str = Field("", description="Instructions shown to annotators and to LLM labelers.")
    text_fields: list[str] = Field(
        ["text"],
        description="Input columns that make up an item's text, joined in this order.",
        min_length=1,
    )
    id_field: str = Field("id", description="Input column holding the item's stable id.")

    @field_validator("type")
    @classmethod
    def _known_type(cls, name: str) -> str:
        if name not in TASK_TYPES:
            raise ValueError(f"one of {', '.join(map(repr, TASK_TYPES.names()))}")
        return name

    @field_validator("labels")
    @classmethod
    def _unique_labels(cls, labels: list[LabelSpec]) -> list[LabelSpec]:
        seen: set[str] = set()
        for spec in labels:
            if spec.name in seen:
                raise ValueError(f"label '{spec.name}' is listed twice")
            seen.add(spec.name)
        return labels

    @property
    def label_names(self) -> list[str]:
        return [spec.name for spec in self.labels]


class DataSource(_Strict):
    path: str = Field(description="CSV, JSONL or Parquet file, relative to the project folder.")
    role: Literal["regular", "golden", "control"] = Field(
        "regular",
        description="golden: expert-labelled items used to train and calibrate; control: known "
        "answers hidden among people's work, for quality control only.",
    )
    gold_column: str | None = Field(
        None, description="Column holding the known label (required for golden and control files)."
    )
    columns: dict[str, str] = Field(
        {}, description="Rename input columns: {column in the file: field in the project}."
    )
    batch: str | None = Field(None, description="Batch name for these items (default: file name).")

    @model_validator(mode="after")
    def _golden_needs_gold(self) -> DataSource:
        if self.role in ("golden", "control") and not self.gold_column:
            raise ValueError(f"data source '{self.path}' has role {self.role} but no gold_column")
        return self


class LabelerSettings(_Strict):
    """What every ``labeler`` entry has; a plug-in labeler's settings class subclasses it.

    Examples
    --------
    >>> class ToySettings(LabelerSettings):
    ...     keyword: str = Field("refund", description="Items containing this are billing.")
    >>> ToySettings(backend="toy").label_name
    'toy'
    """

    #: Whether the labeler learns from labelled items (it can be a distillation student).
    trainable: ClassVar[bool] = False
    #: Whether it prompts a language model (it can be a distillation teacher).
    llm: ClassVar[bool] = False

    name: str | None = Field(
        None, description="Name of this labeler in the store, the CLI and ensembles (default: the backend)."
    )
    weight: float = Field(1.0, gt=0, description="Weight of this labeler in the ensemble average.")
    # after name and weight, where the built-in backends' files have always listed it
    backend: str = Field(description="Which labeler labels the items.")

    @property
    def label_name(self) -> str:
        return self.name or self.backend


class EmbeddingLabelerConfig(LabelerSettings):
    trainable: ClassVar[bool] = True
    backend: Literal["embedding"] = Field("embedding", description="Which labeler labels the items.")
    model: str | None = Field(
        None,
        description="Sentence-transformers model folder; empty means the bundled all-MiniLM-L6-v2.",
    )
    head: Literal["logistic_regression"] = Field(
        "logistic_regression", description="scikit-learn head trained on the embeddings."
    )
    regularization: Annotated[float, Field(gt=0)] | Literal["cv"] = Field(
        1.0,
        description="Inverse regularization strength C of the head; 'cv' chooses C by "
        "stratified cross-validation (log loss) on the training labels.",
    )
    class_weight: Literal["none", "balanced"] = Field(
        "none", description="'balanced' weights each label inversely to its share of the training labels."
    )
    self_training: bool = Field(
        False,
        description="Add pseudo-labels for unlabelled items whose nearest labelled neighbours agree "
        "(HAST-like) and refit.",
    )
    self_training_k: int = Field(
        5, ge=1, le=100, description="Labelled neighbours that vote on a pseudo-label."
    )
    self_training_threshold: float = Field(
        0.5, ge=0, lt=1, description="Share of the neighbours that must agree (above it) on a pseudo-label."
    )
    self_training_weight: float = Field(
        0.5, gt=0, le=1, description="Sample weight of a pseudo-label (a person's label weighs 1)."
    )
    self_training_max: float = Field(
        1.0, ge=0, description="Most pseudo-labels, as a multiple of the labelled items."
    )
    batch_size: int = Field(64, ge=1, le=4096, description="Texts encoded per batch.")
    cv_folds: int = Field(
        5, ge=2, le=20, description="Folds for out-of-fold probabilities on the training items."
    )


class _TunedLabelerSettings(LabelerSettings):
    """What the labelers that fine-tune the encoder share."""

    trainable: ClassVar[bool] = True

    model: str | None = Field(
        None,
        description="Sentence-transformers model folder to fine-tune; empty means the bundled "
        "all-MiniLM-L6-v2.",
    )
    max_length: int = Field(128, ge=8, le=512, description="Tokens kept of each text.")
    batch_size: int = Field(16, ge=1, le=512, description="Training examples per optimisation step.")
    class_weight: Literal["none", "balanced"] = Field(
        "none", description="'balanced' weighs each label inversely to its training count."
    )
    cross_fit_max_items: int = Field(
        200,
        ge=0,
        description="Up to this many training items, every one gets a cross-fitted probability for "
        "calibration (cv_folds extra trainings); above it, a held-out calibration fold only.",
    )
    cv_folds: int = Field(5, ge=2, le=20, description="Folds for cross-fitting small training sets.")
    calibration_fraction: float = Field(
        0.15,
        gt=0,
        lt=0.5,
        description="Share of the training items held out for calibration or early stopping.",
    )
    refit: bool = Field(
        False,
        description="With a held-out calibration fold, train the final model again on every item "
        "(better model, twice the time; the fold's probabilities come from the first model).",
    )
    threads: int | None = Field(None, ge=1, description="CPU threads for torch; empty means all cores.")
    random_state: int = Field(
        0, description="Seed of every random choice (folds, shuffles, initial weights)."
    )


class FineTuneLabelerConfig(_TunedLabelerSettings):
    backend: Literal["finetune"] = Field(
        description="The sentence encoder fine-tuned end to end with a linear head (CPU, torch)."
    )
    max_epochs: int = Field(
        6, ge=1, le=100, description="Most epochs; early stopping on a validation fold picks fewer."
    )
    patience: int = Field(
        1, ge=1, le=10, description="Epochs without a better validation loss before stopping."
    )
    learning_rate: float = Field(5e-5, gt=0, description="AdamW learning rate of the encoder.")
    head_learning_rate: float = Field(1e-3, gt=0, description="AdamW learning rate of the new linear head.")


class SetFitLabelerConfig(_TunedLabelerSettings):
    backend: Literal["setfit"] = Field(
        description="SetFit-style: contrastive tuning of the encoder on pairs, then a logistic head."
    )
    epochs: int = Field(1, ge=1, le=20, description="Passes over the sampled pairs.")
    pairs_per_item: int = Field(
        20, ge=2, le=200, description="Training pairs sampled per item (half same-label)."
    )
    max_pairs: int = Field(
        2000, ge=10, description="At most this many pairs in all (bounds the training time)."
    )
    # Each training tunes the encoder on up to 20 pairs per item: cross-fitting 50 items
    # already takes about 5 minutes on 2 cores.
    cross_fit_max_items: int = Field(
        50,
        ge=0,
        description="Up to this many training items, every one gets a cross-fitted probability for "
        "calibration (cv_folds extra trainings); above it, a held-out calibration fold only.",
    )
    learning_rate: float = Field(2e-5, gt=0, description="AdamW learning rate of the encoder.")
    regularization: list[float] = Field(
        [0.1, 1.0, 10.0, 100.0],
        min_length=1,
        description="Inverse regularization strengths C tried for the head, chosen by cross-validation.",
    )


class LlamaLabelerConfig(LabelerSettings):
    llm: ClassVar[bool] = True
    backend: Literal["llama"] = Field(description="A GGUF model run in-process by llama.cpp.")
    model_path: str | None = Field(
        None, description="GGUF file; empty means the bundled Gemma 3 270M (weak: for trying the path)."
    )
    n_ctx: int = Field(2048, ge=128, description="Context window in tokens.")
    few_shot: int = Field(4, ge=0, le=64, description="Golden examples in each prompt, nearest first.")
    permutations: int = Field(
        1, ge=1, le=24, description="Label orders averaged over, against option-order bias."
    )
    n_threads: int | None = Field(None, ge=1, description="CPU threads; empty means half the CPU cores.")


class OpenAILabelerConfig(LabelerSettings):
    llm: ClassVar[bool] = True
    backend: Literal["openai"] = Field(description="Any OpenAI-compatible server.")
    model: str = Field(description="Model name as the server knows it.")
    base_url: str | None = Field(
        None, description="Server URL such as http://127.0.0.1:8080/v1; empty means OpenAI."
    )
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the API key.")
    endpoint: Literal["completions", "chat"] = Field("completions", description="Which API to call.")
    few_shot: int = Field(4, ge=0, le=64, description="Golden examples in each prompt, nearest first.")
    top_logprobs: int = Field(
        5, ge=0, le=20, description="Alternatives asked for per answer token; 0 means vote share only."
    )
    answer_tokens: int = Field(2, ge=1, le=16, description="Tokens generated when reading log-probabilities.")
    samples: int = Field(
        5, ge=1, le=50, description="Answers sampled per item when the server gives no log-probabilities."
    )
    verbalized: bool = Field(False, description="Ask the model for its confidence (only when set).")
    concurrency: int = Field(4, ge=1, le=256, description="Requests in flight at once.")
    timeout: float = Field(60.0, gt=0, description="Seconds before one request is given up.")
    max_retries: int = Field(4, ge=0, le=20, description="Retries on 429, 5xx and connection errors.")
    budget: float | None = Field(
        None, ge=0, description="Stop a labeling run once it has cost this much (costs.currency)."
    )


#: The prefix of an imported labeler's name in the store, the CLI and ensembles.
EXTERNAL_PREFIX = "external:"


class ExternalLabelerConfig(LabelerSettings):
    """Predictions made outside duolabel, brought in with ``duolabel import-predictions``.

    Examples
    --------
    >>> ExternalLabelerConfig(backend="external", name="gpt4o").label_name
    'external:gpt4o'
    """

    backend: Literal["external"] = Field(
        description="Predictions made elsewhere (an LLM batch job, autolabel, another team's "
        "model), imported with 'duolabel import-predictions FILE --labeler NAME'; it never predicts itself."
    )
    # Required here, and stored as external:NAME (the store's labeler column holds 64 characters).
    # required for this backend, optional for the others
    name: str = Field(
        pattern=r"^[A-Za-z0-9_.-]{1,55}$",
        description="The name given to --labeler of import-predictions (letters, digits, _ . -); "
        "the labeler is stored and shown as external:NAME.",
    )

    @property
    def label_name(self) -> str:
        return f"{EXTERNAL_PREFIX}{self.name}"


#: The settings classes of the built-in backends; a plug-in's comes from its factory.
BACKENDS: dict[str, type[LabelerSettings]] = {
    "embedding": EmbeddingLabelerConfig,
    "finetune": FineTuneLabelerConfig,
    "setfit": SetFitLabelerConfig,
    "llama": LlamaLabelerConfig,
    "openai": OpenAILabelerConfig,
    "external": ExternalLabelerConfig,
}


def labeler_settings(backend: str) -> type[LabelerSettings] | None:
    """The settings class of ``backend`` (built-in or registered), None for an unknown one.

    Examples
    --------
    >>> labeler_settings("llama").__name__, labeler_settings("gpt")
    ('LlamaLabelerConfig', None)
    """
    if backend in BACKENDS:
        return BACKENDS[backend]
    if backend not in LABELERS:
        return None
    config = getattr(LABELERS.get(backend), "config", LabelerSettings)
    if not (isinstance(config, type) and issubclass(config, LabelerSettings)):
        raise ConfigError(
            f"labeler backend {backend!r}: its factory's config attribute must be a subclass of "
            f"duolabel.config.LabelerSettings, got {config!r}"
        )
    return config


def _backend_of(value: Any) -> str | None:
    return value.get("backend") if isinstance(value, dict) else getattr(value, "backend", None)


@lru_cache(maxsize=32)
def _entry_adapter(backends: tuple[tuple[str, type[LabelerSettings]], ...]) -> TypeAdapter[Any]:
    # A union tagged by backend name, like a pydantic discriminated union, but built when a
    # plug-in's backend is met: errors keep the tag in their location, as for the built-ins.
    members = tuple(Annotated[cls, Tag(name)] for name, cls in backends)
    return TypeAdapter(Annotated[Union[members], Discriminator(_backend_of)])  # type: ignore[arg-type]  # noqa: UP007


def _labeler_entry(value: Any) -> LabelerSettings:
    if isinstance(value, LabelerSettings):
        return value
    backend = _backend_of(value)
    config = labeler_settings(backend) if isinstance(backend, str) else None
    if config is None or not isinstance(backend, str):
        names = [*BACKENDS, *(n for n in LABELERS.names() if n not in BACKENDS)]
        raise PydanticCustomError(
            "union_tag_invalid",
            "Input tag {tag!r} found using 'backend' does not match any of: {expected_tags}",
            {"tag": backend, "expected_tags": ", ".join(repr(n) for n in names)},
        )
    backends: dict[str, type[LabelerSettings]] = {**BACKENDS, backend: config}
    settings: LabelerSettings = _entry_adapter(tuple(backends.items())).validate_python(value)
    return settings


#: One ``labeler`` entry: the settings class of its ``backend``, built-in or plug-in.
LabelerConfig = Annotated[SerializeAsAny[LabelerSettings], PlainValidator(_labeler_entry)]


class CalibrationConfig(_Strict):
    method: CalibratorName = Field(
        "temperature",
        description="Calibrator fitted on the golden items; auto picks the lowest cross-validated log-loss.",
    )
    min_golden_per_label: int = Field(
        3, ge=1, description="Refuse to train or calibrate with fewer golden items per label."
    )


class RoutingConfig(_Strict):
    policy: PolicyName = Field(
        "threshold",
        description="threshold: confidence vs a threshold, fixed overlap; dynamic: ask one person at a "
        "time until the fused posterior is sure; meta: a classifier predicts the model's errors.",
    )
    mode: Literal["fixed", "target", "budget", "cost"] = Field(
        "target",
        description="How the threshold is chosen: fixed (use `threshold`); target (cheapest point "
        "certified to reach `target_accuracy` at risk `risk`); budget (best expected accuracy within "
        "`budget`); cost (cheapest point certified at least as accurate as people alone at risk `risk`).",
    )
    threshold: Fraction = Field(
        0.9, description="In fixed mode: accept the model's label when its score is at least this."
    )
    target_accuracy: Fraction = Field(
        0.9, description="In target mode: accuracy the accepted model labels must reach."
    )
    risk: float = Field(
        0.1,
        gt=0,
        lt=1,
        description="In target and cost modes: allowed probability that the accuracy guarantee fails.",
    )
    budget: float | None = Field(
        None, ge=0, description="In budget mode: money for human and expert answers per routing run."
    )
    overlap: int = Field(3, ge=1, le=20, description="Human answers asked for each routed item.")
    max_overlap: int = Field(5, ge=1, le=20, description="Dynamic policy: most people asked per item.")
    posterior_target: Fraction = Field(
        0.95, description="Dynamic policy: stop asking once the fused top-label posterior reaches this."
    )
    escalate: bool = Field(
        True, description="Dynamic policy: items still unsure after `max_overlap` answers go to an expert."
    )
    expert_share: Fraction = Field(
        0.0, description="Share of the routed items (the least confident) sent straight to experts."
    )
    human_accuracy: Fraction = Field(
        0.9,
        description="Accuracy of one human answer, for planning until control items measure it.",
    )
    expert_accuracy: Fraction = Field(
        0.95,
        description="In `simulate`: how often an expert is right on an escalated item that has no "
        "recorded expert answer.",
    )

    @model_validator(mode="after")
    def _budget_mode_needs_budget(self) -> RoutingConfig:
        if self.mode == "budget" and self.budget is None:
            raise ValueError("routing mode 'budget' needs routing.budget (money per routing run)")
        return self


class QualityConfig(_Strict):
    control_rate: Fraction = Field(0.1, description="Share of tasks that are hidden control items.")
    exam_size: int = Field(10, ge=0, description="Exam items a new annotator answers before work.")
    pass_mark: Fraction = Field(0.8, description="Exam accuracy needed to be activated.")
    min_seconds: float = Field(1.0, ge=0, description="Answers faster than this are flagged.")
    lease_minutes: float = Field(15.0, gt=0, description="How long an assigned task stays reserved.")
    exam_retries: int = Field(1, ge=0, le=5, description="Exam retries (on fresh items) before declining.")
    min_controls: int = Field(
        10, ge=1, description="Control answers needed before an annotator can be suspended."
    )
    min_control_accuracy: Fraction = Field(
        0.7, description="Suspend when the control accuracy's upper confidence bound falls below this."
    )
    confidence_level: float = Field(
        0.9, gt=0, lt=1, description="Level of the Wilson interval around each annotator's accuracy."
    )
    max_fast_share: Fraction = Field(
        0.3, description="Flag 'fast' when more than this share of answers beat min_seconds."
    )
    max_same_label_streak: int = Field(
        20, ge=2, description="Flag 'streak' after this many identical answers in a row."
    )
    min_agreement: Fraction = Field(
        0.4, description="Flag 'low_agreement' when agreement with the others' majority is below this."
    )
    min_answers_for_flags: int = Field(
        10, ge=1, description="Answers needed before the fast and agreement flags are judged."
    )
    undo_seconds: float = Field(10.0, ge=0, description="How long after answering the answer can be undone.")
    show_model_suggestion: bool = Field(
        False, description="Co-pilot mode: show the model's label to annotators (it anchors them)."
    )


class CostsConfig(_Strict):
    currency: str = Field("USD", description="Currency of every price below.")
    human_answer: float = Field(0.05, ge=0, description="Price of one human answer.")
    platform_fee: Fraction = Field(0.2, description="Platform fee on human payments, as a fraction.")
    expert_answer: float = Field(1.0, ge=0, description="Price of one expert answer.")
    llm_input_per_million: float = Field(0.0, ge=0, description="Price per 1M LLM input tokens.")
    llm_output_per_million: float = Field(0.0, ge=0, description="Price per 1M LLM output tokens.")
    compute_hour: float = Field(
        0.1, ge=0, description="Price of one hour of the machine that runs local models."
    )
    setup: float = Field(0.0, ge=0, description="Fixed set-up cost (golden set, development).")


class WebConfig(_Strict):
    login_max_failures: int = Field(
        5,
        ge=1,
        description="Failed logins of one name from one address before each further try waits "
        "(1 s, then twice as long after each failure).",
    )
    login_max_failures_per_address: int = Field(
        50, ge=1, description="Failed logins from one address, whatever the names, before its tries wait."
    )
    login_window_minutes: float = Field(
        15.0, gt=0, description="How long failed logins count; also the longest wait between tries."
    )
    invitation_hours: float = Field(72.0, gt=0, description="How long an invitation link stays valid.")
    session_hours: float = Field(12.0, gt=0, description="How long a login lasts.")


class AuditConfig(_Strict):
    sample_rate: Fraction = Field(0.05, description="Share of final labels drawn for expert audit.")
    bands: list[Fraction] = Field(
        [0.8, 0.95], description="Confidence cut points; audits are stratified by source and by these bands."
    )
    confidence: float = Field(
        0.9, gt=0.5, lt=1, description="Confidence level of audit intervals and of monitoring alarms."
    )
    control_window: int = Field(
        200, ge=10, description="Monitoring: recent control answers whose accuracy is watched."
    )
    auto_tighten: bool = Field(
        False,
        description="When an alarm says shipped model labels miss the target, raise the routing "
        "target (or threshold) for the next batch by `tighten_step`.",
    )
    tighten_step: Fraction = Field(0.02, description="How much one alarm raises the target or threshold.")


class AggregationConfig(_Strict):
    method: AggregatorName | None = Field(
        None,
        description="How each item's answers become its final label: majority_vote, "
        "weighted_majority_vote, dawid_skene, glad, mace or median (ordered labels); empty means "
        "the task type's default (single_label: majority_vote, ordinal: median).",
    )
    fuse_model: bool = Field(
        False,
        description="dawid_skene only: the model's calibrated distribution is one more, learned, annotator.",
    )
    model_errors: Literal["joint", "known"] = Field(
        "joint",
        description="fuse_model: learn the model's confusion from every item (joint) or golden items only.",
    )
    smoothing: float = Field(
        0.01, ge=0, description="dawid_skene: pseudo-count added to every confusion-matrix cell."
    )
    diagonal_prior: float = Field(
        1.0, ge=0, description="dawid_skene: imagined correct answers per label for every annotator."
    )
    n_iter: int = Field(100, ge=1, le=10000, description="Most EM iterations of dawid_skene and glad.")

    @model_validator(mode="after")
    def _fusion_needs_dawid_skene(self) -> AggregationConfig:
        if self.fuse_model and self.method != "dawid_skene":
            raise ValueError(f"fuse_model needs method: dawid_skene (got method: {self.method})")
        return self


class LearningConfig(_Strict):
    strategy: StrategyName = Field(
        "margin",
        description="Active-learning strategy that picks golden items to suggest and orders the "
        "people's queue: random, least_confidence, margin, entropy or another registered one.",
    )
    order_queue: bool = Field(
        True,
        description="Among items routed to people, offer first those the strategy ranks most useful "
        "for the next model (otherwise: import order).",
    )
    order_window: int = Field(
        2000, ge=1, description="Most waiting items the strategy ranks at once; the rest keep import order."
    )
    stop_kappa: Fraction = Field(
        0.99, description="Predictions are stable once successive models agree at Cohen's kappa >= this."
    )
    stop_window: int = Field(
        3, ge=2, description="How many successive models must agree pairwise for predictions to be stable."
    )
    stop_sample: int = Field(
        500, ge=10, description="Size of the fixed unlabelled stop set (drawn once per project)."
    )
    seed: int = Field(0, description="Seed of the stop set, of the learning curve and of random choices.")


class ExportConfig(_Strict):
    path: str = Field("out/labels.csv", description="Where `duolabel run` writes the final labels.")


class DistillConfig(_Strict):
    enabled: bool = Field(
        False, description="`duolabel run` distils before each batch once the teacher has labelled one."
    )
    teacher: str | None = Field(
        None, description="Name of the LLM labeler that teaches; empty means the project's only LLM labeler."
    )
    student: LabelerConfig = Field(
        EmbeddingLabelerConfig(name="distilled"),
        description="The trainable labeler taught: a labeler entry (keys as under labeler); name: distilled.",
    )
    min_confidence: Fraction = Field(
        0.9, description="Calibrated confidence a teacher label needs to become training data."
    )

    @field_validator("student", mode="before")
    @classmethod
    def _student_entry(cls, value: Any) -> Any:
        return {"backend": "embedding", "name": "distilled", **value} if isinstance(value, dict) else value


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
    return parse_config(data, source=str(path))


# ---------------------------------------------------------------------------
# Writing the commented project file and the settings reference


def _yaml_value(value: Any) -> str:
    return (
        yaml.safe_dump(value, default_flow_style=True, allow_unicode=True)
        .strip()
        .removesuffix("\n...")
        .strip()
    )


def _render_section(model: BaseModel, indent: str) -> list[str]:
    lines: list[str] = []
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        help_line = f"{indent}# {field.description}" if field.description else None
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
        "# see docs/configuration.md for the full reference.",
    ]
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
                rows.append((key, default, field.description or ""))
                if nested is not None:
                    walk(nested, key + "[].")

    walk(ProjectConfig, "")
    return rows


def settings_markdown() -> str:
    """docs/configuration.md: every setting with its default and help."""
    lines = [
        "# Configuration reference",
        "",
        "Generated from `duolabel/config.py` by `python tools/gen_docs.py`; a test fails when it",
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
    ['| `ordinal`', '| `single_label`']
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
        columns = ", ".join(f"`{c}`" for c in kind().export_columns("a", ["a", "b"])) or "none"
        lines.append(f"| `{name}` | {summary} | `{kind.default_aggregator}` | `{kind.widget}` | {columns} |")
    return lines
