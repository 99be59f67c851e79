"""One conformance suite per pluggable interface, run over EVERY registered implementation.

Each suite iterates its registry's names, so a new calibrator, aggregator, policy, task type,
active-learning strategy or labeler (built-in, or a plug-in installed through an entry point) is
checked without editing this file. Method-specific behaviour lives in each part's own tests
(test_calibration.py, test_aggregation.py, test_routing.py, test_labeler_*.py).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import duolabel.labelers  # noqa: F401  (registers the built-in labeler backends)
from duolabel.config import RoutingConfig
from duolabel.core.aggregation import AGGREGATORS, make_aggregator
from duolabel.core.calibration import CALIBRATORS
from duolabel.core.policies import POLICIES, FollowUpPolicy, make_policy
from duolabel.core.registry import LABELERS
from duolabel.core.strategies import STRATEGIES
from duolabel.core.tasks import TASK_TYPES, task_type
from duolabel.errors import LabelerError

LABELS = ["x", "y", "z"]
# Few examples per implementation: the suite runs over every registered one, and the maths of
# each already has its own property tests.
QUICK = settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(QUICK, max_examples=4)  # for parts that fit models (sklearn, crowd-kit)


def distributions(seed: int, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` model distributions over ``k`` labels and gold labels that follow them loosely
    (every label occurs at least three times)."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(k, 0.7), size=n)
    gold = np.where(rng.random(n) < 0.7, probs.argmax(axis=1), rng.integers(0, k, n))
    gold[: 3 * k] = np.repeat(np.arange(k), 3)
    return probs, gold


def assert_distributions(probs: np.ndarray, n: int, k: int) -> None:
    assert probs.shape == (n, k)
    assert np.isfinite(probs).all() and (probs >= -1e-12).all()
    assert np.allclose(probs.sum(axis=1), 1.0)


# ---------------------------------------------------------------------------
# Calibrators: fit(probs, gold) -> self; transform(probs) -> calibrated probs


@pytest.mark.parametrize("name", CALIBRATORS.names())
@QUICK
@given(seed=st.integers(0, 10_000), n=st.integers(12, 80), k=st.integers(2, 4))
def test_calibrator_contract(name, seed, n, k):
    probs, gold = distributions(seed, n, k)
    new = np.random.default_rng(seed + 1).dirichlet(np.ones(k), size=7)
    calibrator = CALIBRATORS.get(name)()
    assert calibrator.fit(probs, gold) is calibrator
    out = calibrator.transform(new)
    assert_distributions(out, 7, k)
    # determinism, and the order of the golden items does not matter
    again = CALIBRATORS.get(name)().fit(probs, gold).transform(new)
    assert np.array_equal(out, again)
    order = np.random.default_rng(seed).permutation(n)
    shuffled = CALIBRATORS.get(name)().fit(probs[order], gold[order]).transform(new)
    assert np.allclose(out, shuffled, atol=1e-6)
    # each row is calibrated on its own: transforming rows in another order permutes them
    assert np.allclose(calibrator.transform(new[::-1]), out[::-1])
    restored = pickle.loads(pickle.dumps(calibrator))
    assert np.array_equal(restored.transform(new), out)


# ---------------------------------------------------------------------------
# Aggregators: fit(answers, *, known, model_probas) -> self with labels_ and probas_

answers_strategy = st.lists(
    st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 6), st.sampled_from(LABELS)),
    min_size=1,
    max_size=30,
    unique_by=lambda t: (t[0], t[1]),
)


# Small iteration counts for crowd-kit's EM methods keep the suite quick; the maths is the same.
AGGREGATOR_PARAMS: dict[str, dict[str, object]] = {
    "glad": {"n_iter": 5},
    "mace": {"n_restarts": 2, "n_iter": 10},
}


@pytest.mark.parametrize("name", AGGREGATORS.names())
@FEW
@given(rows=answers_strategy, seed=st.integers(0, 10_000), unanimous=st.sampled_from(LABELS))
def test_aggregator_contract(name, rows, seed, unanimous):
    frame = pd.DataFrame(rows, columns=["task", "worker", "label"])
    # three newcomers agree on U (methods that learn whom to distrust may rightly overrule
    # workers with a history, so unanimity is asked of workers with none)
    frame = pd.concat([frame, pd.DataFrame({"task": "U", "worker": [7, 8, 9], "label": unanimous})])
    aggregator = make_aggregator(name, labels=LABELS, **AGGREGATOR_PARAMS.get(name, {}))
    assert aggregator.fit(frame) is aggregator
    tasks = sorted(set(frame["task"]), key=str)
    assert list(aggregator.labels_.index) == tasks and list(aggregator.probas_.index) == tasks
    assert list(aggregator.probas_.columns) == LABELS
    assert set(aggregator.labels_) <= set(LABELS)
    assert_distributions(aggregator.probas_.to_numpy(), len(tasks), len(LABELS))
    assert aggregator.labels_["U"] == unanimous
    # renaming workers (a bijection that reorders them) and shuffling rows change nothing
    renamed = frame.assign(worker=frame["worker"].map(lambda w: f"n{(w * 7 + 3) % 11}"))
    other = make_aggregator(name, labels=LABELS, **AGGREGATOR_PARAMS.get(name, {})).fit(
        renamed.sample(frac=1.0, random_state=seed)
    )
    assert other.labels_.to_dict() == aggregator.labels_.to_dict()
    assert np.allclose(other.probas_.loc[tasks].to_numpy(), aggregator.probas_.to_numpy(), atol=1e-6)
    again = make_aggregator(name, labels=LABELS, **AGGREGATOR_PARAMS.get(name, {})).fit(frame)
    assert again.labels_.equals(aggregator.labels_) and again.probas_.equals(aggregator.probas_)
    restored = pickle.loads(pickle.dumps(aggregator))
    assert restored.labels_.equals(aggregator.labels_) and restored.probas_.equals(aggregator.probas_)


# ---------------------------------------------------------------------------
# Routing policies: fit on golden items, then a score and a decision per item


def features(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The item features the route stage passes (see duolabel.core.policies.FEATURES)."""
    return {
        "disagreement": rng.random(n) * 0.3,
        "log_length": np.log1p(rng.integers(5, 400, n)),
        "neighbourhood_accuracy": rng.random(n),
    }


