"""The Labeler interface: a distribution over the project's labels for every item."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from duolabel.errors import LabelerError

__all__ = ["Labeler", "LabelingStopped", "TextItem", "TrainableLabeler", "Usage"]

Progress = Callable[[int], None]


@dataclass(frozen=True)
class TextItem:
    """What a labeler sees of an item: its stable id, text and content hash (for caches)."""

    id: str
    text: str
    content_hash: str = ""


@dataclass
class Usage:
    """Resources one labeler call used; summed into the runs ledger."""

    items: int = 0
    seconds: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cached: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    def add(self, other: Usage) -> Usage:
        self.items += other.items
        self.seconds += other.seconds
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cached += other.cached
        for key, value in other.extra.items():
            self.extra[key] = self.extra.get(key, 0.0) + value
        return self

    def as_dict(self) -> dict[str, float]:
        return {
            "items": self.items,
            "seconds": round(self.seconds, 3),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached": self.cached,
            **self.extra,
        }


class LabelingStopped(LabelerError):
    """A run stopped early (budget reached, server gone); what was answered is kept.

    ``partial`` is ``(probs, usage)``: the probabilities of the first ``done`` items, in
    the order given (the longest answered prefix), and the usage of the whole call.
    Items answered beyond that prefix are in the response cache, so running the same
    items again continues without paying for them twice.
    """

    def __init__(self, message: str, *, probs: np.ndarray, usage: Usage) -> None:
        super().__init__(message)
        self.partial = (probs, usage)
        self.done = len(probs)


@runtime_checkable
class Labeler(Protocol):
    """Anything that turns items into probabilities over ``labels``.

    ``predict_proba`` returns an array of shape ``(len(items), len(labels))`` whose rows
    sum to 1, in the order of ``labels``, and the usage of the call. A labeler never
    returns free text and never guesses: a row of NaN is an abstention (the model gave
    no usable answer for that item), and the item goes to people.

    A trainable labeler's ``fit`` sets ``version_`` (a short hash of everything that
    determines its outputs) and may set ``oof_proba_``, out-of-fold probabilities for the
    items it was fitted on; one without it must give those items honest predictions
    from ``predict_proba`` (for instance never using an item as its own example).
    """

    labels: list[str]

    def predict_proba(
        self, items: Sequence[TextItem], *, progress: Progress | None = None
    ) -> tuple[np.ndarray, Usage]: ...


@runtime_checkable
class TrainableLabeler(Labeler, Protocol):
    """A labeler that learns from labelled items; ``fit`` returns ``self``."""

    def fit(
        self, items: Sequence[TextItem], labels: Sequence[str], *, progress: Progress | None = None
    ) -> TrainableLabeler: ...
