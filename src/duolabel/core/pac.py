"""The dataset-level guarantee without golden items: PAC-Labels-style sampling
(``routing.dataset_source: sample``).

PAC Labels (Candès, Ilyas, Zrnic, "Probably Approximately Correct Labels", 2025) certifies the
error of a *whole* labelled data set — the model's labels plus people's — from a random sample
of the items that people label. duolabel's golden variant (:mod:`duolabel.core.guarantee`)
does the same from golden items; this module does it from a sample, for projects without
golden items.

The data set is fixed: ``n`` items with calibrated scores ``s_i``. At threshold ``t`` the model
labels the items with ``s_i >= t`` and people the rest, so the delivered error is

    R(t) = (1/n) * sum_i ( [s_i >= t] * w_i + [s_i < t] * h_i ),

with ``w_i`` whether the model's label is wrong (unknown) and ``h_i`` people's expected error on
item ``i`` (known: from their measured accuracy, or 0 when people are taken as exact). Only the
first sum is unknown. It is estimated from ``m`` items people label, drawn at random, item ``i``
with probability

    q_i = (1 - u) * (1 - s_i) / sum_j (1 - s_j) + u / n,

uncertainty-weighted (the model's errors sit mostly on its uncertain items, so they are drawn
more often) and mixed with the uniform share ``u`` so that every weight ``1 / (n q_i)`` stays at
most ``1 / u``. Weighted draws are independent, with replacement; on the k-th draw ``I_k``,

    Z_k(t) = [s_{I_k} >= t] * w_{I_k} / (n q_{I_k})

has expectation exactly the unknown sum divided by ``n``, whatever the data. The null hypothesis
"``R(t) > eps``" at threshold ``t`` then gets a valid p-value:

- with ``u = 1`` (uniform draws, as PAC Labels' published runs make them; the default) the items
  are drawn *without* replacement, so none is labelled twice, and given how many sampled items a
  threshold accepts, those are a uniform sample without replacement of the items it accepts:
  their count of model errors has an exact hypergeometric law, whose tail at the fewest wrong
  accepted items that break the target is the p-value (exact for the finite data set, tighter
  than the binomial tail of draws with replacement; a threshold that accepts fewer items than
  the target allows to be wrong needs no evidence at all);
- otherwise a betting p-value (Waudby-Smith and Ramdas 2023, "Estimating means of bounded random
  variables by betting"; the bound PAC Labels uses): the capital of a gambler betting, with a
  predictable stake, that the draws' mean is below the null's boundary is a nonnegative
  supermartingale under the null, so by Ville's inequality ``1 / max capital`` is a p-value
  (:func:`betting_pvalue`).

The guarantee is about the data set at hand (the randomness is the sampling alone), not about
items like the golden ones: no exchangeability between golden and unlabelled items is needed.
Thresholds are tested one after the other with the whole risk and stop at the first that cannot
be rejected (fixed-sequence testing), in the order of their *expected* delivered error computed
from the scores and ``h`` alone (the model's expected errors ``1 - s_i`` on the items it accepts):
it does not depend on the sample, so the family-wise error is at most ``risk``. The sampled items
keep people's labels in the delivered data; where people are not exact, their expected errors on
the sampled items the threshold accepts are added to the known part (at most ``m`` such items,
each at most the largest ``h_i`` among the accepted items, so the boundary stays fixed before
sampling). The certificate's own cost is the drawn items the threshold accepts, which people
would not have labelled otherwise.

What people's labels stand for: the drawn items' model errors are judged against people's
aggregated label, as PAC Labels judges against its oracle. With ``people_exact`` that is the
truth; otherwise the certificate bounds the model's disagreement with people on the accepted
items plus people's own expected error on the items they label.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["SampleCertificate", "betting_pvalue", "certify_sample", "draw_sample", "sampling_probabilities"]

#: The default share of uniform sampling in the draw probabilities: weights stay at most 1 / u.
UNIFORM_SHARE = 1.0
# Largest stake, as a fraction of the one that could lose all the capital on one draw (WSR's c).
_STAKE_CAP = 0.75


def sampling_probabilities(scores: np.ndarray, *, uniform_share: float = UNIFORM_SHARE) -> np.ndarray:
    """Draw probabilities ``q`` over the items: uncertainty-weighted (``1 - score``), mixed with
    the uniform distribution in the proportion ``uniform_share`` (in (0, 1]).

    Examples
    --------
    >>> import numpy as np
    >>> q = sampling_probabilities(np.array([1.0, 0.9, 0.6, 0.5]), uniform_share=0.5)
    >>> [round(float(x), 3) for x in q], round(float(q.sum()), 6)
    ([0.125, 0.175, 0.325, 0.375], 1.0)
    """
    if not 0 < uniform_share <= 1:
        raise ValueError(f"uniform_share must be in (0, 1], not {uniform_share}")
    scores = np.asarray(scores, dtype=float)
    n = len(scores)
    uncertainty = np.clip(1.0 - scores, 0.0, None)
    total = float(uncertainty.sum())
    uniform = np.full(n, 1.0 / n)
    if total <= 0 or uniform_share == 1:
        return uniform
    return (1 - uniform_share) * uncertainty / total + uniform_share * uniform


def draw_sample(probabilities: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` draws of item indices from ``probabilities``, in draw order.

    Uniform draws are made without replacement (no item is labelled twice; at most every item),
    weighted ones independently with replacement (the betting p-value reads them in draw order).

    Examples
    --------
    >>> import numpy as np
    >>> draws = draw_sample(np.full(10, 0.1), 5, np.random.default_rng(0))
    >>> len(draws), len(set(draws.tolist())), bool(((draws >= 0) & (draws < 10)).all())
    (5, 5, True)
    """
    n = len(probabilities)
    if np.allclose(probabilities, 1.0 / n):
        return rng.choice(n, size=min(size, n), replace=False)
    return rng.choice(n, size=size, replace=True, p=probabilities)


