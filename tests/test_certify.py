"""Target-mode certificates: the exact binomial p-values, the fallback procedure's
family-wise guarantee, and the validity of certified thresholds on simulated golden/test
splits where the truth is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom

from duolabel.core.ltt import anchor_weights, binomial_pvalue, fallback_rejections
from duolabel.core.operating import GRID, certify_target, choose_operating_point, hindsight_human_share


def test_binomial_pvalue_is_scipys_exact_tail_and_sums_the_probabilities():
    n = np.arange(1, 120)
    for eps in (0.01, 0.05, 0.1, 0.3):
        errors = np.floor(n * eps * 0.7).astype(int)
        p = binomial_pvalue(errors, n, eps)
        np.testing.assert_allclose(p, binom.cdf(errors, n, eps), rtol=1e-12)
        by_hand = [
            sum(math.comb(m, j) * eps**j * (1 - eps) ** (m - j) for j in range(k + 1))
            for k, m in zip(errors, n, strict=True)
        ]
        np.testing.assert_allclose(p, by_hand, rtol=1e-9)
    assert binomial_pvalue(np.array([0]), np.array([0]), 0.1)[0] == 1.0


@pytest.mark.parametrize("eps", [0.05, 0.1, 0.3])
def test_binomial_pvalue_is_valid_at_the_boundary_of_the_null(eps):
    """P(p <= a) <= a when the error rate is exactly eps (the least favourable null): summed
    exactly over every count."""
    for n in (10, 45, 150):
        k = np.arange(n + 1)
        p = binomial_pvalue(k, np.full(n + 1, n), eps)
        for a in (0.01, 0.05, 0.1, 0.2):
            assert binom.pmf(k[p <= a], n, eps).sum() <= a + 1e-12


def test_anchor_weights_halve_from_half_of_the_items_and_ignore_everything_else():
    counts = np.arange(1, 301)
    w = anchor_weights(counts)
    assert w.sum() == pytest.approx(1.0)
    assert list(counts[w > 0]) == [10, 19, 38, 75, 150]
    assert w[149] > 0.6 and w[74] == pytest.approx(w[149] / 3)
    assert list(anchor_weights(np.array([1, 2, 3])).nonzero()[0]) == [1]  # tiny sets: half only


def test_the_fallback_procedure_controls_the_family_wise_error():
    """Independent and strongly dependent true nulls: a false rejection in at most ``risk`` of
    the draws."""
    rng = np.random.default_rng(0)
    weights = anchor_weights(np.arange(1, 61))
    for dependent in (False, True):
        false = 0
        for _ in range(4000):
            u = rng.random(60)
            if dependent:  # nested slices: neighbouring p-values move together
                u = np.clip(np.convolve(u, np.ones(5) / 5, mode="same") + rng.normal(0, 0.05, 60), 0, 1)
            false += fallback_rejections(u, weights, 0.1).any()
        assert false / 4000 <= 0.1 + 3 * math.sqrt(0.1 * 0.9 / 4000)


def _known_model(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A model right 99% of the time on its top 35% and half of the time below: the best
    slice at 90% holds about 43% of the items, less than half."""
    rng = np.random.default_rng(seed)
    scores = rng.random(n)
    return scores, rng.random(n) < np.where(scores >= 0.65, 0.99, 0.5)


def test_certified_thresholds_keep_their_promise_on_many_simulated_splits():
    """The truth is known (error 1% above score 0.65, 50% below): over many golden draws, the
    accepted items meet the target in at least 1 - risk of them, and the slices below half
    of the items, which the start-at-half procedure never reaches, are certified."""

    def true_accuracy(t: float) -> float:
        if not math.isfinite(t):
            return 1.0
        top, low = 1 - max(t, 0.65), max(0.65 - t, 0.0)
        return (0.99 * top + 0.5 * low) / (top + low)

    met, certified, old = 0, 0, 0
    for seed in range(300):
        scores, correct = _known_model(400, seed)
        cert = certify_target(scores, correct, target=0.9, risk=0.1)
        met += true_accuracy(cert.threshold) >= 0.9
        certified += cert.certified
        old += certify_target(scores, correct, target=0.9, risk=0.1, procedure="fixed-sequence").certified
    assert met / 300 >= 0.9
    assert certified >= 270 and old == 0


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.7, 0.97))
def test_hindsight_never_needs_more_people_than_the_certified_point(seed, target):
    rng = np.random.default_rng(seed)
    scores = rng.beta(5, 1, 200)
    correct = rng.random(200) < scores
    point = choose_operating_point(
        "target", scores, correct, np.ones(200), routed_cost=1.0, target=target, risk=0.1
    )
    assert point.hindsight_human_share is not None
    assert point.hindsight_human_share <= point.human_share + 1e-12
    assert (
        point.certificate is not None
        and f"hindsight on golden items: {point.hindsight_human_share:.0%}" in point.describe()
    )
    assert (
        hindsight_human_share("target", scores, correct, np.ones(200), target=target)
        == point.hindsight_human_share
    )


