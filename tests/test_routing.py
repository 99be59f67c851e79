"""Routing logic: the operating-point maths, the policies and the cost model, with property
tests. (The routing stage on a real project is in test_routing_project.py.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from duolabel.config import CostsConfig
from duolabel.core.operating import (
    certify_target,
    choose_budget,
    choose_cost,
    choose_operating_point,
    golden_needed,
    majority_accuracy,
    quality_curve,
)
from duolabel.core.policies import Decision, DynamicOverlap, MetaRouter, ThresholdPolicy, expert_tier, fuse
from duolabel.ledger import answer_price, cost_summary, ledger_run
from duolabel.store import Annotation, Annotator, Item, open_store


def calibrated_sample(n: int, seed: int, *, strength: float = 5) -> tuple[np.ndarray, np.ndarray]:
    """Scores and correctness of a perfectly calibrated model: right with probability = score."""
    rng = np.random.default_rng(seed)
    scores = rng.beta(strength, 1, n)
    return scores, rng.random(n) < scores


# --- the curve and the operating points -----------------------------------------


def test_curve_ends_at_people_alone_and_model_alone():
    scores, correct = calibrated_sample(300, 0)
    human = np.full(300, 0.9)
    curve = quality_curve(scores, correct, human, n_boot=100)
    by_share = {round(p.human_share, 6): p for p in curve}
    assert by_share[1.0].hybrid_accuracy == pytest.approx(0.9)
    assert by_share[0.0].hybrid_accuracy == pytest.approx(correct.mean())
    for p in curve:
        assert p.low <= p.hybrid_accuracy + 1e-9 and p.hybrid_accuracy <= p.high + 1e-9


def test_certified_threshold_keeps_its_promise_on_fresh_data():
    """Over many draws, the accepted items of a certified threshold reach the target in at
    least 1 - risk of them (measured on a large fresh sample from the same model)."""
    met, certified = 0, 0
    fresh_scores, fresh_correct = calibrated_sample(200_000, 999, strength=9)
    order = np.argsort(-fresh_scores)
    cum = np.cumsum(fresh_correct[order])
    sorted_fresh = fresh_scores[order]
    for seed in range(200):
        scores, correct = calibrated_sample(200, seed, strength=9)
        cert = certify_target(scores, correct, target=0.9, risk=0.1)
        if not cert.certified:
            continue
        certified += 1
        n = np.searchsorted(-sorted_fresh, -cert.threshold, side="right")
        met += cum[n - 1] / n >= 0.9
    assert certified > 100
    assert met / certified >= 0.9


def test_too_few_golden_items_says_how_many_are_needed():
    scores = np.linspace(0.9, 1.0, 30)
    cert = certify_target(scores, np.ones(30, bool), target=0.95, risk=0.1)
    assert not cert.certified and cert.reachable
    assert cert.needed is not None and cert.needed > 30
    assert f"about {cert.needed} golden items" in cert.describe()
    # With the number it names, the same (perfect) model is certified.
    more = certify_target(
        np.linspace(0.9, 1.0, cert.needed), np.ones(cert.needed, bool), target=0.95, risk=0.1
    )
    assert more.certified


def test_an_unreachable_target_is_named_as_such():
    scores, _ = calibrated_sample(200, 1)
    cert = certify_target(scores, np.zeros(200, bool), target=0.9, risk=0.1)
    assert not cert.certified and not cert.reachable
    assert "improve the labeler or lower the target" in cert.describe()


def test_golden_needed_is_none_when_the_error_rate_misses_the_target():
    assert golden_needed(0.8, 0.2, 0.9, 0.1) is None
    assert golden_needed(1.0, 0.0, 0.95, 0.1) == math.ceil(math.log(0.1) / math.log(0.95))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.6, 0.97), st.floats(0.005, 0.1), st.floats(0.01, 0.3))
def test_a_higher_target_never_accepts_more(seed, target, step, risk):
    scores, correct = calibrated_sample(150, seed)
    low = certify_target(scores, correct, target=target, risk=risk)
    high = certify_target(scores, correct, target=min(target + step, 0.999), risk=risk)
    assert (scores >= high.threshold).sum() <= (scores >= low.threshold).sum()


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000))
def test_operating_points_do_not_depend_on_item_order(seed):
    scores, correct = calibrated_sample(120, seed)
    human = np.random.default_rng(seed).random(120) < 0.9
    perm = np.random.default_rng(seed + 1).permutation(120)
    a = certify_target(scores, correct, target=0.9, risk=0.1)
    b = certify_target(scores[perm], correct[perm], target=0.9, risk=0.1)
    assert a == b
    ca = choose_cost(scores, correct, human, risk=0.1)
    cb = choose_cost(scores[perm], correct[perm], human[perm], risk=0.1)
    assert ca == cb


def test_cost_mode_is_the_cheapest_point_certified_at_least_as_good_as_people():
    scores, correct = calibrated_sample(400, 3)
    human = np.full(400, 0.93)
    chosen = choose_cost(scores, correct, human, risk=0.1)
    assert chosen.certified and chosen.accepted == (scores >= chosen.threshold).sum()
    assert chosen.model_right == correct[scores >= chosen.threshold].sum()
    assert chosen.people_right == pytest.approx(0.93 * chosen.accepted)
    assert 0 < chosen.accepted < 400
    # People who are always right are never beaten: every item goes to them.
    perfect = choose_cost(scores, correct, np.ones(400), risk=0.1)
    assert not perfect.certified and "every item goes to people" in perfect.describe()


def test_budget_mode_spends_no_more_than_the_budget():
    scores, correct = calibrated_sample(400, 4)
    curve = quality_curve(scores, correct, np.full(400, 0.95), n_boot=0)
    cost = {p.threshold: p.human_share * 3 * 0.06 for p in curve}
    for budget in (0.0, 0.01, 0.05, 0.2):
        chosen = choose_budget(curve, cost, budget_per_item=budget)
        assert cost[chosen.threshold] <= budget + 1e-12
        better = [
            p for p in curve if cost[p.threshold] <= budget and p.hybrid_accuracy > chosen.hybrid_accuracy
        ]
        assert not better


def test_budget_mode_says_how_sure_its_expected_accuracy_is():
    scores, correct = calibrated_sample(400, 4)
    people = np.full(400, 0.95)
    point = choose_operating_point("budget", scores, correct, people, routed_cost=0.18, budget_per_item=0.05)
    low, high = point.accuracy_interval
    assert low < point.expected_accuracy < high and high - low < 0.1
    assert f"{low:.3f}-{high:.3f}" in point.describe() and "bootstrap interval" in point.describe()
    # Fewer golden items, a wider interval: the same data, a quarter of it.
    small = choose_operating_point(
        "budget", scores[:100], correct[:100], people[:100], routed_cost=0.18, budget_per_item=0.05
    )
    assert np.diff(small.accuracy_interval)[0] > high - low
    # Modes with a certificate (or a fixed threshold) carry none.
    fixed = choose_operating_point("fixed", scores, correct, people, routed_cost=0.18)
    assert fixed.accuracy_interval is None


def test_error_ranking_orients_each_signal_towards_errors():
    from duolabel.core.evidence import error_ranking

    rng = np.random.default_rng(3)
    wrong = rng.random(300) < 0.2
    noise = rng.random(300)
    ranking = error_ranking(
        {
            "confidence": np.where(wrong, 0.5, 0.9) + 0.05 * noise,  # low when wrong
            "entropy": np.where(wrong, 1.0, 0.2) + 0.05 * noise,  # high when wrong
            "disagreement": np.zeros(300),  # one labeler: constant
            "neighbourhood_accuracy": noise,  # unrelated
        },
        wrong,
        combined=np.where(wrong, 0.1, 0.9),  # high means right
    )
    assert ranking["confidence"] == 1.0 and ranking["entropy"] == 1.0 and ranking["combined"] == 1.0
    assert math.isnan(ranking["disagreement"]) and abs(ranking["neighbourhood_accuracy"] - 0.5) < 0.1
    assert math.isnan(error_ranking({"confidence": noise}, np.zeros(300, bool))["confidence"])


def test_majority_of_three_beats_one_answer():
    assert majority_accuracy(0.8, 3, 2) == pytest.approx(0.896, abs=0.01)  # 0.8^3 + 3 * 0.8^2 * 0.2
    assert majority_accuracy(0.8, 3, 5) > majority_accuracy(0.8, 3, 2)  # errors split over labels


# --- the policies ------------------------------------------------------------------

probability_rows = (
    st.integers(1, 40)
    .flatmap(
        lambda n: st.lists(st.lists(st.floats(0.01, 1.0), min_size=3, max_size=3), min_size=n, max_size=n)
    )
    .map(lambda rows: (a := np.array(rows)) / a.sum(axis=1, keepdims=True))
)


@settings(max_examples=50, deadline=None)
@given(probability_rows, st.integers(0, 1000), st.floats(0.0, 0.5))
def test_policies_are_invariant_to_item_order(probs, seed, share):
    perm = np.random.default_rng(seed).permutation(len(probs))
    policies = [ThresholdPolicy(threshold=0.6, overlap=3), DynamicOverlap(threshold=0.6)]
    for policy in policies:
        decisions = policy.decide(probs)
        assert policy.decide(probs[perm]) == [decisions[i] for i in perm]
        tiered = expert_tier(decisions, policy.score(probs), share=share)
        permuted = expert_tier([decisions[i] for i in perm], policy.score(probs[perm]), share=share)
        assert permuted == [tiered[i] for i in perm]


def test_expert_tier_takes_the_least_confident_routed_items():
    probs = np.array([[0.95, 0.05], [0.55, 0.45], [0.6, 0.4], [0.7, 0.3], [0.8, 0.2]])
    policy = ThresholdPolicy(threshold=0.9, overlap=3)
    decisions = expert_tier(policy.decide(probs), policy.score(probs), share=0.25)
    assert decisions == [
        Decision("accept"),
        Decision("expert"),
        Decision("humans", 3),
        Decision("humans", 3),
        Decision("humans", 3),
    ]


@settings(max_examples=50, deadline=None)
@given(probability_rows, st.lists(st.tuples(st.integers(0, 2), st.floats(0.4, 0.99)), max_size=6))
def test_fused_posterior_is_a_distribution_and_answers_move_it_their_way(probs, answers):
    prior = probs[0]
    post = fuse(prior, [a for a, _ in answers], [p for _, p in answers])
    assert post.sum() == pytest.approx(1.0) and (post >= 0).all()
    more = fuse(prior, [a for a, _ in answers] + [0], [p for _, p in answers] + [0.9])
    assert more[0] >= post[0] - 1e-12


def test_dynamic_overlap_asks_until_sure_then_escalates():
    policy = DynamicOverlap(threshold=0.9, posterior_target=0.95, max_overlap=3, escalate=True)
    prior = np.array([0.5, 0.5])
    assert policy.follow_up(prior, [0], [0.8]) == Decision("humans", 2)
    assert policy.follow_up(prior, [0, 0], [0.9, 0.9]) == Decision("accept", 2)  # 0.988
    assert policy.follow_up(prior, [0, 1], [0.8, 0.8]) == Decision("humans", 3)  # they cancel out
    assert policy.follow_up(prior, [0, 1, 1], [0.8, 0.8, 0.8]) == Decision("expert", 3)
    no_experts = DynamicOverlap(threshold=0.9, posterior_target=0.95, max_overlap=3, escalate=False)
    assert no_experts.follow_up(prior, [0, 1, 1], [0.8, 0.8, 0.8]) == Decision("accept", 3)


def test_meta_router_finds_errors_that_confidence_cannot_see():
    """The model is wrong on long texts whatever its confidence: the meta-router learns it."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    n = 600
    probs = rng.dirichlet([2, 2, 2], size=n)
    log_length = rng.normal(5, 1, n)
    wrong = rng.random(n) < np.where(log_length > 5.5, 0.6, 0.05)
    features = {"log_length": log_length}
    router = MetaRouter()
    scores = router.cross_fit_scores(probs, features, wrong)
    assert roc_auc_score(wrong, -scores) > 0.75
    assert abs(roc_auc_score(wrong, -probs.max(axis=1)) - 0.5) < 0.1
    router.fit(probs, features, wrong)
    assert router.score(probs, features).shape == (n,)


