"""The dynamic policy on list-valued task types: people's lists fused element by element.

Pure tests check :func:`duolabel.core.listfollow.list_posterior` against the one-label fusion it
generalizes and on hand-made lists; the project tests run ``duolabel run`` on real goemotions
comments (multi_label) and real CoNLL sentences (spans) with the bundled MiniLM, answer the
routed items one person at a time, and check that the overlap grows where people disagree with
the model and that the loop closes (final labels exported, unsure items escalated).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from duolabel.core.listfollow import element_posteriors, list_posterior
from duolabel.core.policies import DynamicOverlap, fuse
from duolabel.core.probs import as_matrix
from duolabel.core.spans import Spans
from duolabel.errors import ProjectError
from duolabel.people.experts import expert_queue_counts
from duolabel.project import Project
from duolabel.stages.route import follow_up_project
from duolabel.store import Annotation, Annotator, FinalLabel, Prediction, Route
from tests.test_multilabel_routing import CHOSEN, goemotions_project
from tests.test_pipeline import answer, cli
from tests.test_spans import NER, conll, ran_spans_project

ONE = '[{"start": 0, "end": 5, "label": "PER"}]'
TWO = '[{"start": 0, "end": 5, "label": "PER"}, {"start": 9, "end": 14, "label": "LOC"}]'


# -- the posterior on its own -------------------------------------------------------------


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.8, 0.99])
@pytest.mark.parametrize("given", [["[]"], ['["x"]'], ['["x"]', "[]"], ['["x"]', '["x"]', "[]"]])
def test_a_one_label_list_is_fused_as_one_binary_label(p: float, given: list[str]):
    accuracies = [0.9, 0.75, 0.6][: len(given)]
    votes = [int(g == '["x"]') for g in given]
    expected = fuse(np.array([1 - p, p]), votes, accuracies).max()
    assert list_posterior("multi_label", [p], '["x"]', given, accuracies, ["x"]) == pytest.approx(expected)


def test_agreement_makes_a_list_surer_and_disagreement_less_sure():
    labels = ["joy", "love", "fear"]
    prior = [0.8, 0.2, 0.1]  # the model: joy alone
    alone = list_posterior("multi_label", prior, '["joy"]', [], [], labels)
    assert alone == pytest.approx(0.8 * 0.8 * 0.9)
    agree = list_posterior("multi_label", prior, '["joy"]', ['["joy"]'], [0.9], labels)
    twice = list_posterior("multi_label", prior, '["joy"]', ['["joy"]', '["joy"]'], [0.9, 0.9], labels)
    assert alone < agree < twice
    # One label flipped (love) leaves that label less sure than the model was of it.
    flipped = list_posterior("multi_label", prior, '["joy"]', ['["joy", "love"]'], [0.9], labels)
    assert flipped < agree
    love = element_posteriors(np.array([0.2]), np.array([[True]]), [0.9])[0]
    assert max(love, 1 - love) < 0.8
    # A person no better than a coin on a label carries nothing.
    assert list_posterior("multi_label", prior, '["joy"]', ['["love"]'], [0.5], labels) == pytest.approx(
        alone, abs=1e-5
    )


def test_answers_scored_below_chance_carry_no_evidence_and_the_rule_escalates():
    policy = DynamicOverlap(posterior_target=0.95, max_overlap=3)
    labels = ["joy", "love"]
    sure = [
        list_posterior("multi_label", [0.6, 0.4], '["joy"]', ['["joy"]'] * n, [0.4] * n, labels)
        for n in (1, 3)
    ]
    assert sure[0] == pytest.approx(sure[1], abs=1e-5) == pytest.approx(0.36, abs=1e-5)
    assert policy.settle(sure[0], 1).kind == "humans" and policy.settle(sure[1], 3).kind == "expert"


def test_spans_agreement_counts_span_by_span_and_a_missed_span_stays_possible():
    labels = ["PER", "LOC"]
    one_agrees = list_posterior("spans", [0.8, 0.8], ONE, [ONE], [0.9], labels)
    two_agree = list_posterior("spans", [0.8, 0.8], ONE, [ONE, ONE], [0.9, 0.9], labels)
    assert one_agrees < two_agree < 1
    # A span only the person marked: unsure; a span only the model marked: unsure.
    assert list_posterior("spans", [0.8, 0.8], ONE, [TWO], [0.9], labels) < 0.9
    assert list_posterior("spans", [0.8, 0.8], TWO, [ONE], [0.9], labels) < 0.9
    # Nothing marked by anyone is not certain: every one of them may have missed a span.
    empty = list_posterior("spans", [0.8, 0.8], "[]", ["[]"], [0.9], labels)
    assert empty == pytest.approx(0.8 / (0.8 + 0.2 * 0.1))
    # A model no better than a coin (and no prediction at all) gives no evidence either way.
    assert list_posterior("spans", [0.3, 0.3], ONE, [ONE], [0.9], labels) == pytest.approx(
        list_posterior("spans", None, None, [ONE], [0.9], labels)
    )
    assert element_posteriors(np.array([0.5]), np.array([[True]]), [0.9]).tolist() == pytest.approx([0.9])


def test_a_list_type_without_an_element_posterior_is_refused_by_name():
    with pytest.raises(ValueError, match="'ranking'.*multi_label, spans"):
        list_posterior("ranking", None, None, [], [], [])


# -- projects, end to end -----------------------------------------------------------------


def _followed(project: Project, policy: DynamicOverlap) -> dict[str, tuple[str, int]]:
    """Per item routed to people with all its asked-for answers in: what the follow-up must
    decide, computed here from the store's prediction, answers and the default accuracy."""
    kind, labels = project.config.task.type, project.config.task.label_names
    with project.store.read() as session:
        routes = {
            r.item_id: r.overlap
            for r in session.scalars(
                select(Route).where(
                    Route.decision == "humans", Route.item_id.not_in(select(FinalLabel.item_id))
                )
            )
        }
        given: dict[str, list[str]] = {}
        for item_id, label in session.execute(
            select(Annotation.item_id, Annotation.label)
            .join(Annotator, Annotator.id == Annotation.annotator_id)
            .order_by(Annotation.id)
        ):
            given.setdefault(item_id, []).append(label)
        preds = {
            p.item_id: p for p in session.scalars(select(Prediction).where(Prediction.item_id.in_(routes)))
        }
    out = {}
    for item_id, overlap in routes.items():
        if len(given.get(item_id, [])) < overlap:
            continue
        pred = preds[item_id]
        row = as_matrix([pred.calibrated], labels)[0] if pred.calibrated else None
        answers = given[item_id]
        sure = list_posterior(kind, row, pred.label, answers, [0.9] * len(answers), labels)
        decision = policy.settle(sure, len(answers))
        out[item_id] = (decision.kind, decision.overlap)
    return out


