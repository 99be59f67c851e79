"""An LLM judge of pairs, scored in both orders (the ``llama`` and ``openai`` backends).

LLM judges prefer a position: LLMBar (Zeng et al., ICLR 2024) shows judgements that flip when
the two responses are swapped. :class:`PairwiseLLMLabeler` therefore asks the backend's labeler
twice per pair, as shown and with A and B swapped, reading each answer's probability from the
label tokens as the single-label scoring does (``A`` and ``B`` after ``Label:``). The prompt is
a judge's own (:func:`pair_prompt`, after LLMBar's): the judging rules and the project's
instructions, then per pair the prompt, an ``Output (a)`` and an ``Output (b)`` block, and the
question; the backend's labeler lays out its prompts with it once wrapped. The swapped
order's distribution is mapped back (its A is the pair's B) and the two are averaged: a
position bias that favours A in one order favours B in the other and cancels. A pair whose two
orders pick different winners is *swap-inconsistent*: the model's preference is its position
bias, not the responses, so it abstains (a NaN row) and the pair goes to people whatever the
routing threshold. With enough golden pairs each order is calibrated first (a shift and a
temperature per order, :class:`~duolabel.core.pairwise.OrderCalibrator`), so that a bias the
golden pairs show is taken out before the orders are compared; the calibrate stage then
calibrates the averaged distribution like any labeler's. The per-order distributions of the
latest call are kept in ``orders_`` (``raw_orders_`` before per-order calibration), the
per-pair flags in ``swap_consistent_``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from duolabel.config import EmbeddingLabelerConfig, LabelerConfig
from duolabel.context import Context
from duolabel.core.pairwise import OrderCalibrator, swap_consistent, swapped_columns
from duolabel.errors import LabelerError
from duolabel.labelers.base import Progress, TextItem, Usage
from duolabel.labelers.embedding import EmbeddingLabeler, StoreEmbeddingCache
from duolabel.labelers.pairwise import Pair, PairLookup, PairwiseEmbeddingLabeler, store_pairs
from duolabel.labelers.prompts import LabelPrompt, PromptedLabeler

__all__ = ["JUDGE_RULES", "PairwiseLLMLabeler", "for_task", "pair_block", "pair_prompt"]

#: The judging rules first in every pair prompt (LLMBar's "rules" prompt, shortened): what to
#: weigh, and the biases LLMBar found judges fall for (position, length, style).
JUDGE_RULES = (
    "You are a careful judge of two outputs written for one instruction. Select the output that "
    "follows the instruction better: it should do precisely what the instruction asks, be honest "
    "and helpful, and contain neither more nor less than was asked. Do not let the order in which "
    "the outputs are shown, their length or their style decide."
)


def pair_block(pair: Pair) -> str:
    """The pair as the judge reads it: the prompt, then an ``Output (a)`` and an ``Output (b)``
    block (line breaks kept: code and lists read as written).

    Examples
    --------
    >>> print(pair_block(Pair("x", "Say hi", "hi", "bye")))
    # Instruction:
    Say hi
    <BLANKLINE>
    # Output (a):
    hi
    <BLANKLINE>
    # Output (b):
    bye
    """
    return (
        f"# Instruction:\n{pair.prompt.strip()}\n\n"
        f"# Output (a):\n{pair.a.strip()}\n\n# Output (b):\n{pair.b.strip()}"
    )


def _question(labels: Sequence[str], descriptions: Sequence[str], order: Sequence[int]) -> str:
    meaning = {"A": "Output (a) is better", "B": "Output (b) is better", "tie": "they are equally good"}
    parts = [f"{labels[i]} if {descriptions[i].strip() or meaning.get(labels[i], labels[i])}" for i in order]
    return f"# Which is better, Output (a) or Output (b)? Answer {', '.join(parts)}."


def pair_prompt(
    *,
    instructions: str,
    labels: Sequence[str],
    descriptions: Sequence[str],
    text: str,
    examples: Sequence[tuple[str, str]] = (),
    order: Sequence[int] | None = None,
) -> LabelPrompt:
    """The judge's prompt for one pair (a :attr:`~duolabel.labelers.prompts.PromptedLabeler.layout`):
    :data:`JUDGE_RULES` and the project's instructions, then each example and the pair (``text``,
    a :func:`pair_block`) followed by the question and ``Label:``; ``order`` permutes how the
    answers are listed in the question.

    Examples
    --------
    >>> p = pair_prompt(instructions="", labels=["A", "B"], descriptions=["", ""],
    ...                 text=pair_block(Pair("x", "Say hi", "hi", "bye")))
    >>> print(p.text.splitlines()[-2])
    # Which is better, Output (a) or Output (b)? Answer A if Output (a) is better, B if Output (b) is better.
    >>> p.text.splitlines()[-1]
    'Label:'
    """
    order = list(order) if order is not None else list(range(len(labels)))
    rules = " ".join(f"{JUDGE_RULES} {instructions}".split())
    question = _question(labels, descriptions, order)
    body = "".join(f"{t}\n\n{question}\nLabel: {label}\n\n" for t, label in examples)
    return LabelPrompt(rules + "\n\n", body + f"{text}\n\n{question}\nLabel:")


def _as_items(pairs: Sequence[Pair]) -> list[TextItem]:
    # The pair's own id (so a golden pair is never its own few-shot example, in either order)
    # and a content hash of its own per order (so caches keyed by hash never mix the two).
    return [TextItem(p.id, pair_block(p), p.content_hash + ":pair") for p in pairs]


class PairwiseLLMLabeler:
    """A prompted labeler (``llama``, ``openai``) judging each pair in both orders.

    Parameters
    ----------
    model : labeler
        The backend's labeler, over the labels ``A, B[, tie]``; it reads the pair
        (:func:`pair_block`) as an item's text and, a prompted labeler, lays out its prompts
        with :func:`pair_prompt` from now on.
    pairs : PairLookup
        The pair behind each item.
    inconsistent : {"abstain", "keep"}
        What a swap-inconsistent pair gets: an abstention (people decide), or the averaged
        distribution anyway.
    per_order : bool
        Calibrate each order on the golden pairs before averaging
        (:class:`~duolabel.core.pairwise.OrderCalibrator`), when there are at least
        ``min_golden`` of each label: a judge that always prefers the first position is
        otherwise swap-inconsistent on every pair. The golden pairs then get out-of-fold
        predictions (``oof_proba_``: each fold's calibrators fitted on the other folds).
    min_golden : int
        Golden pairs per label needed for per-order calibration.

    Every other attribute (``version_`` but suffixed, ``budget``, ``close``, ...) is the
    backend labeler's.

    Examples
    --------
    >>> judge = PairwiseLLMLabeler(LlamaLabeler(labels=["A", "B"]), lookup)  # doctest: +SKIP
    >>> probs, usage = judge.fit(golden, gold).predict_proba(items)  # doctest: +SKIP
    >>> judge.swap_consistent_  # doctest: +SKIP
    array([ True, False])
    """

    # Attributes of the wrapper itself; any other is the backend's (read and written).
    _OWN = frozenset(
        {"pairs", "inconsistent", "per_order", "min_golden", "orders_", "raw_orders_", "swap_consistent_",
         "calibrators_", "oof_proba_", "_golden"}
    )  # fmt: skip

    def __init__(
        self,
        model: Any,
        pairs: PairLookup,
        *,
        inconsistent: str = "abstain",
        per_order: bool = True,
        min_golden: int = 5,
    ) -> None:
        if inconsistent not in ("abstain", "keep"):
            raise ValueError(f"inconsistent must be 'abstain' or 'keep', got {inconsistent!r}")
        object.__setattr__(self, "_model", model)
        # A wrapper around the backend (privacy's redaction) forwards ``layout`` to it: the
        # judge must keep its pair prompt whether or not the text is redacted on the way.
        if isinstance(model, PromptedLabeler) or isinstance(getattr(model, "_model", None), PromptedLabeler):
            model.layout = pair_prompt
        self.pairs = pairs
        self.inconsistent = inconsistent
        self.per_order = per_order
        self.min_golden = min_golden
        self.calibrators_: tuple[OrderCalibrator, OrderCalibrator] | None = None
        self._golden: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self._model, name, value)  # e.g. the label stage's per-run budget

    @property
    def version_(self) -> str:
        """The backend's version, marked as judging pairs (and with per-order calibration)."""
        # "judge": the pair prompt (its layout is not part of every backend's own version).
        return f"{self._model.version_}-pairjudge{'c' if self.calibrators_ is not None else ''}"

    def _orders(self, items: Sequence[TextItem], usage: Usage) -> tuple[np.ndarray, np.ndarray]:
        """Each pair's distribution as shown and swapped (mapped back), from the backend."""
        pairs = self.pairs(items)
        shown, first = self._model.predict_proba(_as_items(pairs))
        swapped, second = self._model.predict_proba(_as_items([p.swapped() for p in pairs]))
        usage.add(first).add(second)
        return shown, swapped_columns(swapped) if len(pairs) else swapped

    def fit(
        self, items: Sequence[TextItem], labels: Sequence[str], *, progress: Progress | None = None
    ) -> PairwiseLLMLabeler:
        """Fit the backend on the golden pairs as shown (its few-shot examples) and, with
        enough of them, the per-order calibrators on their scores in both orders."""
        self._model.fit(_as_items(self.pairs(items)), labels, progress=progress)
        self.calibrators_, self._golden = None, {}
        gold = np.array([self.labels.index(label) for label in labels], dtype=int)
        counts = np.bincount(gold, minlength=2)[:2]  # A and B; a tie needs none
        if not self.per_order or counts.min() < self.min_golden:
            return self
        usage = Usage()
        shown, back = self._orders(items, usage)
        fit_usage = getattr(self._model, "fit_usage_", None)
        if fit_usage is not None:
            fit_usage.add(usage)  # scoring the golden pairs is part of fitting
        self.calibrators_ = self._calibrators(shown, back, gold)
        # Out-of-fold predictions of the golden pairs: each fold calibrated by the others.
        from sklearn.model_selection import StratifiedKFold

        oof = np.full(shown.shape, np.nan)
        folds = StratifiedKFold(n_splits=min(5, int(counts.min())), shuffle=True, random_state=0)
        for train, test in folds.split(shown, gold):
            cal_shown, cal_back = self._calibrators(shown[train], back[train], gold[train])
            oof[test] = self._combine(cal_shown.transform(shown[test]), cal_back.transform(back[test]))[0]
        self.oof_proba_ = oof
        self._golden = {(i.id, i.content_hash): (s, b) for i, s, b in zip(items, shown, back, strict=True)}
        return self

    @staticmethod
    def _calibrators(
        shown: np.ndarray, back: np.ndarray, gold: np.ndarray
    ) -> tuple[OrderCalibrator, OrderCalibrator]:
        return OrderCalibrator().fit(shown, gold), OrderCalibrator().fit(back, gold)

    def _combine(self, shown: np.ndarray, back: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The mean of the two orders and the swap-consistency flags (inconsistent: NaN rows
        when abstaining)."""
        consistent = swap_consistent(shown, back)
        probs = (shown + back) / 2
        if self.inconsistent == "abstain":
            probs[~consistent] = np.nan
        return probs, consistent

    def predict_proba(
        self, items: Sequence[TextItem], *, progress: Progress | None = None
    ) -> tuple[np.ndarray, Usage]:
        """The mean of both orders' (calibrated) distributions; swap-inconsistent pairs
        abstain (see the class)."""
        usage = Usage(items=len(items))
        # Golden pairs scored while fitting are not scored again.
        known = [i for i, item in enumerate(items) if (item.id, item.content_hash) in self._golden]
        todo = [i for i, item in enumerate(items) if (item.id, item.content_hash) not in self._golden]
        shown = np.full((len(items), len(self.labels)), np.nan)
        back = shown.copy()
        if todo:
            shown[todo], back[todo] = self._orders([items[i] for i in todo], usage)
        for i in known:
            shown[i], back[i] = self._golden[items[i].id, items[i].content_hash]
        usage.items = len(items)
        self.raw_orders_ = (shown.copy(), back.copy())
        if self.calibrators_ is not None:
            shown, back = self.calibrators_[0].transform(shown), self.calibrators_[1].transform(back)
        probs, consistent = self._combine(shown, back)
        self.orders_ = (shown, back)
        self.swap_consistent_ = consistent
        answered = ~(np.isnan(shown).any(axis=1) | np.isnan(back).any(axis=1))
        usage.extra["swap_inconsistent"] = int((answered & ~consistent).sum())
        if progress is not None:
            progress(len(items))
        return probs, usage


def for_task(ctx: Context, cfg: LabelerConfig, model: Any) -> Any:
    """``model`` as the project's task type needs it: unchanged, except in a ``pairwise``
    project, where it becomes a pairwise labeler reading the pairs from the store."""
    if ctx.config.task.type != "pairwise":
        return model
    pairs = store_pairs(ctx.store)
    if isinstance(cfg, EmbeddingLabelerConfig) and isinstance(model, EmbeddingLabeler):
        name = model.model_name
        return PairwiseEmbeddingLabeler(
            model,
            pairs,
            labels=ctx.config.task.label_names,
            regularization=cfg.regularization,
            caches={
                part: StoreEmbeddingCache(ctx.store, f"{name}#pair-{part}") for part in ("prompt", "a", "b")
            },
            cv_folds=cfg.cv_folds,
        )
    if getattr(cfg, "llm", False):
        return PairwiseLLMLabeler(model, pairs)
    raise LabelerError(
        f"labeler {cfg.label_name}: backend {cfg.backend!r} does not label pairs yet; "
        "use embedding, llama or openai in a pairwise project"
    )
