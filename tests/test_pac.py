"""The sampling variant of the dataset-level guarantee (core/pac.py): validity on synthetic data
sets where the truth is known, over many simulated samples."""

from __future__ import annotations

import numpy as np
import pytest

from duolabel.core.pac import (
    betting_pvalue,
    certify_sample,
    draw_sample,
    sampling_probabilities,
)

THRESHOLDS = np.concatenate([[np.inf], np.linspace(1.0, 0.3, 71)])
RISK = 0.1


def population(n: int, seed: int, *, miscalibrated: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = np.clip(rng.beta(5, 1.5, n), 0.34, 1.0)
    # Miscalibrated: errors on the *confident* items, the scores say nothing true.
    wrong = rng.random(n) < (0.25 * scores if miscalibrated else 1 - scores)
    return scores, wrong


def simulate(scores, wrong, *, share, target, draws=300, sims=300, people_error=0.0):
    q = sampling_probabilities(scores, uniform_share=share)
    eps = 1 - target
    met, certified, human = [], [], []
    for s in range(sims):
        d = draw_sample(q, draws, np.random.default_rng(s))
        cert = certify_sample(
            scores, d, wrong[d], probabilities=q, target=target, risk=RISK, thresholds=THRESHOLDS,
            people_error=people_error, people_exact=people_error == 0, uniform_share=share,
        )  # fmt: skip
        delivered = np.where(scores >= cert.threshold, wrong, people_error).astype(float)
        delivered[np.unique(d)] = people_error  # sampled items keep people's labels
        met.append(not cert.certified or delivered.mean() <= eps)
        certified.append(cert.certified)
        human.append(cert.human_labels / len(scores))
    return np.mean(met), np.mean(certified), np.median(human)


@pytest.mark.parametrize("share", [1.0, 0.5])
def test_the_certificate_is_valid_and_informative_on_calibrated_data(share):
    scores, wrong = population(1500, 0)
    met, certified, human = simulate(scores, wrong, share=share, target=0.95)
    assert met >= 1 - RISK
    # Not valid by never certifying: it certifies most samples and leaves a third to the model.
    assert certified > 0.9 and human < 0.8


@pytest.mark.parametrize("share", [1.0, 0.5])
def test_the_certificate_is_valid_when_the_scores_mislead(share):
    # The order of the tests follows the scores, which point the wrong way here; validity must
    # not depend on them. The target is tight, so an invalid procedure would be caught.
    scores, wrong = population(1500, 1, miscalibrated=True)
    met, certified, _ = simulate(scores, wrong, share=share, target=0.9)
    assert met >= 1 - RISK
    assert certified > 0.3


def test_people_errors_count_in_the_delivered_error():
    scores, wrong = population(1500, 2)
    met, certified, _ = simulate(scores, wrong, share=1.0, target=0.93, people_error=0.04)
    assert met >= 1 - RISK and certified > 0.5
    # People alone above the allowed error: nothing can be certified.
    _, certified, human = simulate(scores, wrong, share=1.0, target=0.95, people_error=0.06, sims=20)
    assert certified == 0 and human == 1.0


def test_the_betting_pvalue_is_valid_at_the_boundary_and_powerful_below_it():
    rng = np.random.default_rng(0)
    # Importance-weighted-like observations: mostly 0, sometimes large, mean exactly 0.1.
    x = (rng.random((4000, 200)) < 0.2) * 0.5
    assert (betting_pvalue(x, 0.1, RISK) <= RISK).mean() <= RISK
    assert (betting_pvalue(x * 0.3, 0.1, RISK) <= RISK).mean() > 0.9
    assert betting_pvalue(x[:2], 0.0, RISK).tolist() == [1.0, 1.0]


def test_sampling_probabilities_bound_the_weights():
    scores = np.array([1.0, 1.0, 0.99, 0.5, 0.4])
    q = sampling_probabilities(scores, uniform_share=0.25)
    assert q.sum() == pytest.approx(1.0)
    assert (1 / (len(scores) * q)).max() <= 1 / 0.25 + 1e-9
    assert q[4] > q[3] > q[2] > q[0]  # more uncertain, drawn more often
    with pytest.raises(ValueError, match="uniform_share"):
        sampling_probabilities(scores, uniform_share=0.0)


def test_certificate_counts_the_human_labels_it_cost():
    scores = np.linspace(0.5, 1.0, 1000)
    wrong = scores < 0.6
    q = sampling_probabilities(scores)
    d = draw_sample(q, 200, np.random.default_rng(0))
    cert = certify_sample(
        scores, d, wrong[d], probabilities=q, target=0.95, risk=RISK, thresholds=THRESHOLDS, people_exact=True
    )
    assert cert.certified
    accepted_sampled = int((scores[np.unique(d)] >= cert.threshold).sum())
    assert cert.extra == accepted_sampled > 0
    assert cert.human_labels == 1000 - cert.accepted + accepted_sampled
    assert "certificate itself cost" in cert.describe()


def test_uniform_draws_with_repeats_are_refused():
    # The hypergeometric test counts distinct items: a repeated draw would count one error twice.
    scores = np.linspace(0.5, 1.0, 100)
    q = sampling_probabilities(scores)
    with pytest.raises(ValueError, match="without replacement"):
        certify_sample(
            scores, np.array([1, 1, 2]), np.zeros(3), probabilities=q, target=0.9, risk=RISK,
            thresholds=THRESHOLDS, people_exact=True,
        )  # fmt: skip
