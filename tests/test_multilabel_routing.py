"""Routing multi-label answers: each item on its chance of being entirely right.

Pure tests check the whole-list chance on synthetic data where the truth is drawn from known
per-label probabilities; the project test runs ``duolabel run`` on real goemotions comments with
the bundled MiniLM encoder through label, calibrate, route, the people queue, aggregate and export.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from sqlalchemy import select

from duolabel.config import PROJECT_FILE
from duolabel.core.multilabel import LabelThresholds, whole_answer_chances
from duolabel.core.operating import choose_operating_point
from duolabel.core.policies import ThresholdPolicy
from duolabel.core.tasks import MultiLabel, SingleLabel
from duolabel.project import Project
from duolabel.store import FinalLabel, Route
from tests.test_pipeline import answer, cli
from tests.test_wholelist import refit_chances

KIND = MultiLabel()


def synthetic(n: int, k: int, seed: int, spread: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated per-label probabilities and a truth drawn from them, label by label."""
    rng = np.random.default_rng(seed)
    probs = rng.beta(spread, spread, size=(n, k))
    return probs, (rng.random((n, k)) < probs).astype(int)


def test_the_whole_list_chance_is_calibrated_where_labels_are_independent():
    probs, truth = synthetic(20000, 4, seed=0)
    chances = whole_answer_chances(probs)
    right = ((probs >= 0.5).astype(int) == truth).all(axis=1)
    assert (chances[:, 0] >= chances[:, 1]).all() and (chances.sum(axis=1) <= 1 + 1e-12).all()
    # Within each band of the chance, the share of entirely right lists matches it.
    for low, high in [(0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0)]:
        band = (chances[:, 0] >= low) & (chances[:, 0] < high)
        assert band.sum() > 500
        assert right[band].mean() == pytest.approx(chances[band, 0].mean(), abs=0.02)
    # The one label a single flip changes is the least certain: the runner-up list's chance.
    second = probs.copy()
    least = np.abs(probs - 0.5).argmin(axis=1)
    second[np.arange(len(probs)), least] = 1 - (probs[np.arange(len(probs)), least] >= 0.5)
    flipped = np.where(second >= 0.5, probs, 1 - probs).prod(axis=1)
    assert np.allclose(chances[:, 1], np.minimum(flipped, chances[:, 0]))


def test_routing_on_the_whole_list_chance_reaches_the_target_on_accepted_items():
    probs, truth = synthetic(4000, 4, seed=1, spread=0.2)
    gold = [json.dumps([f"l{j}" for j in range(4) if t[j]]) for t in truth]
    labels = [f"l{j}" for j in range(4)]
    answers = [KIND.model_answer(p, labels) for p in probs]
    routed = KIND.routing_probs(probs, answers, labels)
    correct = KIND.routing_gold(answers, gold, labels) == routed.argmax(axis=1)
    assert correct.mean() == pytest.approx(np.mean([a == g for a, g in zip(answers, gold, strict=True)]))
    scores = ThresholdPolicy().score(routed)
    golden, test = slice(0, 2000), slice(2000, None)
    point = choose_operating_point(
        "target", scores[golden], correct[golden], np.ones(2000), routed_cost=1.0, target=0.9, risk=0.1
    )
    accepted = scores[test] >= point.threshold
    assert 0.1 < accepted.mean() < 0.9  # a real split, not all or nothing
    assert correct[test][accepted].mean() >= 0.88
    # The mean of the labels' chances, at the same share, accepts more wrong lists.
    single = np.where(probs >= 0.5, probs, 1 - probs).mean(axis=1)
    top = np.argsort(-single[test])[: accepted.sum()]
    assert correct[test][top].mean() < correct[test][accepted].mean()


def test_single_label_routes_its_distribution_as_it_is():
    probs = np.array([[0.7, 0.3], [0.2, 0.8]])
    assert SingleLabel().routing_probs(probs, ["a", "b"], ["a", "b"]) is probs
    assert SingleLabel().routing_gold(["a", "b"], ["b", "a"], ["a", "b"]).tolist() == [1, 0]


