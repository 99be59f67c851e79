"""A span labeler on the frozen encoder: a BIO tag per word from the encoder's token embeddings.

The sentence encoder of the ``embedding`` labeler (all-MiniLM-L6-v2 by default) also gives one
vector per word piece (sentence-transformers' ``output_value="token_embeddings"``); the
tokenizer's offset mapping places each piece in the text. Each word (a word or punctuation mark,
:func:`duolabel.core.spans.tokens`) takes the vector of its first piece, as in BERT's NER
recipe, and one multinomial logistic regression over the tags ``O``, ``B-<label>`` and
``I-<label>`` is trained on the golden items' words. Predicted tags are chunked back into spans.

Confidence follows the least certain word: a span's is the smallest probability of the tag
predicted on any of its words, and an item's (what routing reads) is its least certain span
times the chance that no span was missed, the product over its ``O`` words of ``P(O)`` (words
taken as independent). Words the encoder did not see (past its ``max_seq_length`` pieces) are
``O`` with no confidence, so an item with any gets 0 and goes to people.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from duolabel.core.spans import Span, bio_tags, chunk_tags, tokens
from duolabel.errors import LabelerError, SetupError
from duolabel.labelers.embedding import local_model_folder

__all__ = ["SpanPrediction", "SpanTagger", "WordVectors"]

#: A text's words (character offsets) and one vector per word (NaN where the encoder stopped).
WordVectors = tuple[list[tuple[int, int]], np.ndarray]


@dataclass(frozen=True)
class SpanPrediction:
    """The tagger's answer for one item: its spans, each span's confidence, and the item's."""

    spans: list[Span]
    span_confidence: list[float]
    confidence: float  # least certain span x chance that no span was missed


def decode(
    words: Sequence[tuple[int, int]], probs: np.ndarray, classes: Sequence[str]
) -> tuple[list[Span], list[float], float]:
    """Spans, their confidences and the item's confidence from per-word tag probabilities
    (rows of ``probs``; NaN rows are words the encoder did not see).

    Examples
    --------
    >>> p = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.2, 0.1, 0.7]])
    >>> spans, sure, item = decode([(0, 3), (4, 8), (9, 14)], p, ["B-PER", "I-PER", "O"])
    >>> spans, sure, round(item, 2)  # the span's least sure word 0.8, times P(O) of the last
    ([(0, 8, 'PER')], [0.8], 0.56)
    """
    unseen = np.isnan(probs).any(axis=1)
    picks = np.where(unseen, 0, np.nan_to_num(probs).argmax(axis=1))
    tags = ["O" if gone else classes[k] for gone, k in zip(unseen, picks, strict=True)]
    # A word the encoder did not see is O with no confidence: the item then goes to people.
    sure = [
        0.0 if gone else float(probs[i, k]) for i, (gone, k) in enumerate(zip(unseen, picks, strict=True))
    ]
    spans, least = chunk_tags(tags, words, sure)
    none_missed = float(np.prod([p for tag, p in zip(tags, sure, strict=True) if tag == "O"]))
    return spans, least, (min(least) if least else 1.0) * none_missed


class SpanTagger:
    """BIO tagging on the frozen encoder's token embeddings, one logistic regression over tags.

    ``fit(texts, spans)`` learns from texts with their gold spans; ``predict(texts)`` gives a
    :class:`SpanPrediction` per text. ``C`` is the regression's inverse regularization.

    Examples
    --------
    >>> tagger = SpanTagger().fit(["Alice met Bob", "Carol left"], [[(0, 5, "PER"), (10, 13, "PER")],
    ...                                                             [(0, 5, "PER")]])
    >>> tagger.predict(["Alice met Bob"])[0].spans
    [(0, 5, 'PER'), (10, 13, 'PER')]
    """

    def __init__(self, *, model_path: str | Path | None = None, C: float = 1.0, batch_size: int = 32) -> None:
        self.model_path = model_path
        self.C = C
        self.batch_size = batch_size
        self._encoder: Any = None

    def _load(self) -> Any:
        if self._encoder is None:
            path = local_model_folder(self.model_path)
            try:
                from sentence_transformers import SentenceTransformer
            except ModuleNotFoundError:
                raise SetupError(
                    "the span tagger needs sentence-transformers: pip install sentence-transformers"
                ) from None
            self._encoder = SentenceTransformer(str(path), device="cpu")
        return self._encoder

    def word_vectors(self, texts: Sequence[str]) -> list[WordVectors]:
        """Each text's words and one vector per word (its first piece's; NaN where the encoder
        cut the text off before the word)."""
        encoder = self._load()
        pieces = encoder.tokenizer(
            list(texts), return_offsets_mapping=True, truncation=True, max_length=encoder.max_seq_length
        )["offset_mapping"]
        vectors = encoder.encode(
            list(texts), output_value="token_embeddings", batch_size=self.batch_size, convert_to_numpy=False
        )
        out = []
        for text, offsets, matrix in zip(texts, pieces, vectors, strict=True):
            matrix = matrix.detach().cpu().numpy()
            words = tokens(text)
            found = np.full((len(words), matrix.shape[1]), np.nan, dtype=np.float32)
            j = 0
            for i, (a, b) in enumerate(words):
                # The first piece that overlaps the word (special tokens are (0, 0): skipped).
                while j < len(offsets) and (offsets[j][1] <= a or offsets[j][0] == offsets[j][1]):
                    j += 1
                if j < len(offsets) and offsets[j][0] < b:
                    found[i] = matrix[j]
            out.append((words, found))
        return out

    def fit(self, texts: Sequence[str], spans: Sequence[Sequence[Span]]) -> SpanTagger:
        return self.fit_words(self.word_vectors(texts), spans)

    def fit_words(self, words: Sequence[WordVectors], spans: Sequence[Sequence[Span]]) -> SpanTagger:
        """:meth:`fit` on texts already through :meth:`word_vectors` (cross-fitting encodes once)."""
        from sklearn.linear_model import LogisticRegression

        rows, tags = [], []
        for (positions, vectors), gold in zip(words, spans, strict=True):
            for vector, tag in zip(vectors, bio_tags(gold, positions), strict=True):
                if not np.isnan(vector).any():
                    rows.append(vector)
                    tags.append(tag)
        if len(set(tags)) < 2:
            raise LabelerError("the span tagger needs golden items with at least one span and one other word")
        self.head_ = LogisticRegression(C=self.C, max_iter=1000).fit(np.asarray(rows), tags)
        self.classes_: list[str] = [str(c) for c in self.head_.classes_]
        return self

    def predict(self, texts: Sequence[str]) -> list[SpanPrediction]:
        return self.predict_words(self.word_vectors(texts))

    def predict_words(self, words: Sequence[WordVectors]) -> list[SpanPrediction]:
        """:meth:`predict` on texts already through :meth:`word_vectors`."""
        out = []
        for positions, vectors in words:
            probs = np.full((len(positions), len(self.classes_)), np.nan)
            seen = ~np.isnan(vectors).any(axis=1)
            if seen.any():
                probs[seen] = self.head_.predict_proba(vectors[seen])
            spans, sure, confidence = decode(positions, probs, self.classes_)
            out.append(SpanPrediction(spans, sure, confidence))
        return out