# --- the cost model ---------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 50), st.integers(0, 6), st.integers(0, 2)), min_size=1, max_size=4),
    st.floats(0, 1),
    st.floats(0, 0.5),
)
def test_cost_is_never_negative_and_adds_up_over_batches(tmp_path_factory, batches, price, fee):
    costs = CostsConfig(human_answer=price, platform_fee=fee, expert_answer=2 * price)
    store = open_store(None, tmp_path_factory.mktemp("costs"))
    with store.write() as session:
        people = [
            Annotator(name="ann", password_hash="-"),
            Annotator(name="exp", role="expert", password_hash="-"),
        ]
        session.add_all(people)
    running = 0.0
    for number, (model_cost, answers, expert_answers) in enumerate(batches):
        with ledger_run(store, "label", {"batch": number}) as run, store.write() as session:
            run.record(session, {}, model_cost)
        with store.write() as session:
            ids = {a.name: a.id for a in session.query(Annotator)}
            for i in range(max(answers, expert_answers)):
                item = f"b{number}-{i}"
                session.add(Item(id=item, seq=number * 10 + i, text=item, content_hash=item))
                session.flush()
                if i < answers:
                    session.add(Annotation(item_id=item, annotator_id=ids["ann"], label="a"))
                if i < expert_answers:
                    session.add(Annotation(item_id=item, annotator_id=ids["exp"], label="a", kind="expert"))
        running += model_cost + answers * answer_price(costs) + expert_answers * costs.expert_answer
        summary = cost_summary(store, costs)
        assert summary.total >= 0
        assert summary.total == pytest.approx(running)
    store.close()