def test_tuned_thresholds_find_more_of_a_rare_label_and_keep_a_clear_one():
    rng = np.random.default_rng(2)
    n = 600
    rare = (rng.random(n) < 0.08).astype(int)
    clear = (rng.random(n) < 0.5).astype(int)
    # The rare label's probability seldom reaches 0.5 even where it applies; the clear one
    # separates the two sides well around 0.5.
    probs = np.column_stack(
        [np.clip(0.3 * rare + rng.normal(0.12, 0.1, n), 0, 1), np.clip(0.5 + 0.4 * (2 * clear - 1)
         + rng.normal(0, 0.1, n), 0, 1)]
    )  # fmt: skip
    tuned = LabelThresholds().fit(probs, np.column_stack([rare, clear]))
    assert tuned.thresholds_[0] < 0.4 and tuned.tuned_f1_[0] > tuned.f1_[0] + 0.1
    assert 0.3 <= tuned.thresholds_[1] <= 0.7 and tuned.tuned_f1_[1] == pytest.approx(tuned.f1_[1], abs=0.03)
    # A label no golden item carries keeps 0.5: nothing to tune it on.
    none = LabelThresholds().fit(probs[:, :1], np.zeros((n, 1), dtype=int))
    assert none.thresholds_.tolist() == [0.5] and np.isnan(none.tuned_f1_[0])


def test_tuned_thresholds_choose_the_list_and_its_whole_list_chance():
    kind = MultiLabel(thresholds=[0.5, 0.2])
    assert kind.model_answer([0.6, 0.3], ["a", "b"]) == '["a", "b"]'
    assert kind.model_confidence([0.6, 0.3]) == pytest.approx(0.6 * 0.3)
    routed = kind.routing_probs(np.array([[0.6, 0.3]]), ['["a", "b"]'], ["a", "b"])
    assert routed[0, 0] == pytest.approx(0.18)  # the stored list's chance, not the 0.5 list's


# -- a project, end to end ----------------------------------------------------------------------

CHOSEN = ["joy", "love", "gratitude"]