def fitted_policy(name: str, probs: np.ndarray, feats: dict[str, np.ndarray], wrong: np.ndarray):
    policy = make_policy(name, RoutingConfig(threshold=0.6).model_dump())
    assert policy.fit(probs, feats, wrong) is policy
    return policy


@pytest.mark.parametrize("name", POLICIES.names())
@FEW
@given(seed=st.integers(0, 10_000), n=st.integers(1, 40))
def test_policy_contract(name, seed, n):
    rng = np.random.default_rng(seed)
    golden, gold = distributions(seed, 60, 3)
    golden_features = features(60, rng)
    wrong = golden.argmax(axis=1) != gold
    policy = fitted_policy(name, golden, golden_features, wrong)
    probs = rng.dirichlet(np.ones(3), size=n)
    feats = features(n, rng)
    scores = policy.score(probs, feats)
    assert scores.shape == (n,) and np.isfinite(scores).all()
    assert ((scores >= 0) & (scores <= 1)).all()
    decisions = policy.decide(probs, feats)
    assert len(decisions) == n
    assert all(d.kind in ("accept", "humans", "expert") and d.overlap >= 0 for d in decisions)
    assert all(d.overlap >= 1 for d in decisions if d.kind == "humans")
    cross = policy.cross_fit_scores(golden, golden_features, wrong)
    assert cross.shape == (60,) and np.isfinite(cross).all() and ((cross >= 0) & (cross <= 1)).all()
    # items are decided one by one: permuting them permutes the decisions
    order = rng.permutation(n)
    permuted = policy.decide(probs[order], {key: value[order] for key, value in feats.items()})
    sure = np.abs(scores - policy.threshold) > 1e-6
    assert [permuted[i] for i in np.argsort(order)] == decisions or not sure.all()
    assert np.allclose(policy.score(probs[order], {k: v[order] for k, v in feats.items()}), scores[order])
    # the golden items' order and a fresh fit do not change the scores
    g_order = rng.permutation(60)
    refit = fitted_policy(
        name, golden[g_order], {k: v[g_order] for k, v in golden_features.items()}, wrong[g_order]
    )
    assert np.allclose(refit.score(probs, feats), scores, atol=1e-6)
    assert np.array_equal(fitted_policy(name, golden, golden_features, wrong).score(probs, feats), scores)
    assert np.array_equal(pickle.loads(pickle.dumps(policy)).score(probs, feats), scores)
    if isinstance(policy, FollowUpPolicy):
        follow = policy.follow_up(np.array([0.5, 0.3, 0.2]), [1], [0.8])
        assert follow.kind in ("accept", "humans", "expert") and follow.overlap >= 1


# ---------------------------------------------------------------------------
# Task types: answers, predictions, agreement


def _one(name: str, label: str) -> Any:
    # A one-label answer: the label itself, except for spans, whose answers are always a list
    # of spans (a bare label says nothing of where it is): one span of it.
    return [{"start": 0, "end": 1, "label": label}] if name == "spans" else label


