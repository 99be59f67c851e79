"""Aggregators: one conformance suite over every method, property tests, fusion, real crowds."""

from __future__ import annotations

import doctest
import json
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import duolabel.core.aggregation as aggregation
from duolabel.core.aggregation import (
    AGGREGATORS,
    GLAD,
    MACE,
    DawidSkene,
    MajorityVote,
    WeightedMajorityVote,
    make_aggregator,
)
from duolabel.errors import DuolabelError
from tests.conftest import shared_data

LABELS = ["x", "y", "z"]

FACTORIES: dict[str, Callable[[], object]] = {
    "majority_vote": lambda: MajorityVote(labels=LABELS),
    "weighted_majority_vote": lambda: WeightedMajorityVote(labels=LABELS, skills={0: 0.9, 1: 0.6, 2: 0.5}),
    "dawid_skene": lambda: DawidSkene(labels=LABELS),
    "dawid_skene_fused": lambda: DawidSkene(labels=LABELS, fuse_model=True),
    # small iteration counts keep the property tests quick; the maths is the same
    "glad": lambda: GLAD(labels=LABELS, n_iter=10),
    "mace": lambda: MACE(labels=LABELS, n_restarts=2, n_iter=10),
}
SLOW = {"glad", "mace"}


def simulate(
    n_tasks: int, accuracies: list[float], per_task: int, *, k: int = 3, seed: int = 0
) -> tuple[pd.DataFrame, pd.Series]:
    """Answers of workers who are right with their accuracy, else uniformly wrong."""
    rng = np.random.default_rng(seed)
    labels = LABELS[:k]
    truth = rng.integers(0, k, n_tasks)
    rows = []
    for task in range(n_tasks):
        for worker in rng.choice(len(accuracies), per_task, replace=False):
            right = rng.random() < accuracies[worker]
            label = truth[task] if right else (truth[task] + rng.integers(1, k)) % k
            rows.append((f"t{task:04d}", f"w{worker}", labels[label]))
    gold = pd.Series([labels[i] for i in truth], index=[f"t{i:04d}" for i in range(n_tasks)])
    return pd.DataFrame(rows, columns=["task", "worker", "label"]), gold


def test_doctests_run():
    assert doctest.testmod(aggregation, raise_on_error=False).failed == 0


# ---------------------------------------------------------------------------
# Conformance: every aggregator keeps the same contract


@pytest.fixture(params=list(FACTORIES))
def make(request: pytest.FixtureRequest) -> Callable[[], object]:
    return FACTORIES[request.param]


def test_contract(make):
    answers, _ = simulate(40, [0.8, 0.7, 0.6, 0.9], 3)
    answers["worker"] = answers["worker"].str[1:].astype(int)  # integer ids work too
    model = pd.DataFrame(np.full((40, 3), 1 / 3), index=sorted(set(answers["task"])), columns=LABELS)
    agg = make()
    assert agg.fit(answers, model_probas=model) is agg
    assert agg.labels_.index.equals(agg.probas_.index)
    assert sorted(agg.labels_.index) == sorted(set(answers["task"]))
    assert list(agg.probas_.columns) == LABELS
    assert np.allclose(agg.probas_.sum(axis=1), 1.0) and (agg.probas_.to_numpy() >= 0).all()
    assert set(agg.labels_) <= set(LABELS)
    # the label is always one of the most probable ones
    chosen = agg.probas_.to_numpy()[np.arange(40), [LABELS.index(v) for v in agg.labels_]]
    assert np.allclose(chosen, agg.probas_.max(axis=1))


def test_known_answers_are_returned_as_known(make):
    answers, _ = simulate(30, [0.8, 0.7, 0.6], 3, seed=2)
    known = {"t0000": "z", "t0001": "y", "extra": "x"}  # "extra" has no answers at all
    agg = make()
    agg.fit(answers, known=known)
    assert {t: agg.labels_[t] for t in known} == known
    assert agg.probas_.loc["t0000", "z"] == 1.0


