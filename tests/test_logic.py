"""Pure logic of calibration, routing and aggregation, with property tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from duolabel.core.aggregation import MajorityVote
from duolabel.core.calibration import TemperatureScaling, calibration_metrics, expected_calibration_error
from duolabel.core.policies import Decision, ThresholdPolicy

probability_rows = arrays(
    np.float64, st.tuples(st.integers(2, 40), st.integers(2, 6)), elements=st.floats(0.01, 1.0)
).map(lambda a: a / a.sum(axis=1, keepdims=True))


@settings(max_examples=50, deadline=None)
@given(probability_rows, st.floats(0.2, 5.0))
def test_temperature_keeps_rows_normalised_and_argmax(probs, temperature):
    cal = TemperatureScaling()
    cal.temperature_ = temperature
    out = cal.transform(probs)
    assert np.allclose(out.sum(axis=1), 1.0)
    # Temperature never changes which label wins (up to exact ties).
    top = probs.argmax(axis=1)
    assert np.all(out[np.arange(len(out)), top] >= out.max(axis=1) - 1e-9)


def test_temperature_cools_an_overconfident_model():
    rng = np.random.default_rng(0)
    n = 400
    gold = rng.integers(0, 2, n)
    correct = rng.random(n) < 0.7  # 70% accurate ...
    pred = np.where(correct, gold, 1 - gold)
    probs = np.full((n, 2), 0.02)
    probs[np.arange(n), pred] = 0.98  # ... but always 98% sure
    cal = TemperatureScaling().fit(probs, gold)
    assert cal.temperature_ > 1
    before, after = calibration_metrics(probs, gold), calibration_metrics(cal.transform(probs), gold)
    assert after["ece"] < before["ece"] / 3 and after["nll"] < before["nll"]
    assert after["accuracy"] == before["accuracy"]


def test_ece_is_zero_for_a_perfectly_calibrated_constant():
    probs = np.tile([0.75, 0.25], (8, 1))
    gold = np.array([0, 0, 0, 1, 0, 0, 0, 1])
    assert expected_calibration_error(probs, gold, n_bins=2) == 0.0


@settings(max_examples=50, deadline=None)
@given(probability_rows, st.floats(0.0, 1.0), st.integers(1, 5))
def test_threshold_policy_accepts_exactly_the_confident(probs, threshold, overlap):
    decisions = ThresholdPolicy(threshold=threshold, overlap=overlap).decide(probs)
    for row, decision in zip(probs, decisions, strict=True):
        expected = Decision("accept") if row.max() >= threshold else Decision("humans", overlap)
        assert decision == expected


answers_strategy = st.lists(
    st.tuples(st.sampled_from("abcdef"), st.integers(0, 7), st.sampled_from(["x", "y", "z"])),
    min_size=1,
    max_size=40,
    unique_by=lambda t: (t[0], t[1]),
)


@settings(max_examples=60, deadline=None)
@given(answers_strategy, st.randoms())
def test_majority_vote_ignores_worker_names_and_row_order(rows, rnd):
    frame = pd.DataFrame(rows, columns=["task", "worker", "label"])
    base = MajorityVote(labels=["x", "y", "z"]).fit(frame)
    renamed = frame.assign(worker=frame["worker"].map(lambda w: f"w{(w * 7) % 11}"))
    shuffled = renamed.sample(frac=1.0, random_state=rnd.randint(0, 1000))
    other = MajorityVote(labels=["x", "y", "z"]).fit(shuffled)
    assert base.labels_.sort_index().equals(other.labels_.sort_index())
    assert np.allclose(base.probas_.sum(axis=1), 1.0)


def test_unanimity_wins_and_ties_follow_the_model():
    frame = pd.DataFrame(
        {"task": ["u"] * 3 + ["t"] * 2, "worker": [1, 2, 3, 1, 2], "label": ["z", "z", "z", "x", "y"]}
    )
    vote = MajorityVote(labels=["x", "y", "z"])
    assert vote.fit_predict(frame).to_dict() == {"t": "x", "u": "z"}
    assert vote.fit_predict(frame, model_probas={"t": {"x": 0.2, "y": 0.7}})["t"] == "y"
    assert vote.probas_.loc["u", "z"] == 1.0