@pytest.mark.parametrize("name", TASK_TYPES.names())
@QUICK
@given(other=st.text(max_size=12))
def test_task_type_contract(name, other):
    task = task_type(name)
    assert task.name == name and isinstance(task.default_aggregator, str)
    assert task.default_aggregator in AGGREGATORS
    for label in LABELS:
        stored = task.check_answer(_one(name, label), LABELS)
        assert task.check_answer(stored, LABELS) == stored  # the stored form is canonical
        # a one-label answer is the label itself, or (a list-valued type) the list of just it
        one = _one(name, label)
        assert stored == label or (
            task.list_valued and stored == json.dumps(one if isinstance(one, list) else [one])
        )
    # a list type also reads a JSON list or comma-separated labels; other text is refused
    as_list = task.list_valued and (other.strip().startswith("[") or "," in other)
    if other.strip() not in LABELS and not as_list:
        with pytest.raises(ValueError):
            task.check_answer(other, LABELS)
    probs = np.random.default_rng(len(other)).dirichlet(np.ones(3), size=5)
    predicted = task.predicted(probs)
    assert predicted.shape == (5,) and set(predicted.tolist()) <= {0, 1, 2}
    answers = pd.DataFrame(
        {
            "task": ["a", "a", "a", "b", "b", "b", "c", "c"],
            "worker": ["p", "q", "r", "p", "q", "r", "p", "q"],
            "label": ["x", "x", "y", "z", "z", "z", "y", "x"],
        }
    )
    answers["label"] = [task.check_answer(_one(name, label), LABELS) for label in answers["label"]]
    figures = task.agreement(answers, LABELS)
    assert figures and all(np.isfinite(value) for value in figures.values())
    assert isinstance(task.export_columns(LABELS[0], LABELS), dict)
    assert isinstance(task.export_columns(None, LABELS), dict)


# ---------------------------------------------------------------------------
# Active-learning strategies: select(probs, n) -> n distinct pool indices


@pytest.mark.parametrize("name", STRATEGIES.names())
@QUICK
@given(seed=st.integers(0, 10_000), n_pool=st.integers(0, 40), n=st.integers(0, 50))
def test_strategy_contract(name, seed, n_pool, n):
    strategy = STRATEGIES.get(name)()
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(3), size=n_pool)
    vectors = rng.normal(size=(n_pool, 4))  # every strategy gets the embeddings; some ignore them
    if n_pool:
        probs[0] = np.nan  # an abstention is a valid pool row
    chosen = strategy.select(probs, n, embeddings=vectors, seed=seed)
    assert len(chosen) == min(n, n_pool) and len(set(chosen.tolist())) == len(chosen)
    assert all(0 <= i < n_pool for i in chosen.tolist())
    assert np.array_equal(chosen, strategy.select(probs, n, embeddings=vectors, seed=seed))  # deterministic
    # Order invariance: permuting the pool selects the same items (up to ties, which the
    # seeded tie-break resolves; compare the selected distributions, not the positions).
    # Randomized strategies (random, k-means based, sampled) draw their items from the seed.
    perm = np.random.default_rng(seed + 1).permutation(n_pool)
    again = strategy.select(probs[perm], n, embeddings=vectors[perm], seed=seed)
    if not getattr(strategy, "randomized", False):
        rows = np.hstack([probs, vectors])
        key = lambda rows: sorted(map(tuple, np.round(np.nan_to_num(rows, nan=-1), 12).tolist()))  # noqa: E731
        assert key(rows[chosen]) == key(rows[perm][again]) or _tied_at_cut(strategy, probs, n)
    assert (
        pickle.loads(pickle.dumps(strategy)).select(probs, n, embeddings=vectors, seed=seed).tolist()
        == chosen.tolist()
    )


def _tied_at_cut(strategy, probs: np.ndarray, n: int) -> bool:
    """Whether the n-th and (n+1)-th most uncertain items tie (then either may be chosen)."""
    if not hasattr(strategy, "uncertainty"):
        return False
    scores = np.sort(strategy.uncertainty(np.nan_to_num(probs)))[::-1]
    return 0 < n < len(scores) and np.isclose(scores[n - 1], scores[n])


# ---------------------------------------------------------------------------
# Labelers: every registered backend, for real, through its registry factory