def betting_pvalue(x: np.ndarray, boundary: np.ndarray | float, risk: float) -> np.ndarray:
    """Betting p-values of "the mean of [0, 1] observations is at least ``boundary``" for each
    row of ``x`` (observations in draw order along the last axis; ``boundary``: one number, or
    one per row).

    The stake follows Waudby-Smith and Ramdas' predictable plug-in rule (a running variance
    estimate, tuned to the level ``risk``, capped so that one draw never loses more than 75% of
    the capital). The capital ``prod (1 - stake * (x - boundary))`` is a nonnegative
    supermartingale when the mean is at least ``boundary``, so ``1 / max capital`` is a valid
    p-value (Ville's inequality), whatever the stake rule.

    Examples
    --------
    >>> import numpy as np
    >>> p = betting_pvalue(np.array([np.zeros(60), np.full(60, 0.2)]), 0.1, 0.1)
    >>> bool(p[0] < 0.01), float(p[1])
    (True, 1.0)
    """
    x = np.atleast_2d(np.asarray(x, dtype=float))
    rows, m = x.shape
    b = np.broadcast_to(np.asarray(boundary, dtype=float), (rows,))
    if m == 0:
        return np.ones(rows)
    # Outside (0, 1) the answer is known: a null at or below 0 always holds, one at or above 1
    # (the largest possible mean) only when every observation is 1; clipping keeps the stakes finite.
    inner = np.clip(b, 1e-12, 1 - 1e-12)[:, None]
    steps = np.arange(1, m + 1)
    mean = (0.5 + np.cumsum(x, axis=-1)) / (1 + steps)
    var = (0.25 + np.cumsum((x - mean) ** 2, axis=-1)) / (1 + steps)
    var_before = np.concatenate([np.full((x.shape[0], 1), 0.25), var[:, :-1]], axis=-1)
    stake = np.minimum(np.sqrt(2 * math.log(1 / risk) / (m * var_before)), _STAKE_CAP / (1 - inner))
    capital = np.cumprod(1 - stake * (x - inner), axis=-1)
    p = np.minimum(1.0, 1.0 / np.maximum(capital.max(axis=-1), 1e-300))
    return np.where(b <= 0, 1.0, np.where(b >= 1, 0.0, p))


