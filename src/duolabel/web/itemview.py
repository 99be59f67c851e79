"""How an item's text is shown to people: one labelled block per configured text field, with
the terms of ``task.highlight`` marked.

Nothing here produces markup: a block is split into ``(text, marked)`` segments and the
template wraps the marked ones in ``<mark>``, with Jinja's autoescaping on every segment, so a
term or a text holding HTML is shown as text and never opens a way to run script.
"""

from __future__ import annotations

import re
from typing import Any

from duolabel.config import TaskConfig
from duolabel.store import Item

__all__ = ["MAX_TERMS", "TERM_SEPARATOR", "cut_blocks", "highlight_terms", "mark_terms", "text_blocks"]

TERM_SEPARATOR = "|"
# A cell is data, not a pattern: terms are matched literally, and a bounded number of them,
# so an item cannot make the page build an enormous regular expression.
MAX_TERMS = 50
_MAX_TERM_CHARS = 200


def text_blocks(item: Item, task: TaskConfig) -> list[dict[str, str]]:
    """The item's text as ``{"field", "text"}`` blocks, one per configured text field that has a
    value (in ``task.text_fields`` order); one block when the project has one text field or
    the item was imported before the fields were kept apart.

    Examples
    --------
    >>> from duolabel.config import TaskConfig
    >>> task = TaskConfig(labels=[{"name": "a"}, {"name": "b"}], text_fields=["title", "body"])
    >>> item = Item(id="1", text="Hi\\n\\nthere", text_parts={"title": "Hi", "body": "there"})
    >>> text_blocks(item, task)
    [{'field': 'title', 'text': 'Hi'}, {'field': 'body', 'text': 'there'}]
    >>> text_blocks(Item(id="2", text="Hi"), task)
    [{'field': 'title / body', 'text': 'Hi'}]
    """
    parts = item.text_parts or {}
    blocks = [{"field": f, "text": str(parts[f])} for f in task.text_fields if parts.get(f) is not None]
    return blocks or [{"field": " / ".join(task.text_fields), "text": item.text}]


def highlight_terms(fields: dict[str, Any] | None, names: list[str]) -> list[str]:
    """The terms to mark: the values of the item's ``names`` fields, a cell split at ``|``
    (at most ``MAX_TERMS``, each stripped and at most 200 characters).

    Examples
    --------
    >>> highlight_terms({"drug": "aspirin", "effect": "rash | hives", "n": 3}, ["drug", "effect"])
    ['aspirin', 'rash', 'hives']
    """
    terms: list[str] = []
    for name in names:
        value = (fields or {}).get(name)
        if value is None:
            continue
        for term in str(value).split(TERM_SEPARATOR):
            term = term.strip()[:_MAX_TERM_CHARS]
            if term and term not in terms:
                terms.append(term)
    return terms[:MAX_TERMS]


def mark_terms(text: str, terms: list[str]) -> list[tuple[str, bool]]:
    """``text`` as segments, each with whether it is one of ``terms`` (case-insensitive, the
    longest term first where two overlap); joined, the segments are ``text`` again.

    Examples
    --------
    >>> mark_terms("Aspirin gave her a rash.", ["rash", "aspirin"])
    [('Aspirin', True), (' gave her a ', False), ('rash', True), ('.', False)]
    >>> mark_terms("<b>x</b>", ["<b>"])  # plain text in, plain text out: the page escapes it
    [('<b>', True), ('x</b>', False)]
    """
    if not terms or not text:
        return [(text, False)]
    pattern = re.compile("|".join(re.escape(t) for t in sorted(terms, key=len, reverse=True)), re.IGNORECASE)
    segments: list[tuple[str, bool]] = []
    at = 0
    for found in pattern.finditer(text):
        if found.start() > at:
            segments.append((text[at : found.start()], False))
        segments.append((found.group(), True))
        at = found.end()
    if at < len(text):
        segments.append((text[at:], False))
    return segments


def cut_blocks(blocks: list[dict[str, str]], limit: int) -> tuple[list[dict[str, str]], int]:
    """The blocks cut to ``limit`` characters in all (later blocks first lose their text) and
    the full length, so a page can offer the rest behind a link.

    Examples
    --------
    >>> cut_blocks([{"field": "a", "text": "abc"}, {"field": "b", "text": "def"}], 4)
    ([{'field': 'a', 'text': 'abc'}, {'field': 'b', 'text': 'd'}], 6)
    """
    total = sum(len(block["text"]) for block in blocks)
    left, kept = limit, []
    for block in blocks:
        if left <= 0:
            break
        kept.append({**block, "text": block["text"][:left]})
        left -= len(block["text"])
    return kept, total
