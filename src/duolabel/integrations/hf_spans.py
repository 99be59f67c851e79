"""Hugging Face token-classification datasets for a ``spans`` project.

NER data sets on the Hub (CoNLL-2003, WikiANN, ...) come as words and one BIO tag per word:
a ``tokens`` column (a list of strings) and a tag column that is a list of ``ClassLabel`` ids
whose names are ``O``, ``B-<label>`` and ``I-<label>``. Such a row becomes an item whose text is
the words joined by single spaces and whose tag column holds the spans the tags mark (CoNLL
chunking, :func:`duolabel.core.spans.chunk_tags`), with character offsets into that text; the
tag column can then be the gold column as in any import. Datasets that already hold
``{"start", "end", "label"}`` lists need nothing of this: they import as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from duolabel.core.spans import chunk_tags

__all__ = ["TokenTags", "span_row", "token_tags"]

_WORDS = ("tokens", "words")


@dataclass(frozen=True)
class TokenTags:
    """Where a token-classification dataset keeps its words and tags, and the tags' names."""

    words: str
    tags: str
    names: list[str]


def token_tags(features: Any) -> TokenTags | None:
    """The words and BIO tag columns of a dataset's ``features``; None when it has none.

    Examples
    --------
    >>> from datasets import ClassLabel, Features, List, Value
    >>> token_tags(Features({"tokens": List(Value("string")),
    ...                      "ner_tags": List(ClassLabel(names=["O", "B-PER", "I-PER"]))}))
    TokenTags(words='tokens', tags='ner_tags', names=['O', 'B-PER', 'I-PER'])
    """
    words = next((c for c in _WORDS if c in features), None)
    if words is None:
        return None
    for column, feature in features.items():
        inner = getattr(feature, "feature", None)
        names = getattr(inner, "names", None)
        if (
            type(inner).__name__ == "ClassLabel"
            and names
            and all(n == "O" or n[:2] in ("B-", "I-") for n in names)
        ):
            return TokenTags(words, column, list(names))
    return None


def span_row(record: dict[str, Any], shape: TokenTags, text_field: str) -> dict[str, Any]:
    """A row of words and tag ids as a row of text (in ``text_field``) and spans (in the tag
    column); a row whose columns are not lists is left for the importer to report.

    Examples
    --------
    >>> shape = TokenTags("tokens", "ner_tags", ["O", "B-PER", "I-PER", "B-LOC"])
    >>> row = span_row({"tokens": ["Ann", "Lee", "in", "Rome"], "ner_tags": [1, 2, 0, 3]}, shape, "text")
    >>> row["text"], row["ner_tags"][1]
    ('Ann Lee in Rome', {'start': 11, 'end': 15, 'label': 'LOC'})
    """
    words, tags = record.get(shape.words), record.get(shape.tags)
    if not isinstance(words, list) or not isinstance(tags, list) or len(words) != len(tags):
        return record
    pieces, at = [], 0
    for word in words:
        pieces.append((at, at + len(str(word))))
        at += len(str(word)) + 1
    names = [shape.names[t] if isinstance(t, int) and 0 <= t < len(shape.names) else "O" for t in tags]
    spans, _ = chunk_tags(names, pieces)
    out = {k: v for k, v in record.items() if k != shape.words}
    out[shape.tags] = [{"start": s, "end": e, "label": label} for s, e, label in spans]
    out.setdefault(text_field, " ".join(str(w) for w in words))
    return out
