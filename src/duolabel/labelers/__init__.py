"""Labelers: models that give a probability for every label of the project.

One module per backend (``embedding``, ``finetune`` with ``setfit``, ``llama``, ``openai``,
``external`` for predictions imported with ``duolabel import-predictions``),
each built from its ``labeler`` entry of the project file by a factory in :data:`LABELERS`.
The factories of the built-in backends import their module only when called, so the llama.cpp and HTTP client
dependencies load only for projects that use them. A plug-in adds a backend through the
``duolabel.labelers`` entry-point group: the entry point names its factory, and the factory's
``config`` attribute its settings class (a subclass of :class:`duolabel.config.LabelerSettings`,
which the project file validates the entry with). The labeling stage itself is
:mod:`duolabel.stages.label`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np

from duolabel.config import (
    EmbeddingLabelerConfig,
    ExternalLabelerConfig,
    FineTuneLabelerConfig,
    LabelerConfig,
    LlamaLabelerConfig,
    OpenAILabelerConfig,
    SetFitLabelerConfig,
)
from duolabel.config.labelers import ENGINE_FIELDS
from duolabel.context import Context
from duolabel.core.registry import LABELERS
from duolabel.core.tasks import task_type
from duolabel.errors import ProjectError
from duolabel.labelers.base import Labeler, LabelingStopped, TextItem, TrainableLabeler, Usage
from duolabel.labelers.embedding import EmbeddingLabeler, StoreEmbeddingCache
from duolabel.labelers.llm_pairwise import for_task
from duolabel.labelers.privacy import redacting, redaction_applies
from duolabel.labelers.span_labeler import for_spans

__all__ = [
    "ENSEMBLE",
    "LABELERS",
    "EmbeddingLabeler",
    "Labeler",
    "LabelerFactory",
    "LabelingStopped",
    "TextItem",
    "TrainableLabeler",
    "Usage",
    "build_labeler",
    "encode_fn",
    "encoder_for",
]

#: The name under which the calibration stage stores the weighted ensemble of several
#: labelers (so no labeler may be called that).
ENSEMBLE = "ensemble"

#: Builds an unfitted labeler from the project context and one ``labeler`` entry.
LabelerFactory = Callable[[Context, Any], Labeler]

# LABELERS (factories by backend name) is declared in duolabel.core.registry, below the
# configuration, which reads a plug-in backend's settings class from it.


def build_labeler(ctx: Context, cfg: LabelerConfig) -> Any:
    """An unfitted labeler for one ``labeler`` entry of the project file (behind redaction
    when the project's ``privacy`` settings apply to it; a pairwise labeler in a pairwise
    project, :func:`duolabel.labelers.llm_pairwise.for_task`; the span tagger in a spans
    project, :func:`duolabel.labelers.span_labeler.for_spans`)."""
    if ctx.config.task.type == "spans":
        if redaction_applies(ctx, cfg):
            # Never send unredacted text where the user asked for redaction; and redacting
            # would move the offsets the extracted spans point at.
            raise ProjectError(
                f"task.type spans: labeler {cfg.label_name} would send the items' text to a server, "
                "and privacy.redact cannot apply to span extraction (redaction moves the character "
                "offsets the spans point at); label spans with a local backend (embedding or llama) "
                "or remove privacy.redact"
            )
        return for_spans(ctx, cfg)
    return for_task(ctx, cfg, redacting(ctx, cfg, LABELERS.get(cfg.backend)(ctx, cfg)))


def encoder_for(ctx: Context) -> EmbeddingLabeler:
    """The embedding model used for few-shot similarity and neighbourhoods (the project's
    embedding labeler, or the default one), with the store's embedding cache."""
    cfg = next((c for c in ctx.config.labeler if isinstance(c, EmbeddingLabelerConfig)), None)
    # The encoder itself, never the task's labeler around it (a pairwise head).
    cfg = cfg or EmbeddingLabelerConfig()
    return redacting(ctx, cfg, LABELERS.get(cfg.backend)(ctx, cfg))


def encode_fn(ctx: Context, *, store_vectors: bool = True) -> Any:
    """Few-shot similarity through the project's encoder, with its store cache unless
    ``store_vectors`` is False (``duolabel plan`` writes nothing)."""
    encoder = encoder_for(ctx)
    if not store_vectors:
        encoder.cache = None

    def encode(items: Sequence[TextItem]) -> np.ndarray:
        return encoder.encode(items)[0]

    encode.model_name = encoder.model_name  # type: ignore[attr-defined]  # part of LLM versions
    return encode


@LABELERS.register("embedding")
def _embedding(ctx: Context, cfg: EmbeddingLabelerConfig) -> EmbeddingLabeler:
    labeler = EmbeddingLabeler(
        labels=ctx.config.task.label_names,
        model_path=ctx.resolve(cfg.model) if cfg.model else None,
        regularization=cfg.regularization,
        class_weight=cfg.class_weight,
        self_training=cfg.self_training,
        self_training_k=cfg.self_training_k,
        self_training_threshold=cfg.self_training_threshold,
        self_training_weight=cfg.self_training_weight,
        self_training_max=cfg.self_training_max,
        batch_size=cfg.batch_size,
        cv_folds=cfg.cv_folds,
        multi_label=task_type(ctx.config.task.type).list_valued,
    )
    labeler.cache = StoreEmbeddingCache(ctx.store, labeler.model_name)
    return labeler


