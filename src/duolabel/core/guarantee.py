"""A guarantee on the whole delivered data set (``routing.guarantee: dataset``).

Target mode's usual promise is about the *accepted* items: the model's labels that are shipped
without people are at least ``target`` right. A user usually asks about the delivered data set
as a whole: the model's labels on the accepted items *and* people's labels on the routed ones.
At threshold ``t`` each item contributes a loss

    loss_i(t) = [s_i >= t] * (model wrong on i) + [s_i < t] * h_i,

where ``h_i`` is the probability that people's aggregated label on item ``i`` is wrong (from
their accuracy measured on control items, or 0 when the user declares people exact). The mean
loss over the items is the delivered data set's error rate, and the certificate states that it
is at most ``1 - target`` with probability at least ``1 - risk``.

It is computed on the golden items, which stand for the items to label (exchangeable with
them), with Learn-then-Test over the fixed threshold grid: each threshold's null hypothesis
"the delivered error exceeds ``eps``" gets a valid p-value for the mean of losses in [0, 1] —
the exact binomial tail when the losses are 0/1 (people exact), else the Hoeffding–Bentkus
p-value (Bates et al. 2021, "Distribution-free, risk-controlling prediction sets") — and the
thresholds are tested one after the other with the whole risk, stopping at the first that cannot
be rejected (fixed-sequence testing: family-wise error at most ``risk`` whatever the dependence
between the tests). The order must not depend on the outcomes the tests count. It is the
*expected* delivered error of each threshold, computed from the calibrated scores (the model's
expected errors on the items it accepts, ``1 - score``) and people's mean error on the items
routed to them, lowest first: the most promising threshold is tested first, at the full risk,
and the search widens from there. Starting at "everything to people" instead certifies nothing
whenever people alone miss the target, even where the model would deliver it; spreading the risk
over several starting points (Wiens' fallback, tried first) left too little at each for 100 golden
items on amazon_isbook to certify in most splits. The
order uses people's *mean* error on the golden items, which the tests also count: a weak
dependence, which ``benchmarks/dataset_guarantee.py`` checks on real crowds over 500 splits.

The PAC Labels procedure (Candès, Ilyas, Zrnic) certifies the same kind of statement without
golden items, from a random sample that people label: :mod:`duolabel.core.pac`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from duolabel.core.ltt import binomial_pvalue

__all__ = ["DatasetCertificate", "certify_dataset", "hb_pvalue"]


def hb_pvalue(mean: float, n: int, eps: float) -> float:
    """Hoeffding–Bentkus p-value of "the mean of [0, 1] losses exceeds ``eps``" after an
    observed mean loss ``mean`` over ``n`` independent items (1 when ``n`` is 0).

    Examples
    --------
    >>> round(hb_pvalue(0.02, 200, 0.1), 6) < 0.001, hb_pvalue(0.12, 200, 0.1)
    (True, 1.0)
    """
    from scipy.stats import binom

    if n == 0 or mean >= eps:
        return 1.0
    a = min(mean, eps)

    def kl(p: float, q: float) -> float:  # Bernoulli KL divergence, h1 in Bates et al.
        left = p * math.log(p / q) if p > 0 else 0.0
        return left + (1 - p) * math.log((1 - p) / (1 - q))

    hoeffding = math.exp(-n * kl(a, eps))
    bentkus = math.e * float(binom.cdf(math.ceil(n * mean), n, eps))
    return min(hoeffding, bentkus, 1.0)


@dataclass(frozen=True)
class DatasetCertificate:
    """The outcome of the dataset-level guarantee: a certified threshold, or why there is none."""

    target: float
    risk: float
    golden: int
    threshold: float = math.inf  # inf: nothing certified, every item goes to people
    accepted: int = 0  # golden items the threshold accepts
    model_errors: int = 0  # of those, the model got wrong
    people_error: float = 0.0  # people's expected error on the golden items routed to them
    delivered_error: float = 0.0  # the observed mean loss at the threshold
    people_exact: bool = False
    procedure: str = "expected-order"

    @property
    def certified(self) -> bool:
        return math.isfinite(self.threshold)

    def describe(self) -> str:
        goal = (
            f"delivered labels (the model's and people's) at least {self.target:.3g} right with "
            f"probability >= {1 - self.risk:.3g}"
        )
        people = "people taken as exact" if self.people_exact else "people's error as measured on controls"
        if self.certified:
            return (
                f"{goal}: certified at threshold {self.threshold:.4g} on {self.golden} golden items "
                f"(the model labels {self.accepted} of them, {self.model_errors} wrong; people's "
                f"expected error on the rest {self.people_error:.1%}; {people}; observed "
                f"delivered error {self.delivered_error:.1%})"
            )
        if self.golden and self.people_error >= 1 - self.target:
            return (
                f"{goal} cannot be certified: people alone are expected to be wrong on "
                f"{self.people_error:.1%} of the items ({people}); lower the target or raise the overlap"
            )
        return (
            f"{goal} cannot be certified with {self.golden} golden items ({people}). Until then the "
            "model's labels are not accepted: every item goes to people"
        )


def certify_dataset(
    scores: np.ndarray,
    model_correct: np.ndarray,
    human_correct: np.ndarray,
    *,
    target: float,
    risk: float,
    thresholds: np.ndarray,
    people_exact: bool = False,
) -> DatasetCertificate:
    """The loosest threshold on ``thresholds`` at which the delivered data set's error is at most
    ``1 - target`` with probability at least ``1 - risk`` (see the module docstring).

    ``scores`` are the golden items' cross-fitted scores, ``model_correct`` whether the model's
    label is right on each, ``human_correct`` the probability that people's aggregated label is
    right on each (ignored when ``people_exact``).

    Examples
    --------
    >>> import numpy as np
    >>> scores = np.linspace(0.5, 1.0, 300)
    >>> right = scores > 0.65  # wrong on the least confident 30%
    >>> cert = certify_dataset(scores, right, np.full(300, 0.97), target=0.9, risk=0.1,
    ...                        thresholds=np.array([np.inf, 0.9, 0.8, 0.7, 0.6, 0.5]))
    >>> cert.certified, cert.threshold, cert.accepted
    (True, 0.7, 180)
    """
    scores = np.asarray(scores, dtype=float)
    wrong = ~np.asarray(model_correct, dtype=bool)
    people_wrong = np.zeros(len(scores)) if people_exact else 1.0 - np.asarray(human_correct, dtype=float)
    n = len(scores)
    eps = 1.0 - target
    people_error = float(people_wrong.mean()) if n else 0.0
    if n == 0:
        return DatasetCertificate(target, risk, 0, people_exact=people_exact)
    order = np.argsort(-scores, kind="stable")
    cum_model = np.concatenate([[0.0], np.cumsum(wrong[order])])
    cum_people = np.concatenate([[0.0], np.cumsum(people_wrong[order])])
    strict_first = np.sort(np.asarray(thresholds, dtype=float))[::-1]
    counts = np.searchsorted(-scores[order], -strict_first, side="right")
    # One hypothesis per distinct set of accepted items (its loosest threshold).
    last = np.append(counts[1:] != counts[:-1], True)
    strict_first, counts = strict_first[last], counts[last]
    loss = cum_model[counts] + cum_people[-1] - cum_people[counts]
    if people_exact or np.isin(people_wrong, (0.0, 1.0)).all():
        # 0/1 losses: the exact binomial tail, tighter than Hoeffding-Bentkus.
        pvalues = binomial_pvalue(np.rint(loss).astype(int), np.full(len(loss), n), eps)
    else:
        pvalues = np.array([hb_pvalue(float(x / n), n, eps) for x in loss])
    # The testing order: expected delivered error from the scores and people's mean error.
    expected = np.concatenate([[0.0], np.cumsum(1.0 - scores[order])])[counts] + (n - counts) * people_error
    best = None
    for i in np.argsort(expected, kind="stable"):
        if pvalues[i] > risk:
            break
        if best is None or counts[i] > best[1]:
            best = (float(strict_first[i]), int(counts[i]), float(loss[i] / n))
    if best is None:
        return DatasetCertificate(target, risk, n, people_error=people_error, people_exact=people_exact)
    threshold, k, mean = best
    routed = n - k
    return DatasetCertificate(
        target,
        risk,
        n,
        threshold,
        k,
        int(cum_model[k]),
        float((cum_people[-1] - cum_people[k]) / routed) if routed else 0.0,
        mean,
        people_exact,
    )
