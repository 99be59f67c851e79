"""Prompts for LLM labelers, built from the project's own words.

The prompt has a stable prefix (instructions and label descriptions) shared by every
item, then the few-shot examples, then the item; the answer is the label name. Keeping
the shared part first lets llama.cpp reuse its KV cache across items.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["LabelPrompt", "build_prompt"]


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