def test_bad_input_is_a_clear_error(make):
    answers = pd.DataFrame({"task": ["a", "a"], "worker": [0, 1], "label": ["x", "maybe"]})
    with pytest.raises(DuolabelError, match=r"row 1, task 'a', column 'label': 'maybe' is not one of"):
        make().fit(answers)
    good = answers.assign(label=["x", "y"])
    with pytest.raises(DuolabelError, match=r"known answers: 'w' not among the labels"):
        make().fit(good, known={"a": "w"})
    with pytest.raises(DuolabelError, match=r"model probabilities: column\(s\) \['q'\]"):
        make().fit(good, model_probas=pd.DataFrame({"q": [1.0]}, index=["a"]))


answers_strategy = st.lists(
    st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 6), st.sampled_from(LABELS)),
    min_size=1,
    max_size=40,
    unique_by=lambda t: (t[0], t[1]),
)


@pytest.mark.parametrize("name", list(FACTORIES))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=answers_strategy, seed=st.integers(0, 10_000), unanimous=st.sampled_from(LABELS))
def test_renaming_and_shuffling_change_nothing_and_unanimity_wins(name, rows, seed, unanimous):
    if name in SLOW and seed % 4:  # crowd-kit's GLAD and MACE are slower: a quarter of the examples
        return
    frame = pd.DataFrame(rows, columns=["task", "worker", "label"])
    # one task on which three newcomers agree (the model-based methods may rightly overrule
    # workers they have learned to distrust, so unanimity is asked of workers with no history)
    frame = pd.concat([frame, pd.DataFrame({"task": "U", "worker": [7, 8, 9], "label": unanimous})])
    base = FACTORIES[name]().fit(frame)
    # rename workers (a bijection that reorders them) and shuffle the rows
    renamed = frame.assign(worker=frame["worker"].map(lambda w: f"n{(w * 7 + 3) % 11}"))
    shuffled = renamed.sample(frac=1.0, random_state=seed)
    agg = FACTORIES[name]()
    if isinstance(agg, WeightedMajorityVote):
        agg.skills = {f"n{(w * 7 + 3) % 11}": s for w, s in (agg.skills or {}).items()}
    other = agg.fit(shuffled)
    assert base.labels_.to_dict() == other.labels_.to_dict()
    assert np.allclose(base.probas_.to_numpy(), other.probas_.loc[base.probas_.index].to_numpy(), atol=1e-6)
    assert np.allclose(base.probas_.sum(axis=1), 1.0)
    assert base.labels_["U"] == unanimous


# ---------------------------------------------------------------------------
# Method-specific behaviour


def test_weighted_vote_follows_the_skilled_worker():
    frame = pd.DataFrame({"task": ["a"] * 3, "worker": ["p", "q", "r"], "label": ["x", "y", "y"]})
    assert MajorityVote(labels=LABELS).fit_predict(frame)["a"] == "y"
    wmv = WeightedMajorityVote(labels=LABELS, skills={"p": 0.95, "q": 0.5, "r": 0.5})
    assert wmv.fit_predict(frame)["a"] == "x"
    assert wmv.weights_["q"] == pytest.approx(np.log(2 * 0.5 / 0.5))
    # a below-chance worker is ignored, not counted against their answer
    low = WeightedMajorityVote(labels=LABELS, skills={"p": 0.1, "q": 0.6, "r": 0.6}).fit(frame)
    assert low.weights_["p"] == 0.0


def test_known_answers_anchor_dawid_skene():
    # Most workers systematically give the wrong one of two labels: without anchors EM settles
    # on the flipped labelling; known answers on a fifth of the tasks reveal the flip.
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 2, 300)
    rows = []
    for task in range(300):
        for worker in range(4):
            flip = rng.random() < (0.85 if worker < 3 else 0.1)
            rows.append((f"t{task}", worker, ["x", "y"][truth[task] ^ int(flip)]))
    frame = pd.DataFrame(rows, columns=["task", "worker", "label"])
    gold = pd.Series({f"t{i}": ["x", "y"][v] for i, v in enumerate(truth)})
    known = {t: gold[t] for t in gold.index[:60]}
    rest = gold.index[60:]
    plain = DawidSkene(labels=["x", "y"]).fit_predict(frame)
    anchored = DawidSkene(labels=["x", "y"]).fit_predict(frame, known=known)
    assert (plain[rest] == gold[rest]).mean() < 0.3
    assert (anchored[rest] == gold[rest]).mean() > 0.9


