"""Prompt optimisation for the LLM labelers: instructions x bootstrapped demonstrations,
chosen by cross-validation on the golden items.

The search, BootstrapFewShot-style (Khattab et al., DSPy) but scored the way duolabel's
labelers score:

1. **Folds.** The golden items are split into ``folds`` stratified folds. The configured
   prompt (its instructions and its few-shot selection) is fitted on the other folds and
   predicts each fold: that is the *before* figure, and it marks which golden items the
   current prompt labels right.
2. **Candidates** are instruction variants (the configured one, a few the LLM writes itself
   from the task, the labels and some golden examples, and simple templates) crossed with
   demonstration recipes: the configured nearest-golden selection, none (zero-shot), and
   ``bootstrap:S``, a label-balanced draw (seed ``S``) of golden items the current prompt
   labelled right.
3. **Scoring.** A candidate is scored fold by fold: its demonstrations are drawn from the
   other folds only and it predicts the held-out fold, so no item is ever scored by a
   prompt that shows it as a demonstration. The metric is accuracy, then ECE, then
   log-loss (tie-breaks); the spread is the standard deviation over folds. (Which items
   count as "labelled right" comes from step 1, where an item's nearest examples may lie in
   any other fold; that decides only which items may become demonstrations, never a score.)
4. **The chosen prompt** is the best candidate's instructions and its recipe applied to all
   golden items; it is what ``labeler.prompt`` loads, and it enters the labeler's version.

The winner's cross-validated score is the best of several noisy estimates, so it is
optimistic; held-out items (``benchmarks/prompt_opt.py``) give an unbiased after figure.

Why not DSPy: its optimisers judge a program by a metric over the *generated* answer
(``metric(example, prediction)``; BootstrapFewShot keeps the traces whose generated output
passes it, sampled at temperature 1), and its programs build their own prompts through
signatures and adapters and talk to an LM client. duolabel's labelers never generate an
answer: they score every label's tokens by log-probability (the llama labeler in-process,
where there is no server for DSPy to call), and the probabilities themselves are what is
calibrated. Scoring candidates by ECE and log-loss of those distributions, with the prompt
format the labelers really use, needs the search written against the labelers; it is
small (above), so it is implemented here.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from duolabel.core.calibration import expected_calibration_error
from duolabel.errors import ConfigError, LabelerError
from duolabel.labelers.base import Progress, TextItem, Usage
from duolabel.labelers.fewshot import Demo

__all__ = [
    "Candidate",
    "PromptSearch",
    "bootstrap_demos",
    "instruction_templates",
    "planned_calls",
    "search_prompt",
]

_EPS = 1e-12
CONFIGURED = "configured"  # the labeler's own instructions / example selection
ZERO_SHOT = "zero-shot"
MAX_DEMOS = 8


class SearchLabeler(Protocol):
    """What the search needs of a labeler (the llama and openai labelers have it)."""

    labels: list[str]
    instructions: str
    demos: Sequence[Demo]
    few_shot: int

    def fit(
        self, items: Sequence[TextItem], labels: Sequence[str], *, progress: Progress | None = ...
    ) -> Any: ...

    def predict_proba(
        self, items: Sequence[TextItem], *, progress: Progress | None = ...
    ) -> tuple[np.ndarray, Usage]: ...


@dataclass
class Candidate:
    """One prompt tried: its instructions, its demonstration recipe and its fold scores."""

    name: str
    instructions: str
    recipe: str  # "configured", "zero-shot" or "bootstrap:SEED"
    folds: list[dict[str, float]] = field(default_factory=list)

    def mean(self, metric: str) -> float:
        return float(np.mean([f[metric] for f in self.folds])) if self.folds else math.nan

    def std(self, metric: str) -> float:
        return float(np.std([f[metric] for f in self.folds])) if self.folds else math.nan

    @property
    def key(self) -> tuple[float, float, float]:
        """Sort key, best first: accuracy, then ECE, then log-loss."""
        return (-self.mean("accuracy"), self.mean("ece"), self.mean("nll"))

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        for metric in ("accuracy", "ece", "nll"):
            out[metric], out[f"{metric}_std"] = self.mean(metric), self.std(metric)
        return out


@dataclass
class PromptSearch:
    """What :func:`search_prompt` found: every candidate, the chosen one and its prompt."""

    candidates: list[Candidate]
    chosen: Candidate
    instructions: str
    demos: list[Demo] | None  # None: the configured nearest-golden selection
    zero_shot: bool
    calls: int
    folds: int

    @property
    def before(self) -> Candidate:
        return self.candidates[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "folds": self.folds,
            "calls": self.calls,
            "before": self.before.summary(),
            "after": self.chosen.summary(),
            "chosen": {
                "candidate": self.chosen.name,
                "instructions": self.instructions,
                "demos": [list(d) for d in self.demos] if self.demos is not None else None,
                "zero_shot": self.zero_shot,
            },
            "candidates": [c.summary() for c in self.candidates],
        }


def instruction_templates(labels: Sequence[str], instructions: str) -> list[str]:
    """Simple task-independent instructions, tried beside the configured and generated ones.

    Examples
    --------
    >>> instruction_templates(["spam", "ham"], "Is it spam?")[0]
    'Read the text and choose the one label that describes it best.'
    """
    names = ", ".join(labels)
    out = [
        "Read the text and choose the one label that describes it best.",
        f"Classify the text as one of: {names}.",
    ]
    if instructions:
        out.append(
            f"{' '.join(instructions.split())} Think about what the text is mainly about, then answer."
        )
    return out


def _meta_prompt(
    labels: Sequence[str], descriptions: Sequence[str], instructions: str, examples: Sequence[tuple[str, str]]
) -> str:
    """What the LLM continues to write an instruction (a plain continuation: base models too)."""
    lines = ["We are labelling texts. " + (" ".join(instructions.split()) if instructions else "")]
    lines.append(
        "Labels: "
        + "; ".join(
            f"{label}" + (f" ({d})" if d else "") for label, d in zip(labels, descriptions, strict=True)
        )
    )
    for text, label in examples:
        lines.append(f"Example: {' '.join(text.split())[:200]} -> {label}")
    lines.append("A clear one-sentence instruction for the annotators who choose the label:")
    lines.append("Instruction:")
    return "\n".join(lines)


def _clean_instruction(text: str) -> str | None:
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = re.sub(r"^[\"'*\s-]+|[\"'*\s]+$", "", line)
    return line if 10 <= len(line) <= 300 else None


def _stratified_folds(gold: Sequence[str], folds: int, seed: int) -> list[np.ndarray]:
    """Indices of ``folds`` folds with each label spread evenly over them."""
    rng = np.random.default_rng(seed)
    out: list[list[int]] = [[] for _ in range(folds)]
    start = 0
    for label in sorted(set(gold)):
        mine = [i for i, g in enumerate(gold) if g == label]
        rng.shuffle(mine)
        for j, i in enumerate(mine):
            out[(start + j) % folds].append(i)
        start += len(mine)
    return [np.array(sorted(f), dtype=int) for f in out]


def bootstrap_demos(
    items: Sequence[TextItem],
    gold: Sequence[str],
    right: Sequence[bool],
    *,
    labels: Sequence[str],
    size: int,
    seed: int,
) -> list[Demo]:
    """A label-balanced draw of ``size`` items the current prompt labelled right, in random order.

    Examples
    --------
    >>> items = [TextItem(str(i), f"t{i}", "") for i in range(4)]
    >>> demos = bootstrap_demos(items, ["a", "b", "a", "b"], [True, True, False, True],
    ...                         labels=["a", "b"], size=2, seed=0)
    >>> sorted(d[2] for d in demos)
    ['a', 'b']
    """
    rng = np.random.default_rng(seed)
    pools = {
        label: [i for i, (g, ok) in enumerate(zip(gold, right, strict=True)) if ok and g == label]
        for label in labels
    }
    for pool in pools.values():
        rng.shuffle(pool)
    picked: list[int] = []
    while len(picked) < size and any(pools.values()):
        for label in labels:
            if pools[label] and len(picked) < size:
                picked.append(pools[label].pop())
    rng.shuffle(picked)
    return [(items[i].id, items[i].text, gold[i]) for i in picked]


def _metrics(probs: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """Accuracy (an abstention counts as wrong), ECE and log-loss (an abstention as uniform)."""
    missing = np.isnan(probs).any(axis=1)
    probs = np.where(missing[:, None], 1.0 / probs.shape[1], probs)
    right = (probs.argmax(axis=1) == gold) & ~missing
    rows = np.arange(len(gold))
    return {
        "accuracy": float(right.mean()),
        "ece": float(expected_calibration_error(probs, gold)),
        "nll": float(-np.log(np.clip(probs[rows, gold], _EPS, 1.0)).mean()),
    }


def search_prompt(
    labeler: SearchLabeler,
    items: Sequence[TextItem],
    gold: Sequence[str],
    *,
    descriptions: Sequence[str] = (),
    generate: Callable[[str, int], str] | None = None,
    generated: int = 2,
    bootstraps: int = 2,
    folds: int = 3,
    max_calls: int = 1000,
    seed: int = 0,
    progress: Progress | None = None,
) -> PromptSearch:
    """Search instructions x demonstrations for ``labeler`` on the golden ``items``.

    ``generate(prompt, seed)`` continues a prompt (the labeler's LLM; one call each); None
    tries no generated instructions. ``max_calls`` caps the LLM calls (one per item scored,
    one per instruction generated): candidates that do not fit are not tried, the
    configured prompt always is. The labeler is left configured with the chosen prompt.

    Examples
    --------
    >>> found = search_prompt(labeler, golden, gold, generate=labeler.complete)  # doctest: +SKIP
    >>> found.chosen.mean("accuracy") >= found.before.mean("accuracy")  # doctest: +SKIP
    True
    """
    labels = list(labeler.labels)
    n = len(items)
    folds = min(folds, n // 2)
    if folds < 2:
        raise LabelerError(
            f"prompt optimisation needs at least 4 golden items (got {n}): "
            "add some with 'duolabel import FILE --role golden --gold COLUMN'"
        )
    if max_calls < n:
        raise LabelerError(
            f"--max-calls {max_calls} cannot score the configured prompt once ({n} golden items)"
        )
    gold_idx = np.array([labels.index(g) for g in gold])
    splits = _stratified_folds(gold, folds, seed)
    base_instructions, base_few_shot = labeler.instructions, labeler.few_shot
    base_demos = list(labeler.demos)  # a prompt chosen before is the configured one now
    calls = 0

    def configure(instructions: str, recipe: str, train: np.ndarray, right: np.ndarray) -> None:
        labeler.instructions = instructions
        labeler.few_shot = 0 if recipe == ZERO_SHOT else base_few_shot
        if recipe.startswith("bootstrap:"):
            size = min(MAX_DEMOS, max(len(labels), base_few_shot or 4))
            labeler.demos = bootstrap_demos(
                [items[i] for i in train],
                [gold[i] for i in train],
                right[train].tolist(),
                labels=labels,
                size=size,
                seed=int(recipe.split(":")[1]),
            )
        else:
            labeler.demos = base_demos if recipe == CONFIGURED else []

    def score(candidate: Candidate, right: np.ndarray) -> np.ndarray:
        nonlocal calls
        out = np.full((n, len(labels)), np.nan)
        for test in splits:
            train = np.setdiff1d(np.arange(n), test)
            configure(candidate.instructions, candidate.recipe, train, right)
            labeler.fit([items[i] for i in train], [gold[i] for i in train])
            out[test] = labeler.predict_proba([items[i] for i in test], progress=progress)[0]
            calls += len(test)
            candidate.folds.append(_metrics(out[test], gold_idx[test]))
        return out

    before = Candidate("configured", base_instructions, CONFIGURED)
    oof = score(before, np.zeros(n, dtype=bool))
    right = (np.nan_to_num(oof, nan=-1.0).argmax(axis=1) == gold_idx) & ~np.isnan(oof).any(axis=1)

    instructions: list[tuple[str, str]] = [("configured", base_instructions)]
    if generate is not None:
        examples = [(items[i].text, gold[i]) for i in bootstrap_indices(gold, labels, seed)]
        meta = _meta_prompt(labels, list(descriptions) or [""] * len(labels), base_instructions, examples)
        for k in range(generated):
            if calls + 1 > max_calls:
                break
            text = _clean_instruction(generate(meta, seed + k))
            calls += 1
            if progress is not None:
                progress(1)
            if text and text not in {t for _, t in instructions}:
                instructions.append((f"generated:{k}", text))
    for k, text in enumerate(instruction_templates(labels, base_instructions)):
        if text not in {t for _, t in instructions}:
            instructions.append((f"template:{k}", text))
    recipes = [CONFIGURED, *[f"bootstrap:{seed + s}" for s in range(bootstraps)], ZERO_SHOT]
    if base_few_shot == 0:
        recipes.remove(ZERO_SHOT)  # the configured selection is already none
    # Diagonal order: the most different candidates first, so a small budget still tries both axes.
    plan = sorted(
        ((i, r) for i in range(len(instructions)) for r in range(len(recipes)) if (i, r) != (0, 0)),
        key=lambda ir: (ir[0] + ir[1], ir[1]),
    )
    candidates = [before]
    for i, r in plan:
        if calls + n > max_calls:
            break
        name, text = instructions[i]
        candidate = Candidate(f"{name} + {recipes[r]}", text, recipes[r])
        score(candidate, right)
        candidates.append(candidate)
    chosen = min(candidates, key=lambda c: c.key)
    configure(chosen.instructions, chosen.recipe, np.arange(n), right)
    return PromptSearch(
        candidates=candidates,
        chosen=chosen,
        instructions=chosen.instructions,
        demos=list(labeler.demos) if chosen.recipe.startswith("bootstrap:") else None,
        zero_shot=chosen.recipe == ZERO_SHOT,
        calls=calls,
        folds=folds,
    )


def bootstrap_indices(gold: Sequence[str], labels: Sequence[str], seed: int, per_label: int = 1) -> list[int]:
    """``per_label`` golden items of each label, drawn with ``seed`` (examples shown to the
    LLM that writes instructions)."""
    rng = np.random.default_rng(seed)
    out: list[int] = []
    for label in labels:
        mine = [i for i, g in enumerate(gold) if g == label]
        out += [int(i) for i in rng.permutation(mine)[:per_label]]
    return out


def planned_calls(
    n_golden: int,
    *,
    labels: Sequence[str],
    instructions: str,
    few_shot: int,
    generated: int = 2,
    bootstraps: int = 2,
    max_calls: int = 1000,
) -> int:
    """The most LLM calls :func:`search_prompt` makes with these settings (for a progress bar).

    Examples
    --------
    >>> planned_calls(60, labels=["a", "b"], instructions="", few_shot=4, max_calls=10_000)
    1202
    >>> planned_calls(60, labels=["a", "b"], instructions="", few_shot=4, max_calls=1000)
    962
    """
    tried = 1 + generated + len(instruction_templates(labels, instructions))
    recipes = 1 + bootstraps + (1 if few_shot else 0)
    fits = max(0, (max_calls - n_golden - generated) // max(n_golden, 1))
    return n_golden + generated + n_golden * min(tried * recipes - 1, fits)


def read_prompt(path: Path, *, labels: Sequence[str], where: str = "prompt") -> dict[str, Any]:
    """The labeler options of the prompt chosen in an ``optimize-prompt`` file: its
    ``instructions``, ``demos`` and ``few_shot`` (0 for a zero-shot prompt; absent to keep
    the configured number of nearest golden examples).

    Raises :class:`~duolabel.errors.ConfigError` naming ``where`` and the file when it is
    missing or not such a file.
    """
    try:
        chosen = json.loads(path.read_text(encoding="utf-8"))["chosen"]
        options: dict[str, Any] = {"instructions": str(chosen["instructions"])}
        demos = chosen.get("demos")
        if demos is not None:
            options["demos"] = [(str(i), str(t), str(label)) for i, t, label in demos]
        if chosen.get("zero_shot"):
            options["few_shot"] = 0
    except FileNotFoundError:
        raise ConfigError(
            f"{where}: {path} does not exist; run 'duolabel optimize-prompt' to write it"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{where}: {path} is not a prompt written by 'duolabel optimize-prompt' "
            f"({type(exc).__name__}: {exc})"
        ) from None
    unknown = sorted({d[2] for d in options.get("demos", [])} - set(labels))
    if unknown:
        raise ConfigError(
            f"{where}: {path} has demonstrations labelled {unknown}, not among the labels {list(labels)}"
        )
    return options
