"""Active-learning strategies on plain arrays: the diversity strategies (k-center, BADGE),
the cold start and the shared contract (pure logic, no model)."""

from __future__ import annotations

import numpy as np
import pytest

from duolabel.core.strategies import STRATEGIES, Badge, ColdStart, KCenter

NAMES = STRATEGIES.names()


def clusters(n_clusters: int = 4, per: int = 25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Well separated Gaussian blobs in 8 dimensions and the blob of each row."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, 8)) * 20
    members = np.repeat(np.arange(n_clusters), per)
    return centres[members] + rng.normal(size=(len(members), 8)), members


def pool(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.ones(3), size=n), rng.normal(size=(n, 8))


def test_the_new_strategies_are_registered():
    assert {"kcenter", "badge", "cold_start", "random", "margin", "entropy", "least_confidence"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_picks_are_distinct_and_n_is_capped_by_the_pool(name):
    probs, vectors = pool(30)
    labeled = np.random.default_rng(9).normal(size=(5, 8))
    strategy = STRATEGIES.get(name)()
    chosen = strategy.select(probs, 12, embeddings=vectors, seed=3, labeled=labeled)
    assert len(chosen) == 12 == len(set(chosen.tolist()))
    everything = strategy.select(probs, 100, embeddings=vectors, seed=3, labeled=labeled)
    assert sorted(everything.tolist()) == list(range(30))


@pytest.mark.parametrize("name", NAMES)
def test_abstentions_are_valid_rows(name):
    probs, vectors = pool(20)
    probs[[2, 7]] = np.nan
    chosen = STRATEGIES.get(name)().select(probs, 20, embeddings=vectors, seed=1)
    assert sorted(chosen.tolist()) == list(range(20))


@pytest.mark.parametrize("name", NAMES)
def test_the_same_seed_gives_the_same_picks(name):
    probs, vectors = pool(50)
    strategy = STRATEGIES.get(name)()
    first = strategy.select(probs, 10, embeddings=vectors, seed=5)
    assert np.array_equal(first, strategy.select(probs, 10, embeddings=vectors, seed=5))


@pytest.mark.parametrize("name", ["random", "badge", "cold_start"])
def test_other_seeds_give_other_picks(name):
    probs, vectors = pool(200)
    strategy = STRATEGIES.get(name)()
    picks = {tuple(strategy.select(probs, 20, embeddings=vectors, seed=s).tolist()) for s in range(4)}
    assert len(picks) > 1


def test_kcenter_covers_separated_clusters():
    X, members = clusters(n_clusters=5)
    chosen = KCenter().select(None, 5, embeddings=X)
    assert sorted(members[chosen].tolist()) == [0, 1, 2, 3, 4]


def test_kcenter_starts_from_the_labelled_set():
    X, members = clusters(n_clusters=3)
    labeled = np.vstack([X[members == 0][:2], X[members == 1][:2]])  # clusters 0, 1 covered
    first = KCenter().select(None, 1, embeddings=X, labeled=labeled)
    assert members[first[0]] == 2
    # Without the labelled set the first pick is the item nearest the pool's mean.
    mean_nearest = int(np.argmin(((X - X.mean(axis=0)) ** 2).sum(axis=1)))
    assert KCenter().select(None, 1, embeddings=X)[0] == mean_nearest


def test_kcenter_never_picks_a_duplicate_twice():
    X = np.repeat(np.eye(3), 4, axis=0)
    chosen = KCenter().select(None, 6, embeddings=X)
    assert len(set(chosen.tolist())) == 6
    assert sorted(set(np.argmax(X[chosen[:3]], axis=1).tolist())) == [0, 1, 2]


def test_cold_start_needs_no_probabilities_and_picks_one_per_cluster():
    X, members = clusters(n_clusters=6, per=20, seed=4)
    for seed in range(3):
        chosen = ColdStart().select(None, 6, embeddings=X, seed=seed)
        assert sorted(members[chosen].tolist()) == list(range(6))
    # Each pick is the member nearest its cluster's centre.
    chosen = ColdStart().select(None, 6, embeddings=X)
    for pick in chosen:
        same = X[members == members[pick]]
        centre = same.mean(axis=0)
        assert np.isclose(((X[pick] - centre) ** 2).sum(), ((same - centre) ** 2).sum(axis=1).min())


def test_cold_start_with_fewer_distinct_items_than_picks():
    X = np.repeat(np.eye(2), 5, axis=0)
    chosen = ColdStart().select(None, 4, embeddings=X)
    assert len(set(chosen.tolist())) == 4


def test_badge_prefers_uncertain_and_diverse_items():
    X, members = clusters(n_clusters=2, per=30, seed=2)
    rng = np.random.default_rng(0)
    probs = np.tile([0.98, 0.01, 0.01], (len(X), 1))
    in_0, in_1 = (rng.choice(np.flatnonzero(members == c), 8, replace=False) for c in (0, 1))
    probs[in_0] = [0.4, 0.35, 0.25]  # cluster 0's uncertain items are a little more uncertain
    probs[in_1] = [0.5, 0.3, 0.2]
    uncertain = np.concatenate([in_0, in_1])
    # Entropy alone takes the 4 most uncertain items, all from cluster 0.
    assert set(members[STRATEGIES.get("entropy")().select(probs, 4)].tolist()) == {0}
    shares, spread = [], 0
    for seed in range(30):
        chosen = Badge().select(probs, 4, embeddings=X, seed=seed)
        assert chosen[0] in uncertain  # the longest gradient comes first
        picked = chosen[np.isin(chosen, uncertain)]
        shares.append(len(picked) / len(chosen))
        spread += set(members[picked].tolist()) == {0, 1}
    # Uncertain: far above their share of the pool (16/60); diverse: from both clusters.
    assert np.mean(shares) >= 0.5, np.mean(shares)
    assert spread >= 27, spread


def test_badge_matches_the_explicit_gradient_embeddings():
    probs, vectors = pool(15, seed=3)
    a = -probs.copy()
    a[np.arange(15), probs.argmax(axis=1)] += 1
    grads = (a[:, :, None] * vectors[:, None, :]).reshape(15, -1)
    first = Badge().select(probs, 1, embeddings=vectors)[0]
    assert first == int(np.argmax((grads**2).sum(axis=1)))


@pytest.mark.parametrize("name", ["kcenter", "badge", "cold_start"])
def test_embedding_strategies_need_finite_embeddings(name):
    probs, vectors = pool(10)
    with pytest.raises(ValueError, match="embeddings"):
        STRATEGIES.get(name)().select(probs, 3)
    vectors[4, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        STRATEGIES.get(name)().select(probs, 3, embeddings=vectors)


@pytest.mark.parametrize("name", ["least_confidence", "margin", "entropy", "badge"])
def test_model_strategies_need_probabilities(name):
    with pytest.raises(ValueError, match="probabilities"):
        STRATEGIES.get(name)().select(None, 3, embeddings=np.zeros((5, 2)))