def test_dawid_skene_matches_crowdkit_with_and_without_known_answers():
    from crowdkit.aggregation import DawidSkene as CrowdKitDS
    from pandas.errors import Pandas4Warning

    frame, gold = simulate(200, [0.9, 0.7, 0.5, 0.45, 0.8], 3, seed=4)
    known = {t: gold[t] for t in gold.index[:30]}
    ours = DawidSkene(labels=LABELS, smoothing=0.0, diagonal_prior=0.0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=Pandas4Warning)
        theirs = CrowdKitDS(n_iter=100).fit(frame)
        theirs_known = CrowdKitDS(n_iter=100).fit(frame, true_labels=pd.Series(known))
    assert ours.fit_predict(frame).equals(theirs.labels_.loc[ours.labels_.index].rename("agg_label"))
    probas = theirs.probas_.loc[ours.probas_.index, LABELS].to_numpy()
    assert np.abs(ours.probas_.to_numpy() - probas).max() < 1e-3
    ours.fit(frame, known=known)
    assert (ours.labels_ == theirs_known.labels_.loc[ours.labels_.index]).all()


def strong_model(gold: pd.Series, accuracy: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = {}
    for task, label in gold.items():
        right = rng.random() < accuracy
        top = label if right else LABELS[(LABELS.index(label) + rng.integers(1, 3)) % 3]
        probs = {lab: 0.1 for lab in LABELS}
        probs[top] = 0.8
        rows[task] = probs
    return pd.DataFrame.from_dict(rows, orient="index")[LABELS]


def test_fusion_a_strong_model_breaks_ties_correctly():
    # two answers per task from workers of 65% accuracy: many ties the people cannot break
    frame, gold = simulate(600, [0.65] * 6, 2, seed=5)
    model = strong_model(gold, 0.85, seed=6)
    people = DawidSkene(labels=LABELS).fit(frame)
    fused = DawidSkene(labels=LABELS, fuse_model=True).fit(frame, model_probas=model)
    split = frame.groupby("task")["label"].nunique() == 2
    tied = split[split].index
    assert len(tied) > 100
    assert (fused.labels_[tied] == gold[tied]).mean() > 0.75
    assert (fused.labels_ == gold).mean() > (people.labels_ == gold).mean() + 0.1
    assert fused.model_used_.all() and not people.model_used_.any()
    # the learned model confusion matrix has a sharp diagonal
    assert np.diag(fused.model_errors_.to_numpy()).min() > 0.5


def test_fusion_a_random_model_is_discounted():
    frame, gold = simulate(600, [0.8] * 6, 3, seed=7)
    rng = np.random.default_rng(8)
    noise = pd.DataFrame(rng.dirichlet([1, 1, 1], size=len(gold)), index=gold.index, columns=LABELS)
    people = DawidSkene(labels=LABELS).fit(frame)
    fused = DawidSkene(labels=LABELS, fuse_model=True).fit(frame, model_probas=noise)
    assert (fused.labels_ == people.labels_).mean() > 0.98
    rows = fused.model_errors_.to_numpy()
    assert np.abs(rows - rows.mean(axis=0)).max() < 0.1  # every true label predicts the same mix


def test_every_configurable_method_is_registered():
    from pydantic import ValidationError

    from duolabel.config import AggregationConfig

    # aggregation.method takes exactly the registered names
    assert [AggregationConfig(method=name).method for name in AGGREGATORS.names()] == AGGREGATORS.names()
    with pytest.raises(ValidationError):
        AggregationConfig(method="vote")
    assert AggregationConfig().method is None  # empty: the task type's default aggregator
    assert AGGREGATORS.get("dawid_skene") is DawidSkene and AGGREGATORS.get("mace") is MACE


def test_make_aggregator():
    assert isinstance(make_aggregator("mace", labels=LABELS), MACE)
    with pytest.raises(DuolabelError, match="'vote' is not one of majority_vote"):
        make_aggregator("vote", labels=LABELS)


# ---------------------------------------------------------------------------
# Real crowds: our methods against crowd-kit's on medrel


def load_crowd(name: str) -> tuple[pd.DataFrame, pd.Series, list[str]]:
    folder = shared_data(name)
    with (folder / "annotations.jsonl").open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    with (folder / "items.jsonl").open(encoding="utf-8") as handle:
        gold = pd.Series({(item := json.loads(line))["id"]: item["gold"] for line in handle})
    labels = json.loads((folder / "labels.json").read_text(encoding="utf-8"))["labels"]
    frame = pd.DataFrame(rows).rename(columns={"item_id": "task", "annotator": "worker"})
    return frame[["task", "worker", "label"]], gold, labels


def accuracy(labels: pd.Series, gold: pd.Series) -> float:
    return float((labels == gold.loc[labels.index]).mean())


def test_medrel_against_crowdkit():
    from crowdkit.aggregation import GLAD as CrowdKitGLAD
    from crowdkit.aggregation import MACE as CrowdKitMACE
    from crowdkit.aggregation import DawidSkene as CrowdKitDS
    from pandas.errors import Pandas4Warning

    frame, gold, labels = load_crowd("medrel")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=Pandas4Warning)
        theirs = {
            "dawid_skene": CrowdKitDS(n_iter=100).fit_predict(frame),
            "glad": CrowdKitGLAD().fit_predict(frame),
            "mace": CrowdKitMACE().fit_predict(frame),
        }
    ours = {
        "dawid_skene": DawidSkene(labels=labels, smoothing=0.0, diagonal_prior=0.0).fit_predict(frame),
        "glad": GLAD(labels=labels).fit_predict(frame),
        "mace": MACE(labels=labels).fit_predict(frame),
    }
    assert ours["dawid_skene"].equals(
        theirs["dawid_skene"].loc[ours["dawid_skene"].index].rename("agg_label")
    )
    assert abs(accuracy(ours["glad"], gold) - accuracy(theirs["glad"], gold)) <= 0.005
    # MACE's random restarts are drawn in a different (name-free) worker order, so the two runs
    # can end in different local optima; they must still agree on nearly every item.
    assert abs(accuracy(ours["mace"], gold) - accuracy(theirs["mace"], gold)) <= 0.02
    # and Dawid-Skene beats majority vote on this biased crowd, as published
    assert accuracy(ours["dawid_skene"], gold) > accuracy(
        MajorityVote(labels=labels).fit_predict(frame), gold
    )


