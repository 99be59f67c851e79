"""Choosing the operating point: the quality-versus-human-share curve measured on golden
items, and the ways of picking a threshold on it (:func:`choose_operating_point` is the one
entry, used by the route stage and by ``simulate`` alike).

Every policy reduces to a score per item (calibrated confidence, or one minus the
meta-router's predicted error) and a threshold: items scoring at least the threshold
keep the model's label, the rest go to people. The golden items' cross-fitted scores,
whether the model was right on them, and how likely people are to be right on them
are all this module needs.

- **target**: the cheapest threshold whose accuracy on the accepted items is at least the
  target with probability at least ``1 - risk`` (Learn-then-Test: an exact binomial
  (Clopper-Pearson) test per threshold, with the fallback procedure from the strictest
  threshold down, :mod:`duolabel.core.ltt`, so no Bonferroni correction over the grid);
- **budget**: the best expected accuracy whose expected cost fits the budget;
- **cost**: the cheapest threshold at which the hybrid is at least as accurate as people
  alone with probability at least ``1 - risk`` (an exact binomial test of the model's accuracy
  on the accepted items against people's on the same items, with the same fixed-sequence
  testing as target mode);
- **fixed**: the configured threshold.

Target mode's promise is about the accepted items, or, with ``guarantee="dataset"``, about the
whole delivered data set, people's labels included (:mod:`duolabel.core.guarantee`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from duolabel.core.guarantee import DatasetCertificate, certify_dataset
from duolabel.core.ltt import anchor_weights, binomial_pvalue, fallback_rejections
from duolabel.core.planned_start import EXACT_LIMIT, planned_start
from duolabel.core.randomized import RANDOMIZED, randomized_error_bound, randomized_pvalue

__all__ = [
    "GRID",
    "CostCertificate",
    "CurvePoint",
    "OperatingPoint",
    "TargetCertificate",
    "certify_target",
    "choose_best",
    "choose_budget",
    "choose_cost",
    "choose_operating_point",
    "golden_needed",
    "hindsight_human_share",
    "majority_accuracy",
    "quality_curve",
]

# Candidate thresholds, fixed before any data is seen (the guarantee needs a grid that does
# not depend on which golden items the model got right): a uniform grid plus points close
# to 1 where confident models put most items, and +inf (accept nothing).
GRID = np.unique(np.concatenate([np.linspace(0.0, 1.0, 1001), 1.0 - np.logspace(-9, -3, 61), [np.inf]]))


@dataclass(frozen=True)
class CurvePoint:
    """One threshold on the curve; shares and accuracies are fractions of golden items."""

    threshold: float
    model_share: float
    model_accuracy: float  # accuracy on the accepted items (nan when none is accepted)
    hybrid_accuracy: float
    low: float  # bootstrap interval of the hybrid accuracy
    high: float

    @property
    def human_share(self) -> float:
        return 1.0 - self.model_share


class _Certificate:
    """What target and cost mode certificates share: a threshold, infinite when none is certified."""

    threshold: float

    @property
    def certified(self) -> bool:
        return math.isfinite(self.threshold)


@dataclass(frozen=True)
class TargetCertificate(_Certificate):
    """The outcome of target mode: a certified threshold, or why there is none."""

    target: float
    risk: float
    golden: int
    threshold: float = math.inf  # inf: nothing certified, every item goes to people
    accepted: int = 0
    errors: int = 0
    error_bound: float = 1.0  # upper (1 - risk) confidence bound on the accepted items' error
    needed: int | None = None  # golden items needed to certify the best observed point
    reachable: bool = True  # False when no threshold reaches the target even on paper
    procedure: str = "fallback"  # which family-wise procedure chose it (see certify_target)
    draw: float | None = None  # the randomized test's shared uniform (planned-start-randomized)

    def _randomized(self) -> str:
        if self.draw is None:
            return ""
        # A randomized test certifies on a draw as well as on the data: say so, and which draw.
        return (
            f", a randomized binomial test with U = {self.draw:.4f}, "
            "fixed by the model version and golden items"
        )

    def describe(self) -> str:
        goal = f"accuracy >= {self.target:.3g} on the accepted items with probability >= {1 - self.risk:.3g}"
        if self.certified:
            return (
                f"{goal}: certified at threshold {self.threshold:.4g} "
                f"({self.accepted} golden items accepted, {self.errors} wrong; "
                f"error bound {self.error_bound:.3f}"
                # The default procedure goes unsaid, as before; another is named (routing.certification).
                + ("" if self.procedure == "fallback" else f"; {self.procedure} procedure")
                + self._randomized()
                + ")"
            )
        if not self.reachable:
            return (
                f"{goal} cannot be certified: at no threshold are the model's accepted golden "
                f"items right often enough; improve the labeler or lower the target"
            )
        more = "" if self.needed is None else f"; about {self.needed} golden items would be needed"
        return (
            f"{goal} cannot be certified with {self.golden} golden items{more}. "
            "Until then the model's labels are not accepted: every item goes to people"
        )


@dataclass(frozen=True)
class CostCertificate(_Certificate):
    """The outcome of cost mode: the cheapest threshold certified to make the hybrid at least
    as accurate as people alone, or none (every item goes to people)."""

    risk: float
    golden: int
    threshold: float = math.inf  # inf: nothing certified, every item goes to people
    accepted: int = 0
    model_right: int = 0  # golden items accepted and right
    people_right: float = 0.0  # people's expected right answers on the same items

    def describe(self) -> str:
        goal = f"cost mode, at least as accurate as people alone with probability >= {1 - self.risk:.3g}"
        if not self.certified:
            return (
                f"{goal}: no threshold is certified with {self.golden} golden items, so the "
                "model's labels are not accepted: every item goes to people"
            )
        seen = f"the model right on {self.model_right}, people expected right on {self.people_right:.1f}"
        at = f"certified at threshold {self.threshold:.4g}"
        return f"{goal}: {at} ({self.accepted} golden items accepted: {seen})"


@dataclass(frozen=True)
class OperatingPoint:
    """The chosen threshold and what the golden items expect of it (its certificate in
    target and cost modes)."""

    mode: str
    threshold: float
    model_share: float
    expected_accuracy: float
    expected_cost_per_item: float
    certificate: TargetCertificate | None = None
    cost_certificate: CostCertificate | None = None
    # Target and cost modes: the human share of the best threshold in hindsight on the golden
    # items (the observed figure reaches the goal, with no allowance for chance); None otherwise.
    hindsight_human_share: float | None = None
    # Target mode with the dataset-level guarantee: its certificate (``certificate`` is None).
    dataset_certificate: DatasetCertificate | None = None
    # Budget mode: the 90% bootstrap interval of the expected accuracy over the golden items
    # (the budget buys a point, not a promise: this says how sure the estimate is).
    accuracy_interval: tuple[float, float] | None = None

    @property
    def human_share(self) -> float:
        return 1.0 - self.model_share

    def price(self) -> str:
        """The human share against the hindsight one: what the guarantee costs ("" without one).

        Examples
        --------
        >>> OperatingPoint("target", 0.9, 0.59, 0.95, 0.1, hindsight_human_share=0.22).price()
        'human share 41% (hindsight on golden items: 22%)'
        """
        if self.hindsight_human_share is None:
            return ""
        hindsight = f"hindsight on golden items: {self.hindsight_human_share:.0%}"
        return f"human share {self.human_share:.0%} ({hindsight})"

    def describe(self) -> str:
        """The point in words: its guarantee and its price (:meth:`price`) in target and cost
        modes, else its expected figures."""
        if self.certificate is not None:
            return f"{self.certificate.describe()}; {self.price()}"
        if self.dataset_certificate is not None:
            return f"{self.dataset_certificate.describe()}; {self.price()}"
        if self.cost_certificate is not None:
            return (
                f"{self.cost_certificate.describe()}; model labels {self.model_share:.0%} of golden "
                f"items, expected accuracy {self.expected_accuracy:.3f}; {self.price()}"
            )
        interval = ""
        if self.accuracy_interval is not None:
            low, high = self.accuracy_interval
            interval = f" (90% bootstrap interval on the golden items: {low:.3f}-{high:.3f})"
        return (
            f"{self.mode} mode: threshold {self.threshold:.4g}, model labels {self.model_share:.0%} of "
            f"golden items, expected accuracy {self.expected_accuracy:.3f}{interval}"
        )


def _accepted(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Boolean matrix: item j accepted at threshold i."""
    return scores[None, :] >= thresholds[:, None]


