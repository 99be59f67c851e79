"""Few-shot examples for LLM labelers, chosen from the golden set by embedding similarity."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from duolabel.labelers.base import TextItem

__all__ = ["Demo", "FewShotSelector", "FixedDemos", "encoder_name"]

Encode = Callable[[Sequence[TextItem]], np.ndarray]
#: A fixed demonstration: the golden item's id, its text and its gold label.
Demo = tuple[str, str, str]


def encoder_name(encode: Encode | None) -> str:
    """Which encoder picks the examples, for version hashes (its ``model_name`` when it has one)."""
    if encode is None:
        return "first-k"
    model = getattr(encode, "model_name", None) or getattr(
        getattr(encode, "__self__", None), "model_name", ""
    )
    return f"{getattr(encode, '__qualname__', type(encode).__name__)}:{model}"


class FewShotSelector:
    """The ``k`` golden items nearest to an item (cosine similarity of normalised embeddings).

    An item is never its own example, so golden items labelled this way get honest,
    leave-one-out predictions for calibration. Examples are listed least similar first,
    so the nearest one sits right before the item.
    """

    def __init__(self, *, encode: Encode | None, k: int = 4) -> None:
        self.encode = encode
        self.k = k

    def fit(self, items: Sequence[TextItem], labels: Sequence[str]) -> FewShotSelector:
        self.items_ = list(items)
        self.labels_ = list(labels)
        if self.k and self.items_ and self.encode is not None:
            self.vectors_ = self.encode(self.items_)
        else:
            self.vectors_ = np.zeros((len(self.items_), 1))
        return self

    def select(self, items: Sequence[TextItem]) -> list[list[tuple[str, str]]]:
        """For each item, its (text, label) examples."""
        if not self.k or not self.items_:
            return [[] for _ in items]
        if self.encode is None:  # no encoder: the first k golden items, in order
            sims = np.zeros((len(items), len(self.items_)))
        else:
            sims = self.encode(items) @ self.vectors_.T
        position = {g.id: i for i, g in enumerate(self.items_)}
        out = []
        for row, item in zip(sims, items, strict=True):
            row = row.copy()
            if item.id in position:
                row[position[item.id]] = -np.inf
            best = np.argsort(-row, kind="stable")[: self.k]
            kept = [int(i) for i in best if np.isfinite(row[i])]
            out.append([(self.items_[i].text, self.labels_[i]) for i in reversed(kept)])
        return out


class FixedDemos:
    """The same demonstrations before every item (a prompt chosen by ``optimize-prompt``).

    An item that is itself one of the demonstrations gets the others, so a golden item is
    never its own example here either.

    Examples
    --------
    >>> demos = FixedDemos([("g1", "WIN NOW", "spam"), ("g2", "see you", "ham")])
    >>> demos.select([TextItem("g1", "WIN NOW", "h"), TextItem("x", "hi", "h")])
    [[('see you', 'ham')], [('WIN NOW', 'spam'), ('see you', 'ham')]]
    """

    def __init__(self, demos: Sequence[Demo]) -> None:
        self.demos = [tuple(d) for d in demos]

    def select(self, items: Sequence[TextItem]) -> list[list[tuple[str, str]]]:
        """For each item, the demonstrations other than itself, as (text, label)."""
        return [[(text, label) for id_, text, label in self.demos if id_ != item.id] for item in items]