@dataclass(frozen=True)
class SampleCertificate:
    """The outcome of the sampling variant: a certified threshold, or why there is none."""

    target: float
    risk: float
    items: int  # items in the data set
    draws: int  # draws of the sample
    sampled: int  # distinct sampled items: people label them
    threshold: float = math.inf  # inf: nothing certified, every item goes to people
    accepted: int = 0  # items the threshold accepts (the model's labels are delivered)
    extra: int = 0  # sampled items the threshold accepts: human labels the certificate itself cost
    estimate: float = 0.0  # the importance-weighted estimate of the delivered error at the threshold
    people_error: float = 0.0  # people's expected error over all items
    people_exact: bool = False
    uniform_share: float = UNIFORM_SHARE
    procedure: str = "sample"

    @property
    def certified(self) -> bool:
        return math.isfinite(self.threshold)

    @property
    def human_labels(self) -> int:
        """Items people label: the routed ones and the sampled ones the model would have labelled."""
        return self.items - self.accepted + self.extra

    def describe(self) -> str:
        goal = (
            f"delivered labels (the model's and people's) at least {self.target:.3g} right with "
            f"probability >= {1 - self.risk:.3g}"
        )
        people = "people taken as exact" if self.people_exact else "model judged against people's labels"
        sample = (
            f"a random sample of {self.sampled} items labelled by people ({self.draws} draws, "
            f"{'uniform' if self.uniform_share == 1 else 'uncertainty-weighted'})"
        )
        if self.certified:
            return (
                f"{goal}: certified at threshold {self.threshold:.4g} from {sample}; {people}; the model "
                f"labels {self.accepted - self.extra} of {self.items} items, the certificate itself cost "
                f"{self.extra} human labels (counted in the delivered data); estimated delivered error "
                f"{self.estimate:.1%}"
            )
        if self.people_error >= 1 - self.target:
            return (
                f"{goal} cannot be certified: people alone are expected to be wrong on "
                f"{self.people_error:.1%} of the items; lower the target or raise the overlap"
            )
        return (
            f"{goal} cannot be certified from {sample}; {people}. Until then the model's labels are "
            "not accepted: every item goes to people"
        )