# ---------------------------------------------------------------------------
# The stage: aggregate_project on a store


def build_project(folder: Path, method: str, fuse: bool, *, suspended_answers: bool) -> object:
    from duolabel.config import PROJECT_FILE, render_config
    from duolabel.project import Project, init_project
    from duolabel.store import Annotation, Annotator, Item, Prediction, Route, Run

    project = init_project(folder, labels=["x", "y"])
    project.close()
    config = project.config.model_copy(
        update={
            "aggregation": project.config.aggregation.model_copy(
                update={"method": method, "fuse_model": fuse}
            ),
            # The routes below ask a fixed 3 answers per item: not followed up one at a time.
            "routing": project.config.routing.model_copy(update={"policy": "threshold"}),
        }
    )
    (folder / PROJECT_FILE).write_text(render_config(config), encoding="utf-8")
    project = Project.open(folder)
    frame, gold = simulate(40, [0.8, 0.75, 0.7, 0.85], 3, k=2, seed=9)
    model = strong_model(gold, 0.9, seed=10)[["x", "y"]]
    with project.store.write() as session:
        run = Run(kind="label", status="done", config={"labeler_name": "embedding", "model_version": "v1"})
        session.add(run)
        session.flush()
        for i, task in enumerate(gold.index):
            golden = i < 8
            session.add(
                Item(
                    id=task,
                    seq=i,
                    text=task,
                    fields={},
                    content_hash="h",
                    batch="b",
                    role="golden" if golden else "regular",
                    gold_label=gold[task],
                )
            )
            probs = (model.loc[task] / model.loc[task].sum()).to_dict()
            session.add(
                Prediction(
                    item_id=task,
                    labeler="embedding",
                    model_version="v1",
                    run_id=run.id,
                    probs=probs,
                    calibrated=probs,
                    label=max(probs, key=probs.get),
                    raw_confidence=max(probs.values()),
                )
            )
        session.flush()
        for i, task in enumerate(gold.index):
            if i >= 8:
                session.add(
                    Route(item_id=task, decision="humans", overlap=3, policy_version="p1", run_id=run.id)
                )
        people = {}
        for name in [*sorted(set(frame["worker"])), "spammer"]:
            person = Annotator(
                name=name,
                password_hash="-",
                status="suspended" if name == "spammer" else "active",
                skills={"controls": 10, "control_correct": 9 if name == "w3" else 7},
            )
            session.add(person)
            session.flush()
            people[name] = person.id
        for task, worker, label in frame.itertuples(index=False):
            session.add(Annotation(item_id=task, annotator_id=people[worker], label=label))
        if suspended_answers:
            for task in gold.index:  # always the wrong label
                session.add(
                    Annotation(
                        item_id=task, annotator_id=people["spammer"], label="y" if gold[task] == "x" else "x"
                    )
                )
    return project