GOLDEN = [
    ("I was charged twice for my order, please refund the second payment.", "billing"),
    ("My invoice shows the wrong price for the subscription.", "billing"),
    ("Why was my card billed again after I cancelled?", "billing"),
    ("The refund for my returned jacket has not arrived.", "billing"),
    ("Can I pay with a gift card and a credit card together?", "billing"),
    ("My parcel has been stuck in transit for ten days.", "shipping"),
    ("The courier left the package at the wrong address.", "shipping"),
    ("Tracking says delivered but nothing arrived.", "shipping"),
    ("How long does shipping to Canada take?", "shipping"),
    ("The box arrived crushed and the contents were damaged.", "shipping"),
]
ITEMS = [
    "I need a refund for a double charge.",
    "Where is my package? It is a week late.",
    "Please send me a copy of last month's invoice.",
    "The delivery driver never showed up.",
]
# Settings each built-in backend needs to run small and here; a plug-in backend runs on its
# settings' defaults. The LLM backends skip few-shot examples (their own tests cover them),
# so only the embedding and fine-tuned backends load the sentence encoder (those last for one
# short epoch).
LABELER_SETTINGS: dict[str, dict[str, object]] = {
    "llama": {"n_ctx": 1024, "few_shot": 0},
    "openai": {"few_shot": 0},
    "finetune": {"max_epochs": 1, "max_length": 64, "threads": 1},
    "setfit": {"pairs_per_item": 4, "max_length": 64, "threads": 1},
    "external": {"name": "outside"},
}


def stored_predictions(project: Any, version: str, items: list[Any], labels: list[str]) -> np.ndarray:
    """A labeler version's stored predictions of ``items`` as rows (NaN: an abstention)."""
    from sqlalchemy import select

    from duolabel.store import Prediction

    with project.store.read() as session:
        rows = {
            p.item_id: p.probs
            for p in session.scalars(select(Prediction).where(Prediction.model_version == version))
        }
    return np.array([[rows[i.id].get(label, np.nan) for label in labels] for i in items])


@pytest.mark.slow
@pytest.mark.parametrize("backend", LABELERS.names())
def test_labeler_contract(backend: str, tmp_path: Path, request: pytest.FixtureRequest):
    from sqlalchemy import select

    from duolabel import Project
    from duolabel.labelers import Labeler, TextItem, build_labeler
    from duolabel.store import Item
    from tests.conftest import write_project

    entry: dict[str, object] = {"backend": backend, **LABELER_SETTINGS.get(backend, {})}
    if backend == "openai":
        # the real llama.cpp server with the bundled GGUF, as in test_labeler_openai.py
        from tests.llm_server import MODEL_ALIAS

        entry |= {"model": MODEL_ALIAS, "base_url": request.getfixturevalue("llm_server").base_url}
    labels = ["billing", "shipping"]
    folder = write_project(tmp_path / "p", labels=labels, labeler=[entry])
    with Project.open(folder) as project:
        # the items are in the store, as in a project (the embedding cache refers to them)
        golden_frame = pd.DataFrame(GOLDEN, columns=["text", "label"])
        golden_frame.insert(0, "id", [f"g{i}" for i in range(len(GOLDEN))])
        project.add_items(golden_frame, role="golden", gold_column="label")
        project.add_items(pd.DataFrame({"id": [f"i{i}" for i in range(len(ITEMS))], "text": ITEMS}))
        with project.store.read() as session:
            rows = session.execute(select(Item).order_by(Item.seq)).scalars().all()
            stored = [TextItem(row.id, row.text, row.content_hash) for row in rows]
        golden, items = stored[: len(GOLDEN)], stored[len(GOLDEN) :]
        gold = [label for _, label in GOLDEN]
        cfg = project.config.labeler[0]
        if backend == "external":
            # Its outputs are imported predictions (one abstention among them); asking it to
            # predict is an error naming the import command.
            outside = {"id": [r.id for r in stored], "p_billing": [0.8, 0.3] * 5 + [0.9, None, 0.2, 0.6]}
            outside["p_shipping"] = [None if p is None else 1 - p for p in outside["p_billing"]]
            project.import_predictions(pd.DataFrame(outside), labeler="outside")

        def predict() -> np.ndarray:
            model = build_labeler(project, cfg)
            assert isinstance(model, Labeler) and list(model.labels) == labels
            if hasattr(model, "fit"):
                assert model.fit(golden, gold) is model
                assert isinstance(model.version_, str) and model.version_
            if backend == "external":
                with pytest.raises(LabelerError, match="duolabel import-predictions FILE --labeler outside"):
                    model.predict_proba(items)
                return stored_predictions(project, model.version_, items, labels)
            probs, _usage = model.predict_proba(items)
            return np.asarray(probs, dtype=float)

        probs = predict()
        assert probs.shape == (len(items), len(labels))
        # a row is a distribution, or all NaN: an abstention, which people then label
        answered = ~np.isnan(probs).all(axis=1)
        assert not np.isnan(probs[answered]).any()
        assert_distributions(probs[answered], int(answered.sum()), len(labels))
        again = predict()
        assert np.array_equal(np.isnan(again), np.isnan(probs))
        assert np.allclose(again[answered], probs[answered], atol=1e-6)
