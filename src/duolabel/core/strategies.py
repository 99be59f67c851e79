"""Active-learning strategies: which unlabelled items people should label next to teach the
model most, and when to stop asking.

A strategy is an estimator-free function object with one method, ``select(probs, n, *,
embeddings=None, seed=0, labeled=None) -> indices``: ``probs`` is the current model's
``(n_pool, n_labels)`` distribution over the pool (NaN rows are items the model abstained on),
``embeddings`` the pool's ``(n_pool, dim)`` vectors, ``labeled`` the vectors of items already
labelled (a strategy may ignore what it does not use), and the result is ``min(n, n_pool)``
distinct row indices, most useful first. Strategies are registered in :data:`STRATEGIES`
(entry-point group ``duolabel.strategies``); the learning stage that calls them reads the pool
from the store.

The built-ins are the classic uncertainty baselines (Lewis & Gale 1994; Settles 2009) and
random sampling, the baseline every strategy must beat; the diversity strategies k-center
greedy (Sener & Savarese 2018) and BADGE (Ash et al. 2020), which need the embeddings; and a
cold start (k-means on the embeddings, one item per cluster) that needs neither labels nor a
model. :func:`stable_predictions` is the
stopping rule of Bloodgood & Vijay-Shanker (2009): stop once successive models agree on a fixed
stop set at Cohen's kappa of at least 0.99.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import numpy as np

from duolabel.core.registry import Registry

__all__ = [
    "STRATEGIES",
    "Badge",
    "ColdStart",
    "Entropy",
    "KCenter",
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
        self,
        probs: np.ndarray | None,
        n: int,
        *,
        embeddings: np.ndarray | None = None,
        seed: int = 0,
        labeled: np.ndarray | None = None,
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
        self,
        probs: np.ndarray | None,
        n: int,
        *,
        embeddings: np.ndarray | None = None,
        seed: int = 0,
        labeled: np.ndarray | None = None,
    ) -> np.ndarray:
        if probs is None:
            raise ValueError(f"the {self.name} strategy needs the model's probabilities")
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
    randomized: ClassVar[bool] = True  # which items, not only their order, depends on the seed

    def select(
        self,
        probs: np.ndarray | None,
        n: int,
        *,
        embeddings: np.ndarray | None = None,
        seed: int = 0,
        labeled: np.ndarray | None = None,
    ) -> np.ndarray:
        size = _pool_size(probs, embeddings)
        return np.random.default_rng(seed).permutation(size)[: min(n, size)]


def _pool_size(probs: np.ndarray | None, embeddings: np.ndarray | None) -> int:
    if probs is not None:
        return len(probs)
    if embeddings is not None:
        return len(embeddings)
    raise ValueError("a strategy needs the pool's probabilities or its embeddings")


def _vectors(embeddings: np.ndarray | None, name: str) -> np.ndarray:
    if embeddings is None:
        raise ValueError(f"the {name} strategy needs the pool's embeddings")
    vectors = np.asarray(embeddings, dtype=np.float64)
    if vectors.ndim != 2 or not np.isfinite(vectors).all():
        raise ValueError(f"the {name} strategy needs finite embeddings of shape (n_pool, dim)")
    return vectors


def _sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows of ``a`` and of ``b`` (never negative)."""
    d = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)


# Why not small-text (1.4.1 installs beside scikit-learn 1.9.1, checked): its
# ``greedy_coreset`` mixes pool-relative and absolute indices once a labelled set is passed and
# recomputes distances to every chosen centre at each step; its BADGE lives in the PyTorch
# integration and needs its own classifier and dataset objects. The versions below work on
# plain arrays, keep one running minimum (k-center) and never build the
# (n_pool, n_labels * dim) gradient matrix (BADGE), so a 16k pool takes about a second.


class _Diverse:
    """The shared front of the embedding strategies: checks the embeddings, caps ``n`` at the
    pool and hands ``pick`` a pool of at least one item and ``1 <= n <= n_pool``."""

    name: ClassVar[str]

    def select(
        self,
        probs: np.ndarray | None,
        n: int,
        *,
        embeddings: np.ndarray | None = None,
        seed: int = 0,
        labeled: np.ndarray | None = None,
    ) -> np.ndarray:
        X = _vectors(embeddings, self.name)
        n = min(n, len(X))
        if n <= 0:
            return np.zeros(0, dtype=int)
        return self.pick(X, n, probs, seed, labeled)

    def pick(
        self, X: np.ndarray, n: int, probs: np.ndarray | None, seed: int, labeled: np.ndarray | None
    ) -> np.ndarray:
        raise NotImplementedError


