"""How varied a set of generated texts is, and which of them repeat others: pure functions
over texts and normalised embedding vectors (the synthetic-data checks of issue 16)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["coverage", "distinct_n", "mean_pairwise_distance", "near_duplicates", "normalise_text"]


def normalise_text(text: str) -> str:
    """What makes two texts the same text for exact de-duplication: case and spacing ignored.

    Examples
    --------
    >>> normalise_text("  Great  BOOK! ") == normalise_text("great book!")
    True
    """
    return " ".join(text.lower().split())


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams over all n-grams of ``texts`` (Li et al. 2016): 1 when no word
    n-gram repeats, near 0 when the texts say the same thing; 0 for no n-grams.

    Examples
    --------
    >>> distinct_n(["a b c", "a b d"], 1), distinct_n(["a b c", "a b d"], 2)
    (0.6666666666666666, 0.75)
    """
    grams: list[tuple[str, ...]] = []
    for text in texts:
        words = text.lower().split()
        grams += [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def mean_pairwise_distance(vectors: np.ndarray) -> float:
    """Mean cosine distance (1 - similarity) over all pairs of normalised ``vectors``; 0 for
    fewer than two.

    Examples
    --------
    >>> round(mean_pairwise_distance(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])), 4)
    0.6667
    """
    n = len(vectors)
    if n < 2:
        return 0.0
    sims = vectors @ vectors.T
    return float(1.0 - (sims.sum() - np.trace(sims)) / (n * (n - 1)))


def near_duplicates(
    vectors: np.ndarray, threshold: float, *, reference: np.ndarray | None = None
) -> np.ndarray:
    """Which of ``vectors`` (normalised, in order) to drop: those whose cosine similarity to
    a ``reference`` vector (the real items) or to an earlier kept vector reaches ``threshold``.

    The first of a group of near-duplicates is kept, so the result does not depend on
    anything but the order given.

    Examples
    --------
    >>> v = np.array([[1.0, 0.0], [0.99, 0.141], [0.0, 1.0]])
    >>> near_duplicates(v, 0.95).tolist()
    [False, True, False]
    >>> near_duplicates(v, 0.95, reference=np.array([[0.0, 1.0]])).tolist()
    [False, True, True]
    """
    drop = np.zeros(len(vectors), dtype=bool)
    if len(vectors) == 0:
        return drop
    if reference is not None and len(reference):
        drop |= (vectors @ reference.T).max(axis=1) >= threshold
    kept: list[int] = []
    for i in range(len(vectors)):
        if drop[i]:
            continue
        if kept and float((vectors[kept] @ vectors[i]).max()) >= threshold:
            drop[i] = True
        else:
            kept.append(i)
    return drop


def coverage(kept: Sequence[tuple[str, str | None]], taxonomy: dict[str, list[str]]) -> float:
    """Share of the taxonomy's ``(label, leaf)`` pairs with at least one kept item (``kept``
    holds each kept item's pair); 0 for an empty taxonomy.

    Examples
    --------
    >>> coverage([("book", "sci-fi"), ("book", "sci-fi")], {"book": ["sci-fi", "cookbook"]})
    0.5
    """
    total = {(label, leaf) for label, names in taxonomy.items() for leaf in names}
    if not total:
        return 0.0
    return len(total & set(kept)) / len(total)
