"""The ``expected-start`` procedure of the accepted-items guarantee (``routing.certification``):
valid where the truth is known, and fewer people than the fallback procedure."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from duolabel.config import RoutingConfig
from duolabel.core.operating import certify_target, choose_operating_point


def _calibrated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = rng.beta(9, 1, n)
    return scores, rng.random(n) < scores


def test_expected_start_keeps_its_promise_where_the_scores_mislead():
    """Uniform scores that say nothing of the truth (1% error above 0.65, 50% below): the start
    the scores pick is wrong, and the promise must hold anyway."""

    def true_accuracy(t: float) -> float:
        if not math.isfinite(t):
            return 1.0
        top, low = 1 - max(t, 0.65), max(0.65 - t, 0.0)
        return (0.99 * top + 0.5 * low) / (top + low)

    met, certified = 0, 0
    for seed in range(300):
        rng = np.random.default_rng(seed)
        scores = rng.random(400)
        correct = rng.random(400) < np.where(scores >= 0.65, 0.99, 0.5)
        cert = certify_target(scores, correct, target=0.9, risk=0.1, procedure="expected-start")
        met += true_accuracy(cert.threshold) >= 0.9
        certified += cert.certified
    assert met / 300 >= 0.9
    assert certified >= 150


def test_expected_start_keeps_its_promise_and_needs_fewer_people_on_a_calibrated_model():
    fresh_scores, fresh_correct = _calibrated(200_000, 999)
    order = np.argsort(-fresh_scores)
    cum = np.cumsum(fresh_correct[order]) / np.arange(1, len(order) + 1)
    sorted_fresh = fresh_scores[order]
    met, accepted = 0, {"fallback": [], "expected-start": []}
    for seed in range(300):
        scores, correct = _calibrated(150, seed)
        for procedure in accepted:
            cert = certify_target(scores, correct, target=0.93, risk=0.1, procedure=procedure)
            accepted[procedure].append(cert.accepted / 150)
            if procedure == "expected-start":
                n = np.searchsorted(-sorted_fresh, -cert.threshold, side="right")
                met += not cert.certified or cum[n - 1] >= 0.93
    assert met / 300 >= 0.9
    assert np.mean(accepted["expected-start"]) > np.mean(accepted["fallback"]) + 0.05


def test_the_certification_setting_reaches_the_certificate():
    scores, correct = _calibrated(300, 1)
    point = choose_operating_point(
        "target", scores, correct, np.ones(300), routed_cost=1.0, target=0.9, risk=0.1,
        certification="expected-start",
    )  # fmt: skip
    assert point.certificate is not None and point.certificate.procedure == "expected-start"
    assert point.describe().split(";")[0].startswith("accuracy >= 0.9 on the accepted items")
    assert "expected-start procedure)" in point.describe()
    assert RoutingConfig().certification == "fallback"  # existing projects keep their procedure
    assert RoutingConfig(certification="expected-start").certification == "expected-start"
    with pytest.raises(ValidationError):
        RoutingConfig(certification="bonferroni")
