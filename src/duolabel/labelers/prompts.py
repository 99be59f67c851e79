"""Prompts for LLM labelers, built from the project's own words.

The prompt has a stable prefix (instructions and label descriptions) shared by every
item, then the few-shot examples, then the item; the answer is the label name. Keeping
the shared part first lets llama.cpp reuse its KV cache across items.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from duolabel.labelers.fewshot import Encode

__all__ = ["LabelPrompt", "PromptedLabeler", "build_prompt"]


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
    seed : int
        Seed of whatever the labeler draws at random.

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
    seed: int = 0

    def __post_init__(self) -> None:
        # Copies: a caller's list changed later must not change the labeler.
        self.labels = list(self.labels)
        self.descriptions = list(self.descriptions)

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
        return build_prompt(
            instructions=self.instructions if instructions is None else instructions,
            labels=self.labels,
            descriptions=self.descriptions or [""] * len(self.labels),
            text=text,
            examples=examples,
            order=order,
        )