def _tuned_options(ctx: Context, cfg: FineTuneLabelerConfig | SetFitLabelerConfig) -> dict[str, Any]:
    """What every fine-tuned labeler takes; trained models are kept per version in the
    project's ``models/`` folder, so a resumed or re-run project loads them."""
    options = cfg.model_dump(exclude={"name", "weight", "backend", "model", *ENGINE_FIELDS})
    return {
        **options,
        "labels": ctx.config.task.label_names,
        "model_path": ctx.resolve(cfg.model) if cfg.model else None,
        "model_dir": ctx.path / "models",
    }


@LABELERS.register("finetune")
def _finetune(ctx: Context, cfg: FineTuneLabelerConfig) -> Labeler:
    from duolabel.labelers.finetune import FineTuneLabeler

    return FineTuneLabeler(**_tuned_options(ctx, cfg))


@LABELERS.register("setfit")
def _setfit(ctx: Context, cfg: SetFitLabelerConfig) -> Labeler:
    from duolabel.labelers.finetune import SetFitLabeler

    options = _tuned_options(ctx, cfg)
    return SetFitLabeler(**{**options, "regularization": tuple(cfg.regularization)})


def _llm_options(ctx: Context, cfg: LlamaLabelerConfig | OpenAILabelerConfig) -> dict[str, Any]:
    """What every LLM labeler takes: the labels, their descriptions, the instructions and
    the few-shot settings."""
    task = ctx.config.task
    options = {
        "labels": task.label_names,
        "descriptions": [spec.description for spec in task.labels],
        "instructions": task.instructions,
        "few_shot": cfg.few_shot,
        "contextual": cfg.contextual_calibration,
    }
    if cfg.prompt:
        from duolabel.labelers.prompt_search import read_prompt

        chosen = read_prompt(
            ctx.resolve(cfg.prompt), labels=task.label_names, where=f"labeler {cfg.label_name}: prompt"
        )
        options.update(chosen)
    options["encode"] = encode_fn(ctx) if options["few_shot"] and not options.get("demos") else None
    return options


def _prompted(ctx: Context, labeler: type, **options: Any) -> Labeler:
    """The LLM labeler ``labeler(**options)``; for list answers (multi_label), wrapped to ask
    one yes/no question per label (:mod:`duolabel.labelers.llm_multilabel`)."""
    if task_type(ctx.config.task.type).list_valued:
        from duolabel.labelers.llm_multilabel import PerLabelQuestions

        return cast(Labeler, PerLabelQuestions.build(labeler, **options))
    return cast(Labeler, labeler(**options))


@LABELERS.register("llama")
def _llama(ctx: Context, cfg: LlamaLabelerConfig) -> Labeler:
    from duolabel.labelers.llama import LlamaLabeler

    return _prompted(
        ctx,
        LlamaLabeler,
        **_llm_options(ctx, cfg),
        model_path=ctx.resolve(cfg.model_path) if cfg.model_path else None,
        n_ctx=cfg.n_ctx,
        permutations=cfg.permutations,
        n_threads=cfg.n_threads,
        prompt_variants=cfg.prompt_variants,
    )


@LABELERS.register("openai")
def _openai(ctx: Context, cfg: OpenAILabelerConfig) -> Labeler:
    from duolabel.labelers.cache import StoreResponseCache
    from duolabel.labelers.openai import OpenAILabeler

    costs = ctx.config.costs
    return _prompted(
        ctx,
        OpenAILabeler,
        **_llm_options(ctx, cfg),
        model=cfg.model,
        base_url=cfg.base_url,
        api_key_env=cfg.api_key_env,
        endpoint=cfg.endpoint,
        top_logprobs=cfg.top_logprobs,
        answer_tokens=cfg.answer_tokens,
        samples=cfg.samples,
        verbalized=cfg.verbalized,
        prompt_variants=cfg.prompt_variants,
        concurrency=cfg.concurrency,
        cooldown=cfg.cooldown,
        cache_prompt=cfg.cache_prompt,
        timeout=cfg.timeout,
        max_retries=cfg.max_retries,
        budget=cfg.budget,
        price_input_per_million=costs.llm_input_per_million,
        price_output_per_million=costs.llm_output_per_million,
        price_compute_hour=costs.compute_hour,
        cache=StoreResponseCache(ctx.store),
    )


@LABELERS.register("external")
def _external(ctx: Context, cfg: ExternalLabelerConfig) -> Labeler:
    from duolabel.labelers.external import ExternalLabeler
    from duolabel.ledger import labeler_versions

    return ExternalLabeler(
        labels=ctx.config.task.label_names,
        name=cfg.name,
        version=labeler_versions(ctx).get(cfg.label_name),
    )