def quality_curve(
    scores: np.ndarray,
    model_correct: np.ndarray,
    human_correct: np.ndarray,
    *,
    thresholds: np.ndarray = GRID,
    n_boot: int = 200,
    level: float = 0.9,
    random_state: int = 0,
) -> list[CurvePoint]:
    """Hybrid accuracy and human share at each threshold, with bootstrap intervals.

    ``human_correct`` is, per golden item, 1/0 when people's aggregated answer is known, or
    the probability that it is right.

    Examples
    --------
    >>> import numpy as np
    >>> curve = quality_curve(np.array([0.9, 0.6]), np.array([1, 0]), np.array([1.0, 1.0]),
    ...                       thresholds=np.array([0.5, 0.8, np.inf]), n_boot=0)
    >>> [(p.threshold, p.model_share, p.hybrid_accuracy) for p in curve]
    [(0.5, 1.0, 0.5), (0.8, 0.5, 1.0), (inf, 0.0, 1.0)]
    """
    scores = np.asarray(scores, dtype=float)
    model_correct = np.asarray(model_correct, dtype=float)
    human_correct = np.asarray(human_correct, dtype=float)
    thresholds = np.asarray(thresholds, dtype=float)
    n = len(scores)
    if n == 0:
        return []
    acc = _accepted(scores, thresholds)
    per_item = np.where(acc, model_correct[None, :], human_correct[None, :])
    hybrid = per_item.mean(axis=1)
    n_acc = acc.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        model_acc = np.where(n_acc > 0, (acc * model_correct).sum(axis=1) / np.maximum(n_acc, 1), np.nan)
    low, high = hybrid.copy(), hybrid.copy()
    if n_boot:
        rng = np.random.default_rng(random_state)
        draws = rng.integers(0, n, size=(n_boot, n))
        # Sorting the scores lets each bootstrap sample's accuracy at every threshold come
        # from cumulative sums instead of an n_thresholds x n matrix per sample.
        boot = np.empty((n_boot, len(thresholds)))
        for b, idx in enumerate(draws):
            s, m, h = scores[idx], model_correct[idx], human_correct[idx]
            order = np.argsort(-s, kind="stable")
            s, m, h = s[order], m[order], h[order]
            k = np.searchsorted(-s, -thresholds, side="right")  # items with score >= t
            cm = np.concatenate([[0.0], np.cumsum(m)])
            ch = np.concatenate([[0.0], np.cumsum(h)])
            boot[b] = (cm[k] + ch[-1] - ch[k]) / n
        low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return [
        CurvePoint(float(t), float(na / n), float(ma), float(hy), float(lo), float(hi))
        for t, na, ma, hy, lo, hi in zip(thresholds, n_acc, model_acc, hybrid, low, high, strict=True)
    ]