def goemotions_project(
    folder: Path, per_label: int = 30, routing: dict[str, object] | None = None, **sections: object
) -> Path:
    """Golden comments (``per_label`` per label and as many with none of them) and twenty regular ones."""
    from tests.conftest import shared_data

    rows = [
        json.loads(line)
        for line in (shared_data("goemotions") / "items.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    for r in rows:
        r["gold"] = [g for g in r["gold"] if g in CHOSEN]
    golden = {r["id"]: r for label in CHOSEN for r in [r for r in rows if label in r["gold"]][:per_label]}
    golden.update({r["id"]: r for r in [r for r in rows if not r["gold"]][:per_label]})
    regular = [r for r in rows if r["id"] not in golden][:20]
    folder.mkdir(parents=True)
    (folder / "golden.jsonl").write_text("".join(json.dumps(r) + "\n" for r in golden.values()))
    (folder / "items.jsonl").write_text(
        "".join(json.dumps({"id": r["id"], "text": r["text"]}) + "\n" for r in regular)
    )
    settings = {
        "task": {"type": "multi_label", "labels": [{"name": n} for n in CHOSEN]},
        "data": [{"path": "golden.jsonl", "role": "golden", "gold_column": "gold"}, {"path": "items.jsonl"}],
        "routing": {"policy": "threshold", "mode": "fixed", "threshold": 0.6, **(routing or {})},
        "export": {"path": "out/labels.csv"},
        **sections,
    }
    (folder / PROJECT_FILE).write_text(yaml.safe_dump(settings))
    return folder


@pytest.mark.slow
def test_duolabel_run_routes_lists_and_people_close_the_loop(tmp_path: Path):
    folder = goemotions_project(tmp_path / "p")
    result = cli("run", str(folder))
    assert result.returncode == 0, result.stderr
    with Project.open(folder) as project:
        with project.store.read() as session:
            routes = {r.item_id: r for r in session.scalars(select(Route))}
            finals = {f.item_id: f for f in session.scalars(select(FinalLabel))}
        assert len(routes) == 20
        kinds = {r.decision for r in routes.values()}
        assert kinds == {"accept", "humans"}, kinds
        for item_id, route in routes.items():
            # accepted on the chance the whole list is right, and only there
            assert (route.decision == "accept") == (route.confidence >= 0.6)
            if route.decision == "accept":
                assert finals[item_id].source == "model"
                assert set(json.loads(finals[item_id].label)) <= set(CHOSEN)
        assert project.error_ranking()["confidence"] > 0.5  # the whole-list chance ranks errors
        queued = [i for i, r in routes.items() if r.decision == "humans"]
        answer(project, queued, ["ann", "bob", "cy"], lambda item, who: '["joy"]' if who != "cy" else "[]")
    again = cli("run", str(folder))
    assert again.returncode == 0, again.stderr
    with (folder / "out" / "labels.csv").open(encoding="utf-8") as handle:
        exported = {r["id"]: r for r in csv.DictReader(handle)}
    for item_id in queued:
        assert exported[item_id]["label"] == '["joy"]' and exported[item_id]["source"] == "humans"
        assert exported[item_id]["is_joy"] == "1" and exported[item_id]["is_love"] == "0"
    # The list report and simulation (their figures: tests/test_multilabel_report.py).
    report = cli("report", str(folder))
    assert report.returncode == 0 and (folder / "report.html").exists(), report.stderr
    simulate = cli("simulate", str(folder), "--from-store")  # the regular comments have no gold
    assert simulate.returncode != 0 and "golden, 0 to replay" in simulate.stderr
    assert "Traceback" not in simulate.stderr


def test_the_dynamic_policy_follows_lists_up_element_by_element(tmp_path: Path):
    # Refused until lists had an element-wise posterior (core/listfollow.py); the whole loop
    # on multi_label and spans projects is in tests/test_listdyn.py.
    from duolabel.stages.route import follow_up_project

    folder = goemotions_project(tmp_path / "p", routing={"policy": "dynamic"})
    with Project.open(folder) as project:
        assert follow_up_project(project) == {}  # nothing routed yet: nothing to follow up


@pytest.mark.slow
def test_tuned_thresholds_are_chosen_on_the_golden_items_and_route_the_stored_list(tmp_path: Path):
    from duolabel.core.probs import as_matrix
    from duolabel.store import Item, Prediction

    folder = goemotions_project(tmp_path / "p", calibration={"label_thresholds": "tuned"})
    with Project.open(folder) as project:
        project.import_data()
        project.label()
        [result] = project.calibrate()
        assert "thresholds joy: " in result.method
        with project.store.read() as session:
            rows = session.execute(
                select(
                    Item.role, Item.gold_label, Prediction.label, Prediction.calibrated, Prediction.confidence
                )
                .join(Prediction, Prediction.item_id == Item.id)
                .order_by(Item.seq)
            ).all()
        golden = [r for r in rows if r.role == "golden"]
        # The thresholds come from the golden items' cross-fitted probabilities alone.
        Y = np.array([[int(c in json.loads(r.gold_label)) for c in CHOSEN] for r in golden])
        limits = LabelThresholds().fit(as_matrix([r.calibrated for r in golden], CHOSEN), Y).thresholds_
        assert result.method.endswith(
            ", ".join(f"{c}: {t:g}" for c, t in zip(CHOSEN, limits, strict=True)) + ")"
        )
        kind = MultiLabel(thresholds=limits.tolist())
        for r in rows:
            probs = [r.calibrated[c] for c in CHOSEN]
            assert r.label == kind.model_answer(probs, CHOSEN)
        # The confidence: the stored list's whole-list chance, calibrated on the golden items.
        regular = [r for r in rows if r.role == "regular"]
        expected = refit_chances(
            [(r.calibrated, r.label, r.gold_label) for r in golden],
            [(r.calibrated, r.label) for r in regular],
            CHOSEN,
            kind,
        )
        assert [r.confidence for r in regular] == pytest.approx(expected.tolist())
        routed = project.route()
        assert sum(routed.decided.values()) == 20
        with project.store.read() as session:
            confidences = [r.confidence for r in session.scalars(select(Route))]
        assert sorted(confidences) == sorted(r.confidence for r in rows if r.role == "regular")
