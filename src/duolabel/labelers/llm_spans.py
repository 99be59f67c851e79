"""Span extraction with the LLM labelers' models: entities asked for as JSON, placed in the text.

The ``llama`` and ``openai`` labelers score labels and never write; for a ``spans`` task the
same models are asked (through :mod:`duolabel.labelers.generation`, which continues a prompt to
the end of its line) to list the item's entities as a one-line JSON list of
``{"text", "label"}``. The model's offsets are never trusted, it gives none: each entity's
text is looked up in the item's text (the k-th mention of the same text is its k-th
occurrence), so every span kept lies in the text and covers exactly what the model named.
What cannot be placed is an abstention, never a guess: an entity whose text is not in the
item, a label that is not the project's, or a malformed entry is left out and counted, and a
reply with no JSON list at all abstains on the whole item (people decide).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from duolabel.core.spans import Span
from duolabel.labelers.generation import TextGenerator

__all__ = ["Extraction", "extract_spans", "extraction_prompt", "place_entities"]


@dataclass
class Extraction:
    """One item's extraction: the spans placed in its text, what was left out and why, and
    whether the model abstained on the whole item (no JSON list in its reply)."""

    spans: list[Span] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)
    abstained: bool = False
    reply: str = ""


def extraction_prompt(text: str, labels: Sequence[str], instructions: str = "") -> str:
    """The prompt that asks for the entities of ``text`` as a one-line JSON list.

    Examples
    --------
    >>> print(extraction_prompt("Alice flew to Paris.", ["LOC", "PER"]))
    Mark every entity in the text with one of the labels: LOC, PER.
    Answer with one line: a JSON list like [{"text": "copied words", "label": "LOC"}], [] if none.
    <BLANKLINE>
    Text: Alice flew to Paris.
    Entities: [
    """
    # The format only, no worked example: an example's entities would have to claim what the
    # project's labels mean, and a wrong claim misleads a small model more than none.
    head = f"{instructions.strip()}\n" if instructions.strip() else ""
    shape = json.dumps([{"text": "copied words", "label": labels[0]}], ensure_ascii=False)
    return (
        f"{head}Mark every entity in the text with one of the labels: {', '.join(labels)}.\n"
        f"Answer with one line: a JSON list like {shape}, [] if none.\n\n"
        # The list is opened for the model: a small one otherwise often ends the line at once.
        f"Text: {text}\nEntities: ["
    )


def _values(reply: str, opener: str, start: int = 0) -> Iterator[Any]:
    """Each JSON value that starts at an ``opener`` character of ``reply`` (from ``start``),
    in order; a value found is skipped over, not searched inside."""
    decoder = json.JSONDecoder()
    at = reply.find(opener, start)
    while at != -1:
        try:
            value, length = decoder.raw_decode(reply[at:])
        except json.JSONDecodeError:
            at = reply.find(opener, at + 1)
            continue
        yield value
        at = reply.find(opener, at + length)


def _json_list(reply: str) -> list[Any] | None:
    # The first JSON list in the reply (small models add words around it); failing that, the
    # whole objects of a list cut short (the token limit, or a model that never closes it).
    found = next(_values(reply, "["), None)
    if isinstance(found, list):
        return found
    opened = reply.find("[")
    objects = [v for v in _values(reply, "{", opened) if isinstance(v, dict)] if opened != -1 else []
    return objects or None


def place_entities(reply: str, text: str, labels: Sequence[str]) -> Extraction:
    """The spans of ``reply`` (the model's JSON list of ``{"text", "label"}``) in ``text``.

    Examples
    --------
    >>> x = place_entities('[{"text": "Paris", "label": "LOC"}, {"text": "Paris", "label": "LOC"},'
    ...                    ' {"text": "Lyon", "label": "LOC"}, {"text": "Al", "label": "DOG"}]',
    ...                    "Paris, then Paris again", ["LOC", "PER"])
    >>> x.spans, x.left_out
    ([(0, 5, 'LOC'), (12, 17, 'LOC')], ["'Lyon' is not in the text", "label 'DOG' is not one of LOC, PER"])
    >>> place_entities("no idea", "Paris", ["LOC"]).abstained
    True
    >>> place_entities('[{"text": "Paris", "label": "LOC"}, {"text": "Pa', "Paris", ["LOC"]).spans
    [(0, 5, 'LOC')]
    """
    found = _json_list(reply)
    if found is None:
        return Extraction(abstained=True, reply=reply)
    out = Extraction(reply=reply)
    used: dict[str, int] = {}  # entity text -> where its next mention is looked for
    for entry in found:
        if not isinstance(entry, dict) or not isinstance(entry.get("text"), str):
            out.left_out.append(
                f"{json.dumps(entry, ensure_ascii=False)[:60]} is not a {{text, label}} object"
            )
            continue
        name, label = entry["text"].strip(), entry.get("label")
        if not isinstance(label, str) or label not in labels:
            out.left_out.append(f"label {label!r} is not one of {', '.join(labels)}")
            continue
        if not name:
            out.left_out.append("an empty entity text")
            continue
        at = text.find(name, used.get(name, 0))
        if at < 0:
            out.left_out.append(
                f"{name!r} is not in the text" if name not in text else f"{name!r}: no more mentions"
            )
            continue
        used[name] = at + len(name)
        span = (at, at + len(name), label)
        if span not in out.spans:
            out.spans.append(span)
    out.spans.sort()
    return out


def extract_spans(
    generator: TextGenerator,
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    instructions: str = "",
    max_tokens: int = 200,
    seed: int = 0,
) -> list[Extraction]:
    """Ask ``generator`` (:func:`duolabel.labelers.generation.generator_for` a built ``llama`` or
    ``openai`` labeler) for each text's entities, greedily, and place them in the text. The
    prompt opens the list, so each reply is read with its ``[``."""
    out = []
    for text in texts:
        prompt = extraction_prompt(text, labels, instructions)
        written = generator.generate(prompt, max_tokens=max_tokens, temperature=0.0, seed=seed).text
        out.append(place_entities("[" + written, text, labels))
    return out