def _routes(project: Project) -> dict[str, tuple[str, int]]:
    with project.store.read() as session:
        return {r.item_id: (r.decision, r.overlap) for r in session.scalars(select(Route))}


def _first_queue(folder: Path) -> tuple[dict[str, tuple[str, int]], dict[str, str], list[str]]:
    """The routes and the model's labels after the first ``duolabel run``, and the items queued
    for people: one person at a time, as the dynamic policy starts."""
    with Project.open(folder) as project:
        routes = _routes(project)
        with project.store.read() as session:
            model = dict(session.execute(select(Prediction.item_id, Prediction.label)).all())
    queued = sorted(i for i, (kind, _) in routes.items() if kind == "humans")
    assert queued and all(routes[i][1] == 1 for i in queued)
    return routes, model, queued


def _answer_round(folder: Path, person: str, label_for: Callable[[str], str]) -> dict[str, tuple[str, int]]:
    """``person`` answers every item that waits for one more answer; then ``duolabel route``.
    Returns what the follow-up was expected to decide on the items then complete."""
    with Project.open(folder) as project:
        with project.store.read() as session:
            counts = dict(
                session.execute(select(Annotation.item_id, func.count()).group_by(Annotation.item_id)).all()
            )
        waiting = [
            i
            for i, (kind, overlap) in _routes(project).items()
            if kind == "humans" and counts.get(i, 0) < overlap
        ]
        answer(project, waiting, [person], lambda item, _: label_for(item))
        expected = _followed(project, DynamicOverlap(posterior_target=0.95, max_overlap=2))
    routed = cli("route", str(folder))  # follows up first, as `duolabel aggregate` and `run` do
    assert routed.returncode == 0, routed.stderr
    with Project.open(folder) as project:
        got = _routes(project)
    for item_id, (kind, overlap) in expected.items():
        if kind == "accept":  # left for aggregation to finalize: the route stays as asked
            assert got[item_id] == ("humans", overlap), item_id
        else:
            assert got[item_id] == (kind, overlap), item_id
    return expected