def _binom_cdf(k: Any, n: Any, p: float) -> Any:
    from scipy.stats import binom

    return binom.cdf(k, n, p)


def _error_bound(k: int, n: int, risk: float) -> float:
    """Clopper-Pearson upper bound on an error rate at confidence ``1 - risk``."""
    from scipy.stats import beta

    return 1.0 if k >= n else float(beta.ppf(1 - risk, k + 1, n - k))


def golden_needed(
    share: float, error_rate: float, target: float, risk: float, *, limit: int = 10**6
) -> int | None:
    """How many golden items would certify a point that accepts ``share`` of them with this
    ``error_rate``, if the model kept both; None when no number would."""
    eps = 1.0 - target
    if share <= 0 or error_rate >= eps:
        return None
    lo, hi = 1, 1
    while hi <= limit:
        n = max(1, round(share * hi))
        if _binom_cdf(math.floor(error_rate * n), n, eps) <= risk:
            break
        lo, hi = hi, hi * 2
    else:
        return None
    while lo < hi:  # smallest passing count (the test is monotone in the count up to rounding)
        mid = (lo + hi) // 2
        n = max(1, round(share * mid))
        if _binom_cdf(math.floor(error_rate * n), n, eps) <= risk:
            hi = mid
        else:
            lo = mid + 1
    return hi


PROCEDURES = ("fallback", "fixed-sequence", "expected-start", "planned-start", RANDOMIZED)