@pytest.mark.parametrize(
    ("method", "fuse"),
    [("majority_vote", False), ("weighted_majority_vote", False), ("dawid_skene", True), ("mace", False)],
)
def test_aggregate_project_provenance_and_suspended_annotators(tmp_path, method, fuse):
    from sqlalchemy import select

    from duolabel.stages.aggregate import aggregate_project
    from duolabel.store import FinalLabel, Run

    finals = {}
    for suspended in (False, True):
        project = build_project(tmp_path / f"p{suspended}", method, fuse, suspended_answers=suspended)
        try:
            result = project.aggregate()
            assert (result.finalized, result.waiting) == (32, 0)
            again = aggregate_project(project, refresh=True)
            assert again.version == result.version  # same answers, same settings: same version
            with project.store.read() as session:
                rows = {f.item_id: f for f in session.scalars(select(FinalLabel))}
                runs = list(session.scalars(select(Run).where(Run.kind == "aggregate")))
            assert len(rows) == 32  # golden items anchor but are not written
            sample = next(iter(rows.values()))
            assert sample.source == ("fused" if fuse else "humans")
            assert sample.n_votes == 3 and "spammer" not in sample.annotators
            assert sample.policy_version == "p1" and sample.model_version == "v1"
            assert 0.0 < sample.confidence <= 1.0
            assert runs[0].config["method"] == method and runs[0].config["version"] == result.version
            finals[suspended] = (
                {k: (v.label, round(v.confidence, 9)) for k, v in rows.items()},
                result.version,
            )
        finally:
            project.close()
    # a suspended annotator's answers change nothing, not even the version
    assert finals[False] == finals[True]


def test_fusion_can_judge_the_model_on_known_items_only():
    frame, gold = simulate(300, [0.7] * 5, 3, seed=12)
    model = strong_model(gold, 0.8, seed=13)
    known = {t: gold[t] for t in gold.index[:60]}
    ds = DawidSkene(labels=LABELS, fuse_model=True, model_errors="known", model_bands=1)
    ds.fit(frame, known=known, model_probas=model)
    # with one band the matrix is the count of (true, model's top label) on known items + the prior
    top = model.loc[list(known)].idxmax(axis=1)
    counts = pd.crosstab(pd.Series(known), top).reindex(index=LABELS, columns=LABELS, fill_value=0)
    expected = counts.to_numpy() + ds.smoothing + ds.diagonal_prior * np.eye(3)
    expected /= expected.sum(axis=1, keepdims=True)
    assert np.allclose(ds.model_errors_.to_numpy(), expected)
    assert (ds.labels_ == gold).mean() > 0.85
    with pytest.raises(DuolabelError, match="model_errors='known' needs known answers"):
        DawidSkene(labels=LABELS, fuse_model=True, model_errors="known").fit(frame, model_probas=model)
