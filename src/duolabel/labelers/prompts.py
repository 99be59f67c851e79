"""Prompts for LLM labelers, built from the project's own words.

The prompt has a stable prefix (instructions and label descriptions) shared by every
item, then the few-shot examples, then the item; the answer is the label name. Keeping
the shared part first lets llama.cpp reuse its KV cache across items.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from duolabel.core.prompt_variants import variant_instructions
from duolabel.errors import LabelerError
from duolabel.labelers.base import TextItem
from duolabel.labelers.fewshot import Demo, Encode, FewShotSelector, FixedDemos

__all__ = ["CONTENT_FREE", "LabelPrompt", "PromptedLabeler", "build_prompt"]

#: The content-free inputs whose label distribution measures a prompt's label bias, as in
#: Zhao et al. (2021), "Calibrate before use" (contextual calibration).
CONTENT_FREE = ("N/A", "", "[MASK]")


@dataclass(frozen=True)
class LabelPrompt:
    """A prompt split where the shared prefix ends, and the text before the answer."""

    prefix: str
    body: str

    @property
    def text(self) -> str:
        return self.prefix + self.body


def _one_line(text: str) -> str:
    return " ".join(text.split())


def build_prompt(
    *,
    instructions: str,
    labels: Sequence[str],
    descriptions: Sequence[str],
    text: str,
    examples: Sequence[tuple[str, str]] = (),
    order: Sequence[int] | None = None,
) -> LabelPrompt:
    """The prompt for one item; ``order`` permutes how the labels are listed.

    Examples
    --------
    >>> p = build_prompt(instructions="Is it spam?", labels=["spam", "ham"],
    ...                  descriptions=["unwanted", "wanted"], text="WIN NOW")
    >>> p.text.splitlines()[-2:]
    ['Text: WIN NOW', 'Label:']
    """
    order = list(order) if order is not None else list(range(len(labels)))
    lines = []
    if instructions:
        lines += [_one_line(instructions), ""]
    lines.append("Possible labels:")
    for i in order:
        desc = _one_line(descriptions[i]) if descriptions[i] else ""
        lines.append(f"- {labels[i]}" + (f": {desc}" if desc else ""))
    lines += ["", "Answer with one label only.", ""]
    prefix = "\n".join(lines) + "\n"
    body = "".join(f"Text: {_one_line(t)}\nLabel: {label}\n\n" for t, label in examples)
    body += f"Text: {_one_line(text)}\nLabel:"
    return LabelPrompt(prefix, body)


@dataclass(kw_only=True, eq=False, repr=False)
class PromptedLabeler:
    """What the LLM labelers share: the project's words their prompts are built from, and
    the few-shot settings.

    A base for labelers that prompt a language model (``llama``, ``openai``); each adds its
    own keyword parameters as dataclass fields. Equality and ``repr`` stay the object's own,
    as for any labeler.

    Parameters
    ----------
    labels : list of str
        The project's labels; probability columns follow this order.
    descriptions : list of str
        One line per label, shown in the prompt; empty for none.
    instructions : str
        The task as the annotators read it; first in the prompt.
    few_shot : int
        Golden examples per prompt, the nearest right before the item; 0 for zero-shot.
    encode : callable, optional
        Items to normalised vectors, for choosing the nearest examples; without it every
        item gets the first ``few_shot`` golden items.
    demos : list of (id, text, label)
        Fixed demonstrations shown before every item instead of the nearest golden items
        (the prompt ``duolabel optimize-prompt`` chose); ``few_shot`` is then unused.
    layout : callable
        Lays out one prompt from :func:`build_prompt`'s keyword arguments; a task type with a
        prompt of its own (pairs: :func:`~duolabel.labelers.llm_pairwise.pair_prompt`) swaps it in.
    contextual : bool
        Contextual calibration (Zhao et al., 2021): divide each distribution by the one the
        same prompt gives to content-free inputs (:data:`CONTENT_FREE`), and renormalise.
    seed : int
        Seed of whatever the labeler draws at random.
    prompt_variants : int
        Fixed paraphrases of the instruction (:meth:`variants`) also scored for every item
        (0: none), in the given label order and without contextual correction. Their
        disagreement with the main distribution and each other is an error signal, kept per
        item id in ``item_features_``
        (:func:`~duolabel.core.prompt_variants.variant_features`); the prediction stays the
        main prompt's. Each is a prompt more per item (``variant_prompts`` in the usage).

    Examples
    --------
    >>> spec = PromptedLabeler(labels=["spam", "ham"], instructions="Is it spam?")
    >>> spec.labels, spec.few_shot
    (['spam', 'ham'], 4)
    >>> spec.prompt("WIN NOW").text.splitlines()[2:4]
    ['Possible labels:', '- spam']
    """

    labels: list[str]
    descriptions: Sequence[str] = ()
    instructions: str = ""
    few_shot: int = 4
    encode: Encode | None = None
    demos: Sequence[Demo] = ()
    contextual: bool = False
    seed: int = 0
    prompt_variants: int = 0
    layout: Callable[..., LabelPrompt] = build_prompt

    def __post_init__(self) -> None:
        # Copies: a caller's list changed later must not change the labeler.
        self.labels = list(self.labels)
        self.descriptions = list(self.descriptions)
        self.demos = [(str(i), str(t), str(label)) for i, t, label in self.demos]
        unknown = sorted({label for _, _, label in self.demos} - set(self.labels))
        if unknown:
            raise LabelerError(f"demonstration labels {unknown} are not among the labels {self.labels}")

    def _selector(self, items: Sequence[TextItem], labels: Sequence[str]) -> FewShotSelector | FixedDemos:
        """Where each item's examples come from: the fixed demonstrations when there are
        some, else the nearest of the golden items given to ``fit``."""
        if self.demos:
            return FixedDemos(self.demos)
        return FewShotSelector(encode=self.encode, k=self.few_shot).fit(items, labels)

    def _prompt_state(self) -> dict[str, Any]:
        """What the prompt options add to the labeler's version: nothing at their defaults,
        so the versions of existing projects do not change."""
        state: dict[str, Any] = {}
        if self.demos:
            state["demos"] = [list(d) for d in self.demos]
        if self.contextual:
            state["contextual"] = list(CONTENT_FREE)
        if self.prompt_variants:  # turning it on relabels
            state["variants"] = self.variants()
        return state

    def variants(self) -> list[str]:
        """The paraphrased instructions scored beside the main one (``prompt_variants``)."""
        return variant_instructions(self.instructions, self.prompt_variants)

    def prompt(
        self,
        text: str,
        examples: Sequence[tuple[str, str]] = (),
        *,
        order: Sequence[int] | None = None,
        instructions: str | None = None,
    ) -> LabelPrompt:
        """The prompt for one item from this labeler's labels, descriptions and instructions
        (``instructions`` replaces the latter)."""
        return self.layout(
            instructions=self.instructions if instructions is None else instructions,
            labels=self.labels,
            descriptions=self.descriptions or [""] * len(self.labels),
            text=text,
            examples=examples,
            order=order,
        )
