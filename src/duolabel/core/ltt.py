"""Learn-then-Test on a fixed threshold grid: per-threshold p-values and a family-wise
procedure that can certify small confident slices (used by target mode,
:func:`duolabel.core.operating.certify_target`).

Each candidate threshold ``t`` carries a null hypothesis "the items scoring at least ``t``
have an error rate above ``eps``". Its p-value is the exact binomial tail
(:func:`binomial_pvalue`): the tightest valid p-value for a count of independent errors,
tighter than Hoeffding, Bentkus or their combination, which bound the same tail.

Thresholds are tested from the strictest down with Wiens' *fallback procedure* (Wiens 2003;
Wiens and Dmitrienko 2005), a closed weighted-Bonferroni procedure that controls the
family-wise error at ``risk`` whatever the dependence between the p-values. Plain
fixed-sequence testing (all of ``risk`` on the first hypothesis, stop at the first failure)
has to start where slices are large enough to pass (duolabel started at half of the golden
items), so a small confident slice is never certified, and one unlucky error at the start
certifies nothing. The fallback procedure spreads ``risk`` over a few *anchors* (slices of
halving size, :func:`anchor_weights`) and passes a rejected hypothesis's level on to the
next one, so a run of rejections accumulates the levels of the anchors it passed, and a
failure loses only the level of its own anchor. The anchors depend on the number of golden
items alone, never on the target or on which items the model got right, so the guarantee
holds without a Bonferroni penalty on the grid, and a higher target never accepts more.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["anchor_weights", "binomial_pvalue", "fallback_rejections"]

# Smallest slice that gets a share of the risk: below it not even an error-free slice passes
# at a useful level for ordinary targets (at target 0.7 and a fifth of risk 0.1, eleven items).
MIN_ANCHOR = 8


def binomial_pvalue(errors: np.ndarray, n: np.ndarray, eps: float) -> np.ndarray:
    """P-value of "error rate > ``eps``" after ``errors`` wrong out of ``n`` independent
    items: the exact binomial tail ``P(Binomial(n, eps) <= errors)``; 1 where ``n`` is 0.

    Examples
    --------
    >>> import numpy as np
    >>> p = binomial_pvalue(np.array([0, 1, 0]), np.array([22, 22, 0]), 0.1)
    >>> [round(float(x), 4) for x in p]
    [0.0985, 0.3392, 1.0]
    """
    from scipy.stats import binom

    errors = np.asarray(errors)
    n = np.asarray(n)
    return np.where(n > 0, binom.cdf(errors, np.maximum(n, 1), eps), 1.0)


def anchor_weights(counts: np.ndarray, *, min_anchor: int = MIN_ANCHOR) -> np.ndarray:
    """Initial shares of the risk over a sequence of slices (``counts``: items accepted,
    non-decreasing, the last being every item).

    The anchors are the first slices holding at least ``total / 2**j`` items for ``j = 1, 2,
    ...`` while that is at least ``min_anchor`` (always ``j = 1``); anchor ``j`` gets a share
    proportional to ``3**-j``. So the slice of half the items, where the procedure before
    put all of the risk, keeps about two thirds of it, and once the smaller, more confident
    slices are rejected their shares flow on to it; each smaller anchor gets a third of the
    share of the next larger one. Zero elsewhere.

    Examples
    --------
    >>> import numpy as np
    >>> w = anchor_weights(np.arange(1, 41))  # slices of 20, 10 and 5 items; 5 is too small
    >>> w.nonzero()[0] + 1, w[[19, 9]].round(3)
    (array([10, 20]), array([0.75, 0.25]))
    """
    counts = np.asarray(counts)
    weights = np.zeros(len(counts))
    if not len(counts):
        return weights
    size, j = int(counts[-1]) / 2, 1
    while j == 1 or size >= min_anchor:
        i = int(np.searchsorted(counts, math.ceil(size - 1e-9), side="left"))
        weights[min(i, len(counts) - 1)] += 3.0**-j
        size, j = size / 2, j + 1
    return weights / weights.sum()


def fallback_rejections(pvalues: np.ndarray, weights: np.ndarray, risk: float) -> np.ndarray:
    """Which hypotheses the fallback procedure rejects at family-wise level ``risk``.

    Hypothesis ``i`` is tested at ``risk * weights[i]``, plus the level of hypothesis
    ``i - 1`` when that one was rejected; ``weights`` sum to at most 1.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.array([0.2, 0.04, 0.09, 0.3, 0.06])
    >>> fallback_rejections(p, np.array([0.5, 0.0, 0.0, 0.0, 0.5]), 0.1).tolist()
    [False, False, False, False, False]
    >>> fallback_rejections(p, np.array([0.0, 0.5, 0.5, 0.0, 0.0]), 0.1).tolist()
    [False, True, True, False, False]
    """
    rejected = np.zeros(len(pvalues), dtype=bool)
    carried = 0.0
    for i, (p, w) in enumerate(zip(pvalues, weights, strict=True)):
        level = risk * w + carried
        rejected[i] = level > 0 and p <= level
        carried = level if rejected[i] else 0.0
    return rejected