def _exported(folder: Path) -> dict[str, dict[str, str]]:
    with (folder / "out" / "labels.csv").open(encoding="utf-8") as handle:
        return {r["id"]: r for r in csv.DictReader(handle)}


DYNAMIC = {"policy": "dynamic", "max_overlap": 2, "posterior_target": 0.95}


@pytest.mark.slow
def test_dynamic_overlap_on_a_multi_label_project(tmp_path: Path):
    folder = goemotions_project(tmp_path / "p", per_label=20, routing=DYNAMIC)
    result = cli("run", str(folder))
    assert result.returncode == 0, result.stderr
    routes, model, queued = _first_queue(folder)
    flip = set(queued[::2])

    def first(item: str) -> str:  # half agree with the model; half say every label the other way
        chosen = set(json.loads(model[item]))
        return json.dumps([c for c in CHOSEN if (c in chosen) != (item in flip)])

    expected = _answer_round(folder, "ann", first)
    assert set(expected) == set(queued)
    # Every label contradicted on a list the model was not sure of: never sure after one answer.
    assert all(expected[i] == ("humans", 2) for i in flip)
    again = [i for i, (kind, _) in expected.items() if kind == "humans"]
    second = _answer_round(folder, "bob", first)  # bob agrees with ann
    assert set(second) == set(again) and {kind for kind, _ in second.values()} <= {"accept", "expert"}
    with Project.open(folder) as project:  # still unsure after max_overlap: an expert decides
        escalated = sum(kind == "expert" for kind, _ in second.values())
        assert expert_queue_counts(project.store)["escalated"] == escalated
    result = cli("run", str(folder))
    assert result.returncode == 0, result.stderr
    exported = _exported(folder)
    settled = [i for i in queued if expected[i][0] == "accept" or second.get(i, ("",))[0] == "accept"]
    assert settled  # the loop closes: people's list becomes the final label
    for item_id in settled:
        assert exported[item_id]["label"] == first(item_id) and exported[item_id]["source"] == "humans"


@pytest.mark.slow
def test_dynamic_overlap_on_a_spans_project(tmp_path: Path):
    items, _ = conll(52)
    gold = {i["id"]: json.dumps(i["gold"]) for i in items[40:]}
    routing = {"mode": "fixed", "threshold": 0.9, **DYNAMIC}
    folder = ran_spans_project(
        tmp_path, items, regular_gold=False, routing=routing, export={"path": "out/labels.csv"}
    )
    routes, model, queued = _first_queue(folder)
    answers = {i: Spans().check_answer(gold[i], NER) for i in queued}  # the gold spans, as stored
    expected = _answer_round(folder, "ann", answers.__getitem__)
    assert set(expected) == set(queued)
    # A person who disagrees with the model on any span: asked again (the model was under 0.9).
    differs = [i for i in queued if answers[i] != model[i]]
    assert differs and all(expected[i] == ("humans", 2) for i in differs)
    second = _answer_round(folder, "bob", answers.__getitem__)
    assert {kind for kind, _ in second.values()} <= {"accept", "expert"}
    result = cli("run", str(folder))
    assert result.returncode == 0, result.stderr
    exported = _exported(folder)
    settled = [i for i in queued if expected[i][0] == "accept" or second.get(i, ("",))[0] == "accept"]
    assert settled
    for item_id in settled:  # two identical answers: the token vote gives them back
        assert exported[item_id]["label"] == answers[item_id] and exported[item_id]["source"] == "humans"


def test_a_follow_up_policy_without_a_list_posterior_is_refused_with_the_fix(tmp_path: Path, monkeypatch):
    from duolabel.core.policies import POLICIES, ThresholdPolicy

    class AskAgain(ThresholdPolicy):  # follows up, but only on one label's distribution
        def follow_up(self, prior, answers, accuracies):
            raise AssertionError("never reached on lists")

    monkeypatch.setitem(POLICIES._items, "ask_again_test", AskAgain)
    folder = goemotions_project(tmp_path / "p", per_label=2, routing={"policy": "ask_again_test"})
    refused = pytest.raises(
        ProjectError, match="no element-wise posterior.*set routing.policy to threshold or meta"
    )
    with Project.open(folder) as project, refused:
        follow_up_project(project)
