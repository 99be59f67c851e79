"""One conformance suite over every calibrator, plus the metrics and automatic choice."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from duolabel.core.calibration import (
    CALIBRATORS,
    calibration_metrics,
    cross_validated,
    error_detection_auroc,
    reliability_diagram,
    select_calibrator,
)


def overconfident(n: int = 600, k: int = 3, accuracy: float = 0.7, seed: int = 0):
    """A model that is right 70% of the time but always about 95% sure."""
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, k, n)
    right = rng.random(n) < accuracy
    pred = np.where(right, gold, (gold + rng.integers(1, k, n)) % k)
    probs = rng.dirichlet(np.ones(k) * 2.0, n) * 0.1
    probs[np.arange(n), pred] += 0.9
    return probs / probs.sum(axis=1, keepdims=True), gold


@pytest.mark.parametrize("name", sorted(CALIBRATORS))
def test_every_calibrator_returns_distributions(name):
    probs, gold = overconfident()
    cal = CALIBRATORS.get(name)().fit(probs, gold)
    out = cal.transform(probs[:50])
    assert out.shape == (50, 3)
    assert np.all(out >= 0) and np.allclose(out.sum(axis=1), 1.0)
    assert cal.fit(probs, gold) is cal  # fit returns self


@pytest.mark.parametrize("name", sorted(set(CALIBRATORS) - {"none"}))
def test_every_calibrator_fixes_an_overconfident_model(name):
    probs, gold = overconfident()
    before = calibration_metrics(probs, gold)["ece"]
    after = calibration_metrics(cross_validated(name, probs, gold), gold)["ece"]
    assert after < before / 2, (before, after)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000))
def test_temperature_and_isotonic_are_monotone_in_confidence(seed):
    probs, gold = overconfident(n=200, k=2, seed=seed)
    grid = np.linspace(0.01, 0.99, 50)
    rows = np.column_stack([grid, 1 - grid])
    for name in ("temperature", "isotonic"):
        out = CALIBRATORS.get(name)().fit(probs, gold).transform(rows)[:, 0]
        assert np.all(np.diff(out) >= -1e-9), name


def test_auto_picks_by_cross_validated_log_loss():
    probs, gold = overconfident(n=400)
    name, scores = select_calibrator(probs, gold)
    assert set(scores) == {"temperature", "vector", "isotonic", "histogram"}
    assert scores[name] == min(scores.values())


def test_error_detection_auroc_and_reliability_bins():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.55, 0.45]])
    assert error_detection_auroc(probs, np.array([0, 0, 1, 1])) == 1.0  # low confidence = wrong
    assert np.isnan(error_detection_auroc(probs, np.array([0, 0, 0, 0])))
    bins = reliability_diagram(probs, np.array([0, 0, 1, 0]), n_bins=2)
    assert [b["count"] for b in bins] == [2, 2]
    assert bins[0]["accuracy"] == 0.5 and bins[1]["accuracy"] == 1.0
