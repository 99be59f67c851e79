"""Active-learning strategies: which unlabelled items people should label next to teach the
model most, and when to stop asking.

A strategy is an estimator-free function object with one method, ``select(probs, n, *,
embeddings=None, seed=0) -> indices``: ``probs`` is the current model's ``(n_pool, n_labels)``
distribution over the pool (NaN rows are items the model abstained on), and the result is
``n`` distinct row indices, most useful first. Strategies are registered in :data:`STRATEGIES`
(entry-point group ``duolabel.strategies``); the learning stage that calls them reads the pool
from the store.

The built-ins are the classic uncertainty baselines (Lewis & Gale 1994; Settles 2009) and
random sampling, the baseline every strategy must beat. :func:`stable_predictions` is the
stopping rule of Bloodgood & Vijay-Shanker (2009): stop once successive models agree on a fixed
stop set at Cohen's kappa of at least 0.99.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import numpy as np

from duolabel.core.registry import Registry

__all__ = [
    "STRATEGIES",
    "Entropy",
    "LeastConfidence",
    "Margin",
    "RandomSampling",
    "Strategy",
    "stable_predictions",
]


class Strategy(Protocol):
    """Chooses the next items for people to label."""

    name: ClassVar[str]

    def select(
        self, probs: np.ndarray, n: int, *, embeddings: np.ndarray | None = None, seed: int = 0
    ) -> np.ndarray: ...


STRATEGIES: Registry[type[Strategy]] = Registry("strategy", group="duolabel.strategies")


def _top(scores: np.ndarray, n: int, seed: int) -> np.ndarray:
    """The ``n`` highest scores; ties broken by a seeded shuffle, so the order of the pool
    never decides."""
    order = np.random.default_rng(seed).permutation(len(scores))
    ranked = order[np.argsort(-scores[order], kind="stable")]
    return ranked[: min(n, len(scores))]


class _Uncertainty:
    name: ClassVar[str]

    def uncertainty(self, probs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def select(
        self, probs: np.ndarray, n: int, *, embeddings: np.ndarray | None = None, seed: int = 0
    ) -> np.ndarray:
        probs = np.asarray(probs, dtype=float)
        abstained = np.isnan(probs).any(axis=1)
        scores = np.where(abstained, np.inf, self.uncertainty(np.nan_to_num(probs)))
        return _top(scores, n, seed)  # the model knows least about items it abstained on


@STRATEGIES.register("least_confidence")
class LeastConfidence(_Uncertainty):
    """Items whose top label is least probable.

    Examples
    --------
    >>> LeastConfidence().select(np.array([[0.9, 0.1], [0.5, 0.5], [0.7, 0.3]]), 2).tolist()
    [1, 2]
    """

    name: ClassVar[str] = "least_confidence"

    def uncertainty(self, probs: np.ndarray) -> np.ndarray:
        return 1.0 - probs.max(axis=1)


@STRATEGIES.register("margin")
class Margin(_Uncertainty):
    """Items whose two likeliest labels are closest."""

    name: ClassVar[str] = "margin"

    def uncertainty(self, probs: np.ndarray) -> np.ndarray:
        top2 = np.sort(probs, axis=1)[:, -2:]
        return -(top2[:, 1] - top2[:, 0])


@STRATEGIES.register("entropy")
class Entropy(_Uncertainty):
    """Items whose distribution has the highest entropy."""

    name: ClassVar[str] = "entropy"

    def uncertainty(self, probs: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            logs = np.where(probs > 0, np.log(np.where(probs > 0, probs, 1.0)), 0.0)
        return -(probs * logs).sum(axis=1)


@STRATEGIES.register("random")
class RandomSampling:
    """Uniformly random items: the baseline.

    Examples
    --------
    >>> sorted(RandomSampling().select(np.full((5, 2), 0.5), 5).tolist())
    [0, 1, 2, 3, 4]
    """

    name: ClassVar[str] = "random"

    def select(
        self, probs: np.ndarray, n: int, *, embeddings: np.ndarray | None = None, seed: int = 0
    ) -> np.ndarray:
        return np.random.default_rng(seed).permutation(len(probs))[: min(n, len(probs))]


def stable_predictions(history: list[Any], *, kappa: float = 0.99, window: int = 3) -> bool:
    """Stop once the last ``window`` models agree pairwise on the stop set at Cohen's kappa >= ``kappa``.

    ``history`` holds each successive model's predicted labels on the same fixed stop set (an
    unlabelled sample drawn once). Bloodgood & Vijay-Shanker (2009) bound the change in F-score
    after this point by about 0.04 (see ``anchors-wave2.md``).

    Examples
    --------
    >>> stable_predictions([[0, 1, 1, 0]] * 3)
    True
    >>> stable_predictions([[0, 1, 1, 0], [0, 1, 0, 0], [0, 1, 1, 0]])
    False
    """
    from sklearn.metrics import cohen_kappa_score

    if len(history) < window:
        return False
    last = [np.asarray(h) for h in history[-window:]]
    for a, b in zip(last, last[1:], strict=False):
        if np.array_equal(a, b):
            continue
        if cohen_kappa_score(a, b) < kappa:
            return False
    return True
