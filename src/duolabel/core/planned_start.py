"""The ``planned-start`` procedure of the accepted-items guarantee (``routing.certification``):
fixed-sequence testing from the slice where the scores expect the most accepted items, that
expectation computed exactly.

``expected-start`` (:func:`duolabel.core.operating.certify_target`) takes a run's chance to
pass every test from its start on as the chance of its least likely test. Here it is the
exact probability, under the calibrated scores (item ``i`` wrong with probability
``1 - score_i``, independently): the distribution of the error count is carried along the
slices, and at each tested slice the counts that fail its test are dropped
(:func:`run_pass_probabilities`). The start maximises the expected accepted items
(:func:`planned_start`). Like ``expected-start`` it depends on the scores alone, never on
which golden items the model got right, so the family-wise error stays at most ``risk``; and
like it, a higher target can accept more items (the start depends on the target).

On the 500 splits per data set of benchmarks/routing_waste.py it accepted more test items
than ``expected-start``: 2.0 points more on emotion, 0.8 on medrel and 0.5 on amazon_isbook
(paired means; standard errors 0.4, 0.5 and 0.3). The exact computation costs about
``slices x items`` vector steps of ``items`` each (about a second at 1,000 golden items), so
above :data:`EXACT_LIMIT` items, and for the "golden items needed" estimate, the start is
``expected-start``'s.
"""

from __future__ import annotations

import numpy as np

__all__ = ["EXACT_LIMIT", "passing_errors", "planned_start", "run_pass_probabilities"]

#: Golden items above which the start is chosen by ``expected-start``'s approximation.
EXACT_LIMIT = 1000


def passing_errors(counts: np.ndarray, eps: float, risk: float) -> np.ndarray:
    """The largest error count each slice of ``counts`` items may hold and still pass its
    exact binomial test of "error rate > ``eps``" at ``risk`` (-1: none passes).

    Examples
    --------
    >>> import numpy as np
    >>> passing_errors(np.array([10, 22, 38, 100]), 0.1, 0.1).tolist()
    [-1, 0, 1, 5]
    """
    from scipy.stats import binom

    counts = np.asarray(counts)
    limit = binom.ppf(risk, counts, eps).astype(int)
    return limit - (binom.cdf(limit, counts, eps) > risk)


def run_pass_probabilities(error_probs: np.ndarray, counts: np.ndarray, limits: np.ndarray) -> np.ndarray:
    """Probability that a run passes every test up to each slice: element ``i`` is the
    chance that each of the first ``i + 1`` slices (``counts`` items, non-decreasing) holds
    at most ``limits`` errors, item ``k`` being wrong with probability ``error_probs[k]``,
    independently.

    Examples
    --------
    >>> import numpy as np
    >>> # Two items wrong with probability 0.5: the first slice (one item) passes with no
    >>> # error, the second (both) with at most one.
    >>> run_pass_probabilities(np.array([0.5, 0.5]), np.array([1, 2]), np.array([0, 1])).tolist()
    [0.5, 0.5]
    """
    q = np.clip(np.asarray(error_probs, dtype=float), 0.0, 1.0)
    return _through_from(np.array([1.0]), 0, q, np.asarray(counts), np.asarray(limits))


def planned_start(sorted_scores: np.ndarray, counts: np.ndarray, eps: float, risk: float) -> int:
    """Index into ``counts`` (accepted items per slice, strictest first) of the start that
    maximises the expected accepted items of fixed-sequence testing from it: the sum over
    slices of the items a run accepts when it stops there.

    Examples
    --------
    >>> import numpy as np
    >>> scores = np.sort(np.random.default_rng(0).beta(9, 1, 150))[::-1]
    >>> counts = np.arange(1, 151)
    >>> int(counts[planned_start(scores, counts, eps=0.07, risk=0.1)])  # of 150: mean error 0.1
    55
    """
    q = np.clip(1.0 - np.asarray(sorted_scores, dtype=float), 0.0, 1.0)
    counts = np.asarray(counts)
    limits = passing_errors(counts, eps, risk)
    best, start = -1.0, 0
    before, position = np.array([1.0]), 0  # error count's distribution over the first items
    for j in np.flatnonzero(limits >= 0):
        # The items before the start are not tested: their errors only shift the count.
        before = _add_items(before, q[position : counts[j]])
        position = int(counts[j])
        through = _through_from(before, position, q, counts[j:], limits[j:])
        stops = through - np.append(through[1:], 0.0)  # P(the run ends at each slice)
        worth = float((counts[j:] * stops).sum())
        if worth > best:
            best, start = worth, int(j)
    return start


def _add_items(dist: np.ndarray, error_probs: np.ndarray) -> np.ndarray:
    """The error count's distribution after items wrong with ``error_probs``, independently."""
    out = np.concatenate([dist, np.zeros(len(error_probs))])
    for qk in error_probs:
        out[1:] = out[1:] * (1 - qk) + out[:-1] * qk
        out[0] *= 1 - qk
    return out


def _through_from(
    before: np.ndarray, position: int, q: np.ndarray, counts: np.ndarray, limits: np.ndarray
) -> np.ndarray:
    """The chance of passing every test up to each slice of ``counts``, given the error
    count's distribution ``before`` over the first ``position`` items."""
    dist = before.copy()
    through = np.zeros(len(counts))
    for i, (count, limit) in enumerate(zip(counts, limits, strict=True)):
        dist = _add_items(dist, q[position:count])
        position = int(count)
        dist[max(int(limit) + 1, 0) :] = 0.0
        through[i] = dist.sum()
        if through[i] < 1e-12:
            break
    return through