@STRATEGIES.register("kcenter")
class KCenter(_Diverse):
    """k-center greedy (core-set): each pick is the pool item farthest from everything chosen
    or already labelled, so the picks cover the embedding space (Sener & Savarese 2018).

    Without a labelled set, the first pick is the item nearest the pool's mean. ``probs`` is
    not used (it may be None).

    Examples
    --------
    >>> pool = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    >>> KCenter().select(None, 1, embeddings=pool, labeled=np.array([[0.0, 0.1]])).tolist()
    [3]
    """

    name: ClassVar[str] = "kcenter"

    def pick(
        self, X: np.ndarray, n: int, probs: np.ndarray | None, seed: int, labeled: np.ndarray | None
    ) -> np.ndarray:
        nearest = np.full(len(X), np.inf)
        if labeled is not None and len(labeled):
            seen = np.asarray(labeled, dtype=np.float64)
            for start in range(0, len(seen), 1024):  # bounded memory for a large labelled set
                nearest = np.minimum(nearest, _sq_distances(X, seen[start : start + 1024]).min(axis=1))
            first = int(np.argmax(nearest))
        else:
            first = int(np.argmin(_sq_distances(X, X.mean(axis=0, keepdims=True))[:, 0]))
        picks: list[int] = []
        for _ in range(n):
            pick = first if not picks else int(np.argmax(nearest))
            picks.append(pick)
            nearest = np.minimum(nearest, _sq_distances(X, X[pick : pick + 1])[:, 0])
            nearest[picks] = -np.inf  # duplicates of a pick are at distance 0, never below
        return np.array(picks, dtype=int)


@STRATEGIES.register("badge")
class Badge(_Diverse):
    """BADGE: k-means++ seeding on the gradient embeddings of a linear head (Ash et al. 2020).

    The gradient of the log loss for item *i* with its predicted label as target is
    ``(onehot(argmax p_i) - p_i) ⊗ x_i``: long for uncertain items, pointing in different
    directions for different regions, so the picks are uncertain *and* diverse. Distances
    between gradient embeddings come from ``<g_i, g_j> = <a_i, a_j> <x_i, x_j>``, never the
    ``(n_pool, n_labels * dim)`` matrix itself. Abstentions (NaN rows) count as uniform (the
    most uncertain). The first pick has the longest gradient; the rest are drawn with
    probability proportional to the squared distance to the nearest pick.

    Examples
    --------
    >>> probs = np.array([[0.99, 0.01], [0.5, 0.5], [0.98, 0.02], [0.55, 0.45]])
    >>> pool = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    >>> sorted(Badge().select(probs, 2, embeddings=pool).tolist())
    [1, 3]
    """

    name: ClassVar[str] = "badge"
    randomized: ClassVar[bool] = True

    def pick(
        self, X: np.ndarray, n: int, probs: np.ndarray | None, seed: int, labeled: np.ndarray | None
    ) -> np.ndarray:
        if probs is None:
            raise ValueError("the badge strategy needs the model's probabilities")
        p = np.asarray(probs, dtype=np.float64)
        p = np.where(np.isnan(p).any(axis=1, keepdims=True), 1.0 / p.shape[1], p)
        a = -p
        a[np.arange(len(p)), p.argmax(axis=1)] += 1.0
        norms = (a * a).sum(axis=1) * (X * X).sum(axis=1)  # |g_i|^2

        def sq_to(j: int) -> np.ndarray:  # |g_i - g_j|^2 for every i
            return np.maximum(norms + norms[j] - 2.0 * (a @ a[j]) * (X @ X[j]), 0.0)

        rng = np.random.default_rng(seed)
        picks = [int(np.argmax(norms))]
        nearest = sq_to(picks[0])
        for _ in range(n - 1):
            nearest[picks] = 0.0
            total = nearest.sum()
            if total > 0:
                pick = int(rng.choice(len(X), p=nearest / total))
            else:  # every remaining item duplicates a pick: any of them will do
                pick = int(rng.choice(np.setdiff1d(np.arange(len(X)), picks)))
            picks.append(pick)
            nearest = np.minimum(nearest, sq_to(pick))
        return np.array(picks, dtype=int)


@STRATEGIES.register("cold_start")
class ColdStart(_Diverse):
    """A cold start with no labels and no model: k-means on the embeddings into ``n``
    clusters, and from each the item nearest its centre, the largest cluster first.

    ``probs`` and ``labeled`` are not used (``probs`` may be None).

    Examples
    --------
    >>> pool = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [5.0, 5.0], [5.1, 5.0]])
    >>> sorted(ColdStart().select(None, 2, embeddings=pool).tolist())
    [0, 3]
    """

    name: ClassVar[str] = "cold_start"
    randomized: ClassVar[bool] = True

    def pick(
        self, X: np.ndarray, n: int, probs: np.ndarray | None, seed: int, labeled: np.ndarray | None
    ) -> np.ndarray:
        import warnings

        from sklearn.cluster import KMeans
        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():  # fewer distinct items than n: handled below
            warnings.simplefilter("ignore", ConvergenceWarning)
            kmeans = KMeans(n_clusters=n, n_init=1, random_state=seed).fit(X)
        to_centre = _sq_distances(X, kmeans.cluster_centers_)[np.arange(len(X)), kmeans.labels_]
        sizes = np.bincount(kmeans.labels_, minlength=n)
        picks = []
        for cluster in np.argsort(-sizes, kind="stable"):
            members = np.flatnonzero(kmeans.labels_ == cluster)
            if len(members):
                picks.append(int(members[np.argmin(to_centre[members])]))
        if len(picks) < n:  # empty clusters (duplicate items): fill with random others
            rest = np.setdiff1d(np.arange(len(X)), picks)
            picks += np.random.default_rng(seed).permutation(rest)[: n - len(picks)].tolist()
        return np.array(picks, dtype=int)


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