def certify_sample(
    scores: np.ndarray,
    draws: np.ndarray,
    drawn_wrong: np.ndarray,
    *,
    probabilities: np.ndarray,
    target: float,
    risk: float,
    thresholds: np.ndarray,
    people_error: np.ndarray | float = 0.0,
    people_exact: bool = False,
    uniform_share: float = UNIFORM_SHARE,
) -> SampleCertificate:
    """The loosest threshold on ``thresholds`` at which the delivered data set's error is at
    most ``1 - target`` with probability at least ``1 - risk`` (see the module docstring).

    ``scores`` are every item's calibrated scores, ``draws`` the sampled item indices in draw
    order (from :func:`draw_sample` with ``probabilities``), ``drawn_wrong`` whether the
    model's label was wrong on each draw (by people's label), ``people_error`` people's expected
    error on each item (or one number; ignored when ``people_exact``).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> scores = np.linspace(0.5, 1.0, 1000)
    >>> wrong = scores < 0.6  # the model is wrong on the least confident fifth
    >>> q = sampling_probabilities(scores)
    >>> draws = draw_sample(q, 200, rng)
    >>> cert = certify_sample(scores, draws, wrong[draws], probabilities=q, target=0.95,
    ...                       risk=0.1, thresholds=np.array([np.inf, 0.9, 0.8, 0.7, 0.6, 0.5]),
    ...                       people_exact=True)
    >>> cert.certified, cert.threshold, cert.accepted
    (True, 0.6, 800)
    """
    scores = np.asarray(scores, dtype=float)
    draws = np.asarray(draws, dtype=int)
    drawn_wrong = np.asarray(drawn_wrong, dtype=float)
    q = np.asarray(probabilities, dtype=float)
    n, m = len(scores), len(draws)
    h = np.zeros(n) if people_exact else np.broadcast_to(np.asarray(people_error, dtype=float), (n,))
    eps = 1.0 - target
    sampled = np.unique(draws)
    base = SampleCertificate(
        target, risk, n, m, len(sampled), people_error=float(h.mean()) if n else 0.0,
        people_exact=people_exact, uniform_share=uniform_share,
    )  # fmt: skip
    if n == 0 or m == 0:
        return base
    strict_first = np.unique(np.asarray(thresholds, dtype=float))[::-1]
    # One hypothesis per distinct set of accepted items (its loosest threshold).
    order = np.argsort(-scores, kind="stable")
    counts = np.searchsorted(-scores[order], -strict_first, side="right")
    last = np.append(counts[1:] != counts[:-1], True)
    strict_first, counts = strict_first[last], counts[last]
    # Known part: people's expected errors on the routed items; expected part from the scores.
    people_routed = (h[order].sum() - np.concatenate([[0.0], np.cumsum(h[order])])[counts]) / n
    expected = np.concatenate([[0.0], np.cumsum(1.0 - scores[order])])[counts] / n + people_routed
    # The sampled items the threshold accepts are delivered with people's labels, whose errors
    # the model's part does not count: at most min(m, accepted) of them, each at most the
    # largest of people's expected errors among the accepted items (0 when people are exact).
    h_accepted = np.concatenate([[0.0], np.maximum.accumulate(h[order])])[counts]
    sampled_people = np.minimum(m, counts) * h_accepted / n
    # The null: the model's part of the delivered error is at least this.
    boundary = eps - people_routed - sampled_people
    accepted_draw = scores[draws][None, :] >= strict_first[:, None]  # thresholds x draws
    weights = 1.0 / (n * q[draws])
    uniform = np.allclose(weights, 1.0)
    if uniform:
        from scipy.stats import hypergeom

        if len(sampled) < m:
            raise ValueError("uniform draws must be made without replacement (see draw_sample)")

        # Given how many sampled items a threshold accepts, they are a uniform sample without
        # replacement of the items it accepts: the exact hypergeometric tail of their errors,
        # at the fewest wrong accepted items that break the target (none can when too few are
        # accepted: p-value 0).
        errors = (accepted_draw * drawn_wrong[None, :]).sum(axis=1)
        breaking = np.floor(boundary * n + 1e-9).astype(int) + 1
        tail = hypergeom.cdf(errors, counts, np.minimum(breaking, counts), accepted_draw.sum(axis=1))
        pvalues = np.where(boundary <= 0, 1.0, np.where(breaking > counts, 0.0, tail))
    else:
        z = accepted_draw * (drawn_wrong * weights)[None, :]
        # Each threshold's range bound: the largest weight among the items it accepts.
        w_item = 1.0 / (n * q[order])
        bound = np.maximum(np.concatenate([[1.0], np.maximum.accumulate(w_item)])[counts], 1.0)
        pvalues = betting_pvalue(z / bound[:, None], boundary / bound, risk)
    best = None
    for i in np.argsort(expected, kind="stable"):
        if pvalues[i] > risk:
            break
        if best is None or counts[i] > counts[best]:
            best = i
    if best is None:
        return base
    t = float(strict_first[best])
    estimate = float(
        people_routed[best] + sampled_people[best] + (accepted_draw[best] * drawn_wrong * weights).mean()
    )
    extra = int((scores[sampled] >= t).sum())
    return SampleCertificate(
        target, risk, n, m, len(sampled), t, int(counts[best]), extra, estimate, base.people_error,
        people_exact, uniform_share,
    )  # fmt: skip