def test_fixed_and_budget_points_carry_no_hindsight_and_unknown_procedures_are_refused():
    scores, correct = _known_model(100, 1)
    point = choose_operating_point("fixed", scores, correct, np.ones(100), routed_cost=1.0)
    assert point.hindsight_human_share is None and point.price() == ""
    with pytest.raises(ValueError, match="unknown certification procedure 'bonferroni'"):
        certify_target(scores, correct, target=0.9, risk=0.1, procedure="bonferroni")


# --- the dataset-level guarantee (routing.guarantee: dataset) ---------------------------


def _delivered_error(t: float, people_error: float) -> float:
    """The true delivered error of a calibrated model with scores uniform on [0.5, 1] (right
    with probability = score), people wrong with probability ``people_error``, at threshold t."""
    if not math.isfinite(t) or t > 1:
        return people_error
    t = max(t, 0.5)
    return (1 - t) ** 2 + 2 * (t - 0.5) * people_error


@pytest.mark.parametrize("people_exact", [False, True])
def test_the_dataset_guarantee_keeps_its_promise_on_many_simulated_splits(people_exact):
    from duolabel.core.guarantee import certify_dataset

    people_error = 0.0 if people_exact else 0.05
    met, certified, shares, accepted_shares = 0, 0, [], []
    for seed in range(300):
        rng = np.random.default_rng(seed)
        scores = rng.uniform(0.5, 1.0, 400)
        correct = rng.random(400) < scores
        people = np.full(400, 1 - people_error)
        cert = certify_dataset(
            scores, correct, people, target=0.9, risk=0.1, thresholds=GRID, people_exact=people_exact
        )
        met += _delivered_error(cert.threshold, people_error) <= 0.1 + 1e-12
        certified += cert.certified
        shares.append(1 - cert.accepted / 400)
        accepted_shares.append(1 - certify_target(scores, correct, target=0.9, risk=0.1).accepted / 400)
    assert met / 300 >= 0.9
    assert certified == 300
    # Counting people's labels in, the promise about the whole data set needs fewer of them
    # than the same target on the model's labels alone.
    assert np.mean(shares) < np.mean(accepted_shares)


def test_the_dataset_guarantee_says_when_people_alone_are_not_good_enough():
    from duolabel.core.guarantee import certify_dataset

    scores = np.linspace(0.5, 1.0, 300)
    people = np.full(300, 0.85)
    cert = certify_dataset(scores, scores > 0.9, people, target=0.9, risk=0.1, thresholds=GRID)
    assert not cert.certified and "people alone are expected to be wrong on 15.0%" in cert.describe()
    # A calibrated model good enough on most items delivers the target although people alone miss
    # it: testing starts where the expected delivered error is lowest, not at "all to people".
    rng = np.random.default_rng(0)
    strong = rng.beta(20, 1, 300)
    right = rng.random(300) < strong
    cert = certify_dataset(strong, right, people, target=0.9, risk=0.1, thresholds=GRID)
    assert cert.certified and cert.accepted > 250 and cert.delivered_error < 0.1
    point = choose_operating_point(
        "target",
        scores,
        scores > 0.6,
        np.full(300, 0.97),
        routed_cost=1.0,
        target=0.9,
        risk=0.1,
        guarantee="dataset",
    )
    assert point.certificate is None and point.dataset_certificate is not None
    assert point.dataset_certificate.certified and point.threshold == point.dataset_certificate.threshold
    text = point.describe()
    assert text.startswith("delivered labels (the model's and people's) at least 0.9 right")
    assert "hindsight on golden items" in text and "as measured on controls" in text
    assert point.hindsight_human_share <= point.human_share + 1e-12


def test_hoeffding_bentkus_pvalue_is_valid_for_bounded_losses():
    from duolabel.core.guarantee import hb_pvalue

    rng = np.random.default_rng(0)
    # Losses in [0, 1] with mean exactly eps (the boundary of the null): P(p <= risk) <= risk.
    eps, n = 0.1, 200
    losses = rng.choice([0.0, 0.05, 0.5, 1.0], p=[0.775, 0.1, 0.06, 0.065], size=(4000, n))
    assert abs(0.05 * 0.1 + 0.5 * 0.06 + 0.065 - eps) < 1e-12  # the mean loss is eps
    p = np.array([hb_pvalue(float(row.mean()), n, eps) for row in losses])
    assert (p <= 0.1).mean() <= 0.1 and (p <= 0.01).mean() <= 0.01
