"""Randomized exact binomial p-values for the ``planned-start-randomized`` procedure of the
accepted-items guarantee (``routing.certification``).

The exact binomial test of "the slice's error rate exceeds ``eps``" is discrete: its p-value
``P(X <= x)`` (``X ~ Binomial(n, eps)``) takes only ``n + 1`` values, so at the boundary it
rejects with probability below ``risk``, and a slice one error short of passing wastes that
slack. Lehmann's randomized test closes it: with ``U ~ Uniform(0, 1)`` independent of the
errors,

    p = P(X < x) + U * P(X = x),

which never exceeds the exact p-value, so it certifies at least what the exact test does.

**Why it is valid (one p-value).** Under the boundary rate ``eps``, ``p`` is exactly
Uniform(0, 1): the intervals ``[P(X < x), P(X <= x))`` for ``x = 0 .. n`` tile ``[0, 1)``,
interval ``x`` has the probability ``P(X = x)`` of its count, and ``U`` spreads it uniformly
over it; so ``P(p <= a) = a`` for every ``a``. ``p`` is non-decreasing in ``x`` (for a fixed
``U``), and under a rate above ``eps`` the error count is stochastically larger than at the
boundary, so ``P(p <= a) <= a`` under every null.

**Why fixed-sequence testing stays valid.** The procedure tests the slices from a start
``s`` (chosen from the scores alone, never from ``U`` or from which items the model got
right) loosewards at the whole ``risk`` and stops at the first failure. If any true null is
rejected, the first true null ``i*`` at or after ``s`` (fixed by the truth and ``s``) is
rejected, so ``P(family-wise error) <= P(p_{i*} <= risk) <= risk``. Only each p-value's own
validity is used, whatever the dependence between the slices' p-values, so a single ``U``
shared by every slice is as valid as one per slice. The start must not depend on ``U``:
with ``U`` known, a start can be picked among the slices where ``U`` happens to fall low
enough to pass, and the first true null is then rejected with probability up to
``P(X <= x)`` at its critical count, above ``risk`` (tests/test_randomized.py shows that
variant failing the same check this one passes).

**One shared ``U`` against one per slice.** Both are valid; the shared one gives more and
behaves better. A run passes a boundary slice (exactly its critical count of errors) when
``U`` is below that slice's cut; with a shared ``U`` a run through several boundary slices
passes with probability the smallest cut, with independent ones with their product, never
more. A shared ``U`` also keeps the certificate monotone in it (a smaller ``U`` never
certifies less), so one number states the whole randomization.

**Reproducibility.** ``U`` is a deterministic function of the project
(:func:`project_draw`: the labeler's model version and the golden item ids, hashed), so a
rerun certifies the same threshold, and the certificate states ``U``. It depends neither on
the golden labels nor on the scores (which are cross-fitted on the errors), so it carries
no information about the errors. The guarantee holds once per draw: changing the model
version to get another ``U`` is another test, as retraining until a certificate passes is
with any test.
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["RANDOMIZED", "project_draw", "randomized_error_bound", "randomized_pvalue"]

#: The ``routing.certification`` value that uses these p-values.
RANDOMIZED = "planned-start-randomized"


def randomized_pvalue(errors: np.ndarray, n: np.ndarray, eps: float, draw: float) -> np.ndarray:
    """Lehmann's randomized p-value of "error rate > ``eps``" after ``errors`` wrong out of
    ``n`` items: ``P(X < errors) + draw * P(X = errors)``, ``X ~ Binomial(n, eps)``; 1 where
    ``n`` is 0. ``draw`` in [0, 1] is the shared uniform ``U``; at ``draw = 1`` it is the exact
    p-value ``P(X <= errors)``.

    Examples
    --------
    >>> import numpy as np
    >>> # 22 items, none wrong, at eps 0.1: exact p-value 0.9**22 = 0.098
    >>> [round(float(x), 4) for x in randomized_pvalue(np.array([0, 0, 1]), np.array([22, 22, 22]), 0.1, 0.5)]
    [0.0492, 0.0492, 0.2188]
    >>> float(randomized_pvalue(np.array([0]), np.array([22]), 0.1, 1.0)[0]).__round__(4)
    0.0985
    """
    from scipy.stats import binom

    if not 0.0 <= draw <= 1.0:
        raise ValueError(f"the randomized test's draw must lie in [0, 1], not {draw}")
    errors = np.asarray(errors)
    n = np.asarray(n)
    some = np.maximum(n, 1)
    return np.where(n > 0, binom.cdf(errors - 1, some, eps) + draw * binom.pmf(errors, some, eps), 1.0)


def project_draw(*parts: str) -> float:
    """A uniform number in (0, 1) fixed by ``parts`` (for a project: the labeler's model
    version and the golden item ids), so that a rerun certifies the same threshold; the
    order of ``parts`` matters, so callers sort what has no order.

    Examples
    --------
    >>> project_draw("v1", "item-1", "item-2") == project_draw("v1", "item-1", "item-2")
    True
    >>> 0 < project_draw("v1") < 1 and project_draw("v1") != project_draw("v2")
    True
    """
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    # 53 bits: every double in (0, 1) that the hash can reach, never 0 or 1 exactly.
    return (int.from_bytes(digest[:8], "big") >> 11) / 2.0**53 + 2.0**-54


def randomized_error_bound(errors: int, n: int, risk: float, draw: float) -> float:
    """The upper ``1 - risk`` confidence bound on an error rate that matches the randomized
    test (Stevens' randomized Clopper-Pearson bound): the rate at which the randomized
    p-value of ``errors`` out of ``n`` equals ``risk``; never above the Clopper-Pearson one.

    Examples
    --------
    >>> round(randomized_error_bound(0, 22, 0.0985, 1.0), 3)  # the exact bound: 0.1
    0.1
    >>> randomized_error_bound(0, 22, 0.1, 0.5) < randomized_error_bound(0, 22, 0.1, 1.0)
    True
    """
    from scipy.optimize import brentq

    if n <= 0:
        return 1.0

    def excess(rate: float) -> float:
        return float(randomized_pvalue(np.array([errors]), np.array([n]), rate, draw)[0]) - risk

    # The p-value falls as the rate grows: from 1 at rate 0, or from the draw itself when no
    # item is wrong (then a draw within the risk excludes every rate: the bound is 0); where it
    # is still above the risk at rate 1, no rate is excluded.
    if excess(0.0) <= 0:
        return 0.0
    return 1.0 if excess(1.0) > 0 else float(brentq(excess, 0.0, 1.0, xtol=1e-10))
