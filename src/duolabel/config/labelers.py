"""The ``labeler`` entries: one settings class per backend, built-in or plug-in."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import Discriminator, Field, PlainValidator, SerializeAsAny, Tag, TypeAdapter, field_validator
from pydantic_core import PydanticCustomError

from duolabel.config.common import _Strict
from duolabel.core.registry import LABELERS
from duolabel.errors import ConfigError


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


class _EngineSettings(LabelerSettings):
    """What the labelers that can run on Ray share (``duolabel.labelers.engines``)."""

    engine: Literal["local", "ray"] = Field(
        "local",
        description="Where items are predicted: 'local' in this process; 'ray' streams item batches "
        "through Ray Data workers (pip install 'duolabel[ray]'), the store written here.",
    )
    ray_address: str | None = Field(
        None,
        description="With engine 'ray': the cluster's address (e.g. 'ray://head:10001'); empty "
        "starts a local Ray on this machine.",
    )
    ray_workers: int | None = Field(
        None,
        ge=1,
        description="With engine 'ray': model copies at once; empty means the cluster's CPUs "
        "divided by ray_cpus_per_worker.",
    )
    ray_cpus_per_worker: int = Field(
        1, ge=1, description="With engine 'ray': CPUs (and torch threads) each model copy takes."
    )


#: The settings of where a labeler runs, which are not the labeler's own options.
ENGINE_FIELDS = frozenset(_EngineSettings.model_fields) - frozenset(LabelerSettings.model_fields)


class EmbeddingLabelerConfig(_EngineSettings):
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


class _TunedLabelerSettings(_EngineSettings):
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
        description="With a held-out calibration fold, train the final model again on every item, "
        "for the epochs the fold chose (a better model, about twice the time). Calibration stays "
        "honest: the fold's probabilities come from the first model, trained without the fold; the "
        "refit model labels everything else.",
    )
    ensemble: bool = Field(
        False,
        description="With cross-fitting, predict with the mean of the fold models and the final "
        "model (no extra training, several times the prediction time; the models are saved too). "
        "Calibration stays fitted on the fold models' out-of-fold probabilities.",
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
        12,
        ge=1,
        le=100,
        description="Most epochs; early stopping on a validation fold picks fewer. The learning "
        "rate decays linearly to 0 over this many epochs.",
    )
    patience: int = Field(
        2, ge=1, le=10, description="Epochs without a better validation score before stopping."
    )
    select_on: Literal["accuracy", "log_loss"] = Field(
        "accuracy",
        description="Early stopping's validation score: accuracy (ties to the lower log-loss), or "
        "log-loss alone (which turns up epochs before accuracy stops improving).",
    )
    choose_epochs: Literal["validation_fold", "cross_fit"] = Field(
        "cross_fit",
        description="With cross-fitting (up to cross_fit_max_items), where early stopping's score "
        "comes from: one validation fold held out of the training items, or every item's "
        "out-of-fold probabilities pooled over the cross-fitting folds (no model trained only to "
        "choose them; each fold model trains until its own fold stops improving).",
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


_CONTEXTUAL_HELP = (
    "Contextual calibration (Zhao et al., 2021): divide each distribution by the one the same prompt "
    "gives to content-free inputs (N/A, an empty text, [MASK]), then renormalise."
)
_PROMPT_HELP = (
    "JSON file written by 'duolabel optimize-prompt' (under prompts/); its chosen instructions and "
    "demonstrations replace task.instructions and the nearest golden examples. Empty: neither."
)


_VARIANTS_HELP = (
    "Fixed paraphrases of the instruction also scored per item (0: off); their disagreement is "
    "an error signal (prompt_disagreement) reported by calibrate. Each one is a prompt more per item."
)


class LlamaLabelerConfig(_EngineSettings):
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
    prompt_variants: int = Field(0, ge=0, le=5, description=_VARIANTS_HELP)
    contextual_calibration: bool = Field(False, description=_CONTEXTUAL_HELP)
    prompt: str | None = Field(None, description=_PROMPT_HELP)


class OpenAILabelerConfig(LabelerSettings):
    llm: ClassVar[bool] = True
    backend: Literal["openai"] = Field(description="Any OpenAI-compatible server.")
    model: str = Field(description="Model name as the server knows it.")
    base_url: str | list[str] | None = Field(
        None,
        description="Server URL such as http://127.0.0.1:8080/v1, or a list of servers of the same "
        "model (least-loaded dispatch, failover); empty means OpenAI.",
    )
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the API key.")
    endpoint: Literal["completions", "chat"] = Field("completions", description="Which API to call.")
    few_shot: int = Field(4, ge=0, le=64, description="Golden examples in each prompt, nearest first.")
    top_logprobs: int = Field(
        5,
        ge=0,
        le=20,
        description="Most alternatives asked for per answer token (no more than the labels); "
        "0 means vote share only.",
    )
    answer_tokens: int = Field(2, ge=1, le=16, description="Tokens generated when reading log-probabilities.")
    samples: int = Field(
        5, ge=1, le=50, description="Answers sampled per item when the server gives no log-probabilities."
    )
    verbalized: bool = Field(False, description="Ask the model for its confidence (only when set).")
    prompt_variants: int = Field(0, ge=0, le=5, description=_VARIANTS_HELP)
    concurrency: int = Field(4, ge=1, le=256, description="Requests in flight at once on each server.")
    cooldown: float = Field(
        30.0, gt=0, description="Seconds a server of a list that keeps failing is left out before a new try."
    )
    cache_prompt: bool = Field(
        False,
        description="llama.cpp's server only: keep the shared prompt prefix in its KV cache (cache_prompt).",
    )
    timeout: float = Field(60.0, gt=0, description="Seconds before one request is given up.")
    max_retries: int = Field(
        4,
        ge=0,
        le=20,
        description="Retries on 429, 5xx and connection errors, after a first try on each server.",
    )
    budget: float | None = Field(
        None,
        ge=0,
        description="Stop a labeling run once it has cost this much (costs.currency): tokens and "
        "compute time, as the runs ledger counts them.",
    )
    contextual_calibration: bool = Field(False, description=_CONTEXTUAL_HELP)
    prompt: str | None = Field(None, description=_PROMPT_HELP)

    @field_validator("base_url", mode="before")
    @classmethod
    def _one_or_more_servers(cls, value: Any) -> Any:
        # Checked before the union is tried, so that a bad value gets one message, not two.
        if value is None or isinstance(value, str):
            return value
        if not isinstance(value, list) or not all(isinstance(url, str) and url for url in value):
            raise ValueError("a URL or a list of URLs")
        if not value:
            raise ValueError("at least one URL (leave base_url out for OpenAI)")
        twice = sorted({url for url in value if value.count(url) > 1})
        if twice:
            raise ValueError(f"each URL once ({', '.join(twice)} is listed twice)")
        return value


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