def _target_tests(
    sorted_scores: np.ndarray,
    cum_wrong: np.ndarray,
    eps: float,
    risk: float,
    thresholds: np.ndarray,
    procedure: str,
    draw: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The tested thresholds (strictest first), their accepted counts and errors, and which
    the procedure rejects (certifies)."""
    total = len(sorted_scores)
    strict_first = np.sort(np.asarray(thresholds, dtype=float))[::-1]
    counts = np.searchsorted(-sorted_scores, -strict_first, side="right")
    if procedure == "fixed-sequence":
        tested = counts >= max(math.ceil(total / 2), 1)
    else:
        # One hypothesis per distinct slice: the loosest threshold that accepts it (the
        # stricter ones with the same items have the same test and would only be skipped).
        last = np.append(counts[1:] != counts[:-1], True)
        tested = last & (counts > 0)
    strict_first, counts = strict_first[tested], counts[tested]
    errors = cum_wrong[counts]
    pvalues = binomial_pvalue(errors, counts, eps)
    if procedure == RANDOMIZED:
        # planned-start's start (from the scores alone, never from the draw, which would
        # break validity: core/randomized.py), then the randomized p-values from it.
        if draw is None:
            raise ValueError(f"the {RANDOMIZED} procedure needs its draw (core.randomized.project_draw)")
        pvalues = randomized_pvalue(errors, counts, eps, draw)
        procedure = "planned-start"
    if procedure in ("expected-start", "planned-start"):
        return (
            strict_first,
            counts,
            errors,
            _expected_start_rejections(
                sorted_scores, counts, pvalues, eps, risk, planned=procedure != "expected-start"
            ),
        )
    if procedure == "fixed-sequence":
        weights = np.zeros(len(counts))
        weights[:1] = 1.0
    else:
        weights = anchor_weights(counts)
    return strict_first, counts, errors, fallback_rejections(pvalues, weights, risk)


def _expected_start_rejections(
    sorted_scores: np.ndarray,
    counts: np.ndarray,
    pvalues: np.ndarray,
    eps: float,
    risk: float,
    *,
    planned: bool = False,
) -> np.ndarray:
    """Fixed-sequence testing from the slice where the scores expect the most, then looser.

    Each slice's chance to pass is computed as the scores expect it: its largest error count
    that still passes at ``risk``, against a binomial count at the slice's mean expected error
    (``1 - score``). Testing from slice ``j`` upwards and stopping at the first failure then
    expects to accept about ``counts[j] * chance[j] + sum_{k > j} (counts[k] - counts[k-1]) *
    min(chance[j..k])`` items (passing a run is taken as likely as its least likely test, the
    slices being nested); the start is the slice that maximises it. The whole risk goes to the
    start, then on up until the first failure. The start depends on the scores alone, never on
    which golden items the model got right, so the family-wise error stays at most ``risk``;
    unlike a start fixed at half of the golden items, it reaches small confident slices, and
    unlike the fallback procedure it does not split the risk. ``planned``: the start of
    :func:`~duolabel.core.planned_start.planned_start` (the exact chance of a run, up to
    its item limit) instead."""
    from scipy.stats import binom

    if planned and len(sorted_scores) <= EXACT_LIMIT:
        return _fixed_sequence_from(planned_start(sorted_scores, counts, eps, risk), pvalues, risk)

    expected = np.concatenate([[0.0], np.cumsum(1.0 - sorted_scores)])[counts] / np.maximum(counts, 1)
    # The largest error count that still passes at ``risk`` (-1: none does).
    passing = binom.ppf(risk, counts, eps).astype(int)
    passing -= binom.cdf(passing, counts, eps) > risk
    chance = np.where(passing >= 0, binom.cdf(passing, counts, np.clip(expected, 0.0, 1.0)), 0.0)
    gains = np.diff(np.concatenate([[0], counts]))
    worth = [
        counts[j] * chance[j]
        + float((gains[j + 1 :] * np.minimum.accumulate(np.minimum(chance[j + 1 :], chance[j]))).sum())
        for j in range(len(counts))
    ]
    return _fixed_sequence_from(int(np.argmax(worth)) if worth else 0, pvalues, risk)


def _fixed_sequence_from(start: int, pvalues: np.ndarray, risk: float) -> np.ndarray:
    """All of ``risk`` on hypothesis ``start``, then on each next one until the first failure."""
    rejected = np.zeros(len(pvalues), dtype=bool)
    for i in range(start, len(pvalues)):
        if pvalues[i] > risk:
            break
        rejected[i] = True
    return rejected


def certify_target(
    scores: np.ndarray,
    model_correct: np.ndarray,
    *,
    target: float,
    risk: float,
    thresholds: np.ndarray = GRID,
    procedure: str = "fallback",
    draw: float | None = None,
) -> TargetCertificate:
    """The lowest threshold whose accepted items' accuracy is at least ``target`` with
    probability at least ``1 - risk`` (Learn-then-Test on the fixed grid).

    Each null hypothesis "the accepted items' error rate exceeds 1 - target" gets an exact
    binomial p-value (:func:`~duolabel.core.ltt.binomial_pvalue`); the thresholds are tested
    from the strictest down, and the chosen one is the loosest the procedure rejects. The
    order and the levels depend on the scores alone, never on which golden items the model
    got right or on the target: that keeps the family-wise guarantee, and makes a higher
    target never accept more items. ``procedure`` is

    - ``fallback`` (the default): Wiens' fallback procedure with the risk spread over slices
      of halving size (:func:`~duolabel.core.ltt.fallback_rejections`), so small confident
      slices can be certified and one unlucky error does not stop the search;
    - ``fixed-sequence``: all of the risk on the threshold that accepts half of the golden
      items, then down until the first failure (the procedure before; it never accepts
      fewer than half of the golden items);
    - ``expected-start``: all of the risk on the slice the scores expect to pay most (its
      chance to pass times the items it accepts, and those of the looser slices after it), then
      down until the first failure (:func:`_expected_start_rejections`). It wastes fewer people
      than both (benchmarks/routing.py --validity-only) but, its start depending on the
      target, a higher target can accept more items;
    - ``planned-start``: the same, with the start's chance computed exactly rather than as
      that of its least likely test (:mod:`duolabel.core.planned_start`); a little fewer
      people again (benchmarks/routing_waste.py), the same caveat;
    - ``planned-start-randomized``: planned-start with Lehmann's randomized binomial p-values
      (:mod:`duolabel.core.randomized`), ``draw`` being their shared uniform; never certifies
      less than planned-start with the same items, and the certificate states ``draw``.

    Examples
    --------
    >>> import numpy as np
    >>> scores = np.linspace(0.5, 1.0, 200)
    >>> correct = scores > 0.6  # wrong only on the least confident fifth
    >>> cert = certify_target(scores, correct, target=0.95, risk=0.1)
    >>> cert.certified, 0.55 < cert.threshold <= 0.65, cert.procedure
    (True, True, 'fallback')
    >>> correct = scores > 0.85  # right on the top 30% only: half of the items is too much
    >>> certify_target(scores, correct, target=0.9, risk=0.1, procedure="fixed-sequence").certified
    False
    >>> cert = certify_target(scores, correct, target=0.9, risk=0.1)
    >>> cert.certified, cert.accepted, cert.errors
    (True, 61, 1)
    """
    if procedure not in PROCEDURES:
        raise ValueError(
            f"unknown certification procedure {procedure!r}; choose one of: {', '.join(PROCEDURES)}"
        )
    scores = np.asarray(scores, dtype=float)
    wrong = ~np.asarray(model_correct, dtype=bool)
    total = len(scores)
    eps = 1.0 - target
    sorted_scores = np.sort(scores)[::-1]
    cum_wrong = np.concatenate([[0], np.cumsum(wrong[np.argsort(-scores, kind="stable")])])
    tested, counts, errors, rejected = _target_tests(
        sorted_scores, cum_wrong, eps, risk, thresholds, procedure, draw
    )
    draw = draw if procedure == RANDOMIZED else None
    if rejected.any():
        best = int(np.flatnonzero(rejected)[-1])  # the loosest certified threshold
        n, k = int(counts[best]), int(errors[best])
        bound = _error_bound(k, n, risk) if draw is None else randomized_error_bound(k, n, risk, draw)
        return TargetCertificate(
            target, risk, total, float(tested[best]), n, k, bound, procedure=procedure, draw=draw
        )
    first = max(math.ceil(total / 2), 1) if procedure == "fixed-sequence" else 1
    if total == 0:
        return TargetCertificate(target, risk, total, procedure=procedure, draw=draw)
    if not any(cum_wrong[n] / n < eps for n in range(first, total + 1)):
        return TargetCertificate(target, risk, total, reachable=False, procedure=procedure, draw=draw)
    needed = _golden_needed_for(scores, wrong, eps, risk, thresholds, procedure)
    return TargetCertificate(target, risk, total, needed=needed, procedure=procedure, draw=draw)


def _golden_needed_for(
    scores: np.ndarray, wrong: np.ndarray, eps: float, risk: float, thresholds: np.ndarray, procedure: str
) -> int | None:
    """How many golden items would certify something if the model kept the error profile it
    shows here: the golden items are replicated (``m`` copies, plus a spread share of one
    more) and the procedure rerun; None when ten thousand times as many would not do."""
    total = len(scores)
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_wrong = scores[order], wrong[order]
    if procedure in ("planned-start", RANDOMIZED):
        # An estimate over many replicated sizes: the start's cheap approximation will do.
        procedure = "expected-start"

    def certifies(size: int) -> bool:
        # Item i of the larger set takes the profile of golden item floor(i * total / size):
        # the same scores and error rates at every share of the items.
        pick = (np.arange(size) * total) // size
        s, w = sorted_scores[pick], sorted_wrong[pick]
        cum = np.concatenate([[0], np.cumsum(w)])
        return bool(_target_tests(s, cum, eps, risk, thresholds, procedure)[3].any())

    lo, hi = total, 2 * total
    while not certifies(hi):
        lo, hi = hi, hi * 2
        if hi > 10_000 * max(total, 1):
            return None
    while hi - lo > max(1, lo // 100):  # within 1%: the figure is an estimate anyway
        mid = (lo + hi) // 2
        if certifies(mid):
            hi = mid
        else:
            lo = mid
    return hi


def hindsight_human_share(
    mode: str,
    scores: np.ndarray,
    model_correct: np.ndarray,
    human_correct: np.ndarray,
    *,
    target: float,
    thresholds: np.ndarray = GRID,
) -> float:
    """The smallest human share on the grid whose golden items *observed* meet the goal of
    ``mode``: accuracy at least ``target`` on the accepted items (target mode), on the whole
    delivered data set with people's expected errors (``dataset``), or the model at least as
    often right as people on the accepted items (cost mode). What a certificate would choose
    knowing the golden items were the whole truth: the gap to it is the price of the guarantee.

    Examples
    --------
    >>> import numpy as np
    >>> scores = np.linspace(0.5, 1.0, 200)
    >>> correct = scores > 0.85  # the top 60 right: 6 more of the rest keep 90%
    >>> round(hindsight_human_share("target", scores, correct, np.ones(200), target=0.9), 3)
    0.67
    """
    order = np.argsort(-np.asarray(scores, dtype=float), kind="stable")
    sorted_scores = np.asarray(scores, dtype=float)[order]
    cum_model = np.concatenate([[0.0], np.cumsum(np.asarray(model_correct, dtype=float)[order])])
    cum_people = np.concatenate([[0.0], np.cumsum(np.asarray(human_correct, dtype=float)[order])])
    counts = np.searchsorted(-sorted_scores, -np.asarray(thresholds, dtype=float), side="right")
    if mode == "cost":
        ok = cum_model[counts] >= cum_people[counts] - 1e-9
    elif mode == "dataset":
        ok = cum_model[counts] + cum_people[-1] - cum_people[counts] >= target * len(sorted_scores) - 1e-9
    else:
        ok = cum_model[counts] >= target * counts - 1e-9
    total = max(len(sorted_scores), 1)
    return float(1.0 - counts[ok].max() / total) if ok.any() else 1.0


def choose_budget(
    curve: list[CurvePoint], cost_per_item: dict[float, float], *, budget_per_item: float
) -> CurvePoint:
    """The point with the best expected accuracy whose expected cost per item fits the
    budget (ties: the cheaper one). Accepting everything always fits."""
    fits = [p for p in curve if cost_per_item[p.threshold] <= budget_per_item + 1e-12]
    if not fits:  # cannot happen while accepting every item is free of human cost
        fits = [min(curve, key=lambda p: cost_per_item[p.threshold])]
    return max(fits, key=lambda p: (p.hybrid_accuracy, -cost_per_item[p.threshold], -p.threshold))


def choose_cost(
    scores: np.ndarray,
    model_correct: np.ndarray,
    human_correct: np.ndarray,
    *,
    risk: float,
    thresholds: np.ndarray = GRID,
) -> CostCertificate:
    """The lowest threshold at which the hybrid is at least as accurate as people alone with
    probability at least ``1 - risk``.

    The hybrid and people alone differ only on the accepted items, so each null hypothesis
    "on the items threshold t accepts, the model is less accurate than people" is tested by
    an exact binomial test: the model's right answers there against people's accuracy on the
    same items (``human_correct``, taken as known, as the humans-only figure is). People's
    accuracy may vary by item; Hoeffding (1956) shows the binomial with their mean accuracy
    bounds the tail of the model's count of right answers then too. Thresholds are tested
    from the strictest down, skipping those where even a model right on every accepted item
    could not pass (too few items), and testing stops at the first that cannot be rejected
    (fixed-sequence testing, as in :func:`certify_target`): the order depends on the scores
    and on people alone, never on whether the model was right. Choosing the cheapest point
    whose *observed* accuracy matches people's (what this mode did before) misses the
    promise about half of the time on fresh items.

    Examples
    --------
    >>> import numpy as np
    >>> scores = np.linspace(0.5, 1.0, 300)
    >>> correct = scores > 0.7  # right on the confident 60%; people are right 90% of the time
    >>> cert = choose_cost(scores, correct, np.full(300, 0.9), risk=0.1)
    >>> cert.certified, cert.accepted, cert.model_right  # 93% right where it is accepted
    (True, 193, 180)
    """
    from scipy.stats import binom

    scores = np.asarray(scores, dtype=float)
    model_correct = np.asarray(model_correct, dtype=float)
    human_correct = np.asarray(human_correct, dtype=float)
    order = np.argsort(-scores, kind="stable")
    cum_model = np.concatenate([[0.0], np.cumsum(model_correct[order])])
    cum_people = np.concatenate([[0.0], np.cumsum(human_correct[order])])
    strict_first = np.sort(np.asarray(thresholds, dtype=float))[::-1]
    counts = np.searchsorted(-scores[order], -strict_first, side="right")
    people = np.clip(cum_people[counts] / np.maximum(counts, 1), 0.0, 1.0)
    tested = (counts > 0) & (people**counts <= risk)
    strict_first, counts, people = strict_first[tested], counts[tested], people[tested]
    right = np.rint(cum_model[counts]).astype(int)
    rejected = binom.sf(right - 1, counts, people) <= risk
    run = int(np.argmin(rejected)) if not rejected.all() else len(rejected)
    if not run:
        return CostCertificate(risk, len(scores))
    n = int(counts[run - 1])
    return CostCertificate(
        risk, len(scores), float(strict_first[run - 1]), n, int(right[run - 1]), float(cum_people[n])
    )


def majority_accuracy(accuracy: float, overlap: int, n_labels: int, *, draws: int = 20000) -> float:
    """Probability that the majority of ``overlap`` answers is right when each answer is right
    with probability ``accuracy`` and otherwise one of the other labels at random (ties
    broken at random). Estimated by a seeded simulation, so it is deterministic.

    Examples
    --------
    >>> round(majority_accuracy(0.8, 1, 2), 2)
    0.8
    """
    rng = np.random.default_rng(12345)
    right = rng.random((draws, overlap)) < accuracy
    wrong_label = rng.integers(1, max(n_labels, 2), size=(draws, overlap))
    answers = np.where(right, 0, wrong_label)
    counts = np.stack([(answers == k).sum(axis=1) for k in range(max(n_labels, 2))], axis=1)
    top = counts.max(axis=1)
    winners = (counts == top[:, None]).sum(axis=1)
    return float(np.where(counts[:, 0] == top, 1.0 / winners, 0.0).mean())


def choose_best(curve: list[CurvePoint]) -> CurvePoint:
    """The point with the best expected accuracy (ties: the larger model share)."""
    return max(curve, key=lambda p: (round(p.hybrid_accuracy, 12), p.model_share))


def choose_operating_point(
    mode: str,
    scores: np.ndarray,
    model_correct: np.ndarray,
    human_correct: np.ndarray,
    *,
    routed_cost: float,
    threshold: float = 0.9,
    target: float = 0.9,
    risk: float = 0.1,
    budget_per_item: float | None = None,
    curve: list[CurvePoint] | None = None,
    guarantee: str = "accepted",
    people_exact: bool = False,
    certification: str = "fallback",
    draw: float | None = None,
) -> OperatingPoint:
    """The operating point of a routing ``mode`` from the golden items' evidence.

    ``mode`` is ``fixed`` (use ``threshold``), ``target`` (:func:`certify_target` at
    ``target`` and ``risk``), ``budget`` (:func:`choose_budget` within ``budget_per_item``),
    ``cost`` (:func:`choose_cost` at ``risk``) or ``best`` (:func:`choose_best`). ``scores`` are the
    golden items' cross-fitted scores, ``model_correct`` and ``human_correct`` as in
    :func:`quality_curve`; ``routed_cost`` is the expected money one routed item costs.
    ``curve`` is the quality curve on the same evidence when the caller has it already.
    ``guarantee`` is what target mode promises: ``accepted`` (the accepted items' accuracy) or
    ``dataset`` (the whole delivered data set's, :func:`~duolabel.core.guarantee.certify_dataset`,
    with people's errors from ``human_correct`` unless ``people_exact``). ``certification`` is
    the family-wise procedure of the accepted-items guarantee (:func:`certify_target`), ``draw``
    the randomized one's shared uniform.

    Examples
    --------
    >>> import numpy as np
    >>> point = choose_operating_point("fixed", np.array([0.9, 0.6]), np.array([1, 0]),
    ...                                np.array([1.0, 1.0]), routed_cost=0.2, threshold=0.8)
    >>> point.model_share, point.expected_accuracy, point.expected_cost_per_item
    (0.5, 1.0, 0.1)
    """
    if curve is None:
        curve = quality_curve(scores, model_correct, human_correct, n_boot=0)
    certificate = None
    cost_certificate = None
    dataset_certificate = None
    if mode == "fixed":
        chosen = threshold
    elif mode == "target" and guarantee == "dataset":
        dataset_certificate = certify_dataset(
            scores,
            model_correct,
            human_correct,
            target=target,
            risk=risk,
            thresholds=GRID,
            people_exact=people_exact,
        )
        chosen = dataset_certificate.threshold
    elif mode == "target":
        certificate = certify_target(
            scores, model_correct, target=target, risk=risk, procedure=certification, draw=draw
        )
        chosen = certificate.threshold
    elif mode == "budget":
        if budget_per_item is None:
            raise ValueError("budget mode needs budget_per_item")
        cost = {p.threshold: p.human_share * routed_cost for p in curve}
        chosen = choose_budget(curve, cost, budget_per_item=budget_per_item).threshold
    elif mode == "cost":
        cost_certificate = choose_cost(scores, model_correct, human_correct, risk=risk)
        chosen = cost_certificate.threshold
    elif mode == "best":
        chosen = choose_best(curve).threshold
    else:
        raise ValueError(f"unknown routing mode {mode!r}; choose one of: fixed, target, budget, cost, best")
    # Budget mode promises nothing, so its point carries the bootstrap interval of its accuracy.
    n_boot = 200 if mode == "budget" else 0
    at = quality_curve(scores, model_correct, human_correct, thresholds=np.array([chosen]), n_boot=n_boot)[0]
    hindsight = None
    if mode in ("target", "cost"):
        goal = "dataset" if dataset_certificate is not None else mode
        people = np.ones(len(scores)) if people_exact and goal == "dataset" else human_correct
        hindsight = hindsight_human_share(goal, scores, model_correct, people, target=target)
    return OperatingPoint(
        mode,
        chosen,
        at.model_share,
        at.hybrid_accuracy,
        at.human_share * routed_cost if at.human_share else 0.0,
        certificate,
        cost_certificate,
        hindsight,
        dataset_certificate,
        (at.low, at.high) if mode == "budget" else None,
    )
