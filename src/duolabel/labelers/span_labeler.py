"""The labeler of a ``spans`` project: the span tagger behind the label stage's interface.

A spans project's model answer is a span list, not a distribution over its labels. The label
stage still stores and calibrates one row per item over the project's labels, so
:class:`SpanLabeler` fills every column of an item's row with its *score*, the tagger's chance
that the whole span list is right (least certain span x chance that nothing was missed,
:class:`~duolabel.labelers.span_tagger.SpanTagger`), and keeps the span list itself, as the
canonical JSON the store keeps (:func:`~duolabel.core.spans.spans_json`), in ``answers_`` by
item id; the label stage stores that as the prediction's label. The calibrate stage calibrates
the score against "the whole list equals gold" (:mod:`duolabel.stages.calibrate_spans`) and
routing reads it through :meth:`duolabel.core.spans.Spans.routing_probs`.

Golden items get cross-fitted predictions: the tagger is fitted ``cv_folds`` times, each time
without one fold, and predicts that fold (``oof_proba_`` and their ``answers_``); a fold whose
training part has no span at all gets no out-of-fold prediction (NaN rows: predicted in-sample
and so never used by calibration). Word vectors are computed once per call.

:func:`for_spans` wraps the ``embedding`` backend of a spans project; any other backend is
refused with what to use instead.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from duolabel.config import EmbeddingLabelerConfig, LabelerConfig, LlamaLabelerConfig, OpenAILabelerConfig
from duolabel.context import Context
from duolabel.core.spans import parse_spans, spans_json
from duolabel.errors import LabelerError, ProjectError
from duolabel.labelers.base import LabelingStopped, Progress, TextItem, Usage
from duolabel.labelers.span_tagger import SpanTagger

__all__ = ["LLMSpanLabeler", "SpanLabeler", "for_spans"]


class SpanLabeler:
    """The BIO span tagger as a trainable labeler of a spans project.

    Parameters
    ----------
    labels : list of str
        The project's span labels.
    model_path : str or Path, optional
        The sentence-transformers folder (the bundled MiniLM by default).
    C : float
        The tagger head's inverse regularization.
    cv_folds : int
        Folds for the golden items' out-of-fold predictions.

    Examples
    --------
    >>> items = [TextItem("a", "Alice met Bob"), TextItem("b", "Carol left"), TextItem("c", "Dan ran")]
    >>> gold = ['[{"start": 0, "end": 5, "label": "PER"}, {"start": 10, "end": 13, "label": "PER"}]',
    ...         '[{"start": 0, "end": 5, "label": "PER"}]', '[{"start": 0, "end": 3, "label": "PER"}]']
    >>> model = SpanLabeler(["PER"], cv_folds=3).fit(items, gold)
    >>> probs, _ = model.predict_proba([TextItem("d", "Eve met Alice")])
    >>> probs.shape, model.answers_["d"].count("PER") > 0
    ((1, 1), True)
    """

    trainable = True

    def __init__(
        self,
        labels: Sequence[str],
        *,
        model_path: str | Path | None = None,
        C: float = 1.0,
        cv_folds: int = 5,
        batch_size: int = 32,
    ) -> None:
        self.labels = list(labels)
        self.model_path = model_path
        self.cv_folds = cv_folds
        self.tagger = SpanTagger(model_path=model_path, C=C, batch_size=batch_size)
        self.answers_: dict[str, str] = {}

    def _rows(self, scores: Sequence[float]) -> np.ndarray:
        # Every label column holds the item's score (see the module docstring).
        return np.repeat(np.asarray(scores, dtype=float)[:, None], len(self.labels), axis=1)

    def fit(
        self, items: Sequence[TextItem], labels: Sequence[str], *, progress: Progress | None = None
    ) -> SpanLabeler:
        gold = [parse_spans(g) for g in labels]
        words = self.tagger.word_vectors([item.text for item in items])
        self.tagger.fit_words(words, gold)
        oof = np.full((len(items), len(self.labels)), np.nan)
        folds = np.random.default_rng(0).permutation(len(items)) % max(min(self.cv_folds, len(items)), 2)
        for k in np.unique(folds):
            rest = np.flatnonzero(folds != k)
            held = np.flatnonzero(folds == k)
            try:
                fold_tagger = SpanTagger(C=self.tagger.C).fit_words(
                    [words[i] for i in rest], [gold[i] for i in rest]
                )
            except LabelerError:
                continue  # no span to learn from without this fold: no honest prediction for it
            predicted = fold_tagger.predict_words([words[i] for i in held])
            oof[held] = self._rows([p.confidence for p in predicted])
            for i, p in zip(held, predicted, strict=True):
                self.answers_[items[int(i)].id] = spans_json(p.spans)
        self.oof_proba_ = oof
        key = "|".join(
            [
                "spans",
                str(self.model_path or "default"),
                str(self.tagger.C),
                str(self.cv_folds),
                ",".join(self.labels),
                *(f"{item.content_hash or item.text}={g}" for item, g in zip(items, labels, strict=True)),
            ]
        )
        self.version_ = hashlib.sha256(key.encode()).hexdigest()[:16]
        if progress is not None:
            progress(len(items))
        return self

    def predict_proba(
        self, items: Sequence[TextItem], *, progress: Progress | None = None
    ) -> tuple[np.ndarray, Usage]:
        start = time.perf_counter()
        predicted = self.tagger.predict([item.text for item in items])
        for item, p in zip(items, predicted, strict=True):
            self.answers_[item.id] = spans_json(p.spans)
        if progress is not None:
            progress(len(items))
        usage = Usage(items=len(items), seconds=time.perf_counter() - start)
        return self._rows([p.confidence for p in predicted]), usage


class LLMSpanLabeler:
    """A text-generating model (the ``llama`` or ``openai`` backend) as the labeler of a spans project.

    Each item's entities are asked for as JSON and placed in its text
    (:func:`~duolabel.labelers.llm_spans.extract_spans`, greedy); a reply with no JSON list is
    an abstention (a NaN row: people decide). The model learns nothing from the golden items,
    so its predictions of them are honest as they are. It gives no probability of its own: an
    item's score is ``1 / (1 + entities it named that could not be placed)``, so a reply that
    names what is not in the text counts less, and the calibrate stage turns that into a chance
    of the whole list being right on the golden items.

    Examples
    --------
    >>> model = LLMSpanLabeler(generator, ["PER", "LOC"]).fit([], [])  # doctest: +SKIP
    >>> probs, usage = model.predict_proba([TextItem("a", "Alice went to Paris")])  # doctest: +SKIP
    >>> model.answers_["a"]  # doctest: +SKIP
    '[{"start": 0, "end": 5, "label": "PER"}, {"start": 14, "end": 19, "label": "LOC"}]'
    """

    trainable = False

    def __init__(
        self, generator: Any, labels: Sequence[str], *, instructions: str = "", max_tokens: int = 120
    ) -> None:
        self.generator = generator
        self.labels = list(labels)
        self.instructions = instructions
        self.max_tokens = max_tokens
        self.answers_: dict[str, str] = {}

    def fit(
        self, items: Sequence[TextItem], labels: Sequence[str], *, progress: Progress | None = None
    ) -> LLMSpanLabeler:
        identity = getattr(self.generator, "identity", type(self.generator).__name__)
        key = f"llm-spans|{identity}|{','.join(self.labels)}|{self.instructions}|{self.max_tokens}"
        self.version_ = hashlib.sha256(key.encode()).hexdigest()[:16]
        return self

    def predict_proba(
        self, items: Sequence[TextItem], *, progress: Progress | None = None
    ) -> tuple[np.ndarray, Usage]:
        from duolabel.labelers.llm_spans import extract_spans

        start = time.perf_counter()
        rows = np.full((len(items), len(self.labels)), np.nan)
        if hasattr(self.generator, "restart"):
            self.generator.restart()  # a budgeted generator (openai) counts per call
        for i, item in enumerate(items):
            try:
                found = extract_spans(
                    self.generator,
                    [item.text],
                    self.labels,
                    instructions=self.instructions,
                    max_tokens=self.max_tokens,
                )[0]
            except LabelingStopped as stop:  # the budget: what was answered is kept
                raise LabelingStopped(str(stop), probs=rows[:i].copy(), usage=self._usage(i, start)) from None
            if not found.abstained:
                rows[i] = 1.0 / (1 + len(found.left_out))
                self.answers_[item.id] = spans_json(found.spans)
            if progress is not None:
                progress(1)
        return rows, self._usage(len(items), start)

    def _usage(self, done: int, start: float) -> Usage:
        usage = Usage(items=done, seconds=time.perf_counter() - start)
        if hasattr(self.generator, "cost"):  # a paid server: what the ledger counts
            usage.extra.update(cost=self.generator.cost, cached=float(self.generator.cached))
        return usage


def for_spans(ctx: Context, cfg: LabelerConfig) -> SpanLabeler | LLMSpanLabeler:
    """The labeler of a spans project for one ``labeler`` entry: the ``embedding`` backend
    becomes a :class:`SpanLabeler`, the ``llama`` and ``openai`` ones an :class:`LLMSpanLabeler`
    (openai's with the response cache and budget, :mod:`duolabel.labelers.span_openai`); any other is
    refused with what to do instead. (Privacy
    redaction does not apply: it would move the offsets the spans point at.)"""
    if isinstance(cfg, EmbeddingLabelerConfig):
        if cfg.engine != "local":
            # The span lists stay in the labeler (answers_): a remote copy's never come back.
            raise ProjectError(
                f"task.type spans: labeler {cfg.label_name}: engine {cfg.engine!r} does not label spans yet; "
                "use engine: local"
            )
        return SpanLabeler(
            ctx.config.task.label_names,
            model_path=ctx.resolve(cfg.model) if cfg.model else None,
            C=cfg.regularization if isinstance(cfg.regularization, float) else 1.0,
            cv_folds=cfg.cv_folds,
            batch_size=cfg.batch_size,
        )
    if isinstance(cfg, LlamaLabelerConfig):
        from duolabel.labelers.generation import LlamaGenerator
        from duolabel.labelers.llama import LlamaLabeler

        backend = LlamaLabeler(
            labels=ctx.config.task.label_names,
            model_path=ctx.resolve(cfg.model_path) if cfg.model_path else None,
            n_ctx=cfg.n_ctx,
            n_threads=cfg.n_threads,
        )
        return LLMSpanLabeler(
            LlamaGenerator(backend), ctx.config.task.label_names, instructions=ctx.config.task.instructions
        )
    if isinstance(cfg, OpenAILabelerConfig):
        from duolabel.labelers.span_openai import openai_span_generator

        return LLMSpanLabeler(
            openai_span_generator(ctx, cfg),
            ctx.config.task.label_names,
            instructions=ctx.config.task.instructions,
        )
    raise ProjectError(
        f"task.type spans: labeler {cfg.label_name} (backend {cfg.backend!r}) does not label spans yet; "
        "use the embedding backend (a BIO span tagger) or llama / openai (extraction), or import people's "
        "answers with 'duolabel import-answers' and run 'duolabel aggregate'"
    )
