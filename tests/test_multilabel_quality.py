"""Partial credit for multi-label controls and exams: a list half right counts half.

Against the real store: control answers scored by the task type's ``answer_score`` (the Jaccard
index of the two lists) feed a person's control accuracy, recounted and advanced one answer at a
time alike; an exam with lists passes on the partial credit it earned.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select, update

from duolabel.core.tasks import MultiLabel, SingleLabel
from duolabel.people.accounts import add_annotator
from duolabel.people.exam import exam_result, exam_task
from duolabel.people.leases import submit_answer
from duolabel.people.qc import refresh_annotator
from duolabel.store import Annotation, Annotator, Assignment, Item
from tests.web_fixtures import LABELS, PASSWORD, add_gold_items, make_project

KIND = MultiLabel()


@pytest.mark.parametrize(
    ("answer", "gold", "score"),
    [
        ('["billing"]', '["billing"]', 1.0),
        ('["billing"]', '["billing", "other"]', 0.5),
        ('["billing", "shipping"]', '["billing", "other"]', 1 / 3),
        ("[]", '["other"]', 0.0),
        ("[]", "[]", 1.0),  # nothing applies, and nothing was ticked
        ('["other"]', "other", 1.0),  # a gold label written by hand, bare
    ],
)
def test_a_list_answer_scores_its_jaccard_index(answer: str, gold: str, score: float):
    assert KIND.answer_score(answer, gold) == pytest.approx(score)


def test_a_single_label_answer_is_right_or_wrong():
    assert (SingleLabel().answer_score("a", "a"), SingleLabel().answer_score("a", "b")) == (1.0, 0.0)


def list_gold(project, ids: list[str], golds: list[list[str]]) -> None:
    with project.store.write() as session:
        for item_id, gold in zip(ids, golds, strict=True):
            session.execute(update(Item).where(Item.id == item_id).values(gold_label=json.dumps(gold)))


def test_control_accuracy_counts_partial_credit_recounted_and_advanced(tmp_path: Path):
    project = make_project(tmp_path / "p", task={"type": "multi_label"})
    try:
        ids = add_gold_items(project, 3, role="control")
        list_gold(project, ids, [["billing"], ["billing", "other"], []])
        person = add_annotator(project.store, "ann", PASSWORD)
        given = ['["billing"]', '["other"]', '["shipping"]']  # right, half right, wrong
        quality = project.config.quality
        with project.store.write() as session:
            for item_id, label in zip(ids[:2], given[:2], strict=True):
                session.add(Annotation(item_id=item_id, annotator_id=person.id, label=label, kind="control"))
            session.flush()
            annotator = session.get(Annotator, person.id)
            refresh_annotator(session, annotator, quality, task=KIND)  # recounted from the store
            assert annotator.skills["control_correct"] == 1.5 and annotator.skills["accuracy"] == 0.75
            last = Annotation(item_id=ids[2], annotator_id=person.id, label=given[2], kind="control")
            session.add(last)
            session.flush()
            refresh_annotator(session, annotator, quality, last, task=KIND)  # advanced by one
            advanced = dict(annotator.skills)
            refresh_annotator(session, annotator, quality, task=KIND)  # and recounted: the same
            recounted = dict(annotator.skills)
        assert advanced["controls"] == recounted["controls"] == 3
        assert advanced["accuracy"] == recounted["accuracy"] == pytest.approx(0.5)
        # Without the task type (the single-label rule) only the exact list counted.
        with project.store.write() as session:
            annotator = session.get(Annotator, person.id)
            refresh_annotator(session, annotator, quality)
            assert annotator.skills["control_correct"] == 1
    finally:
        project.close()


def test_an_exam_of_lists_passes_on_partial_credit(tmp_path: Path):
    project = make_project(
        tmp_path / "p", task={"type": "multi_label"}, quality={"exam_size": 2, "pass_mark": 0.7}
    )
    try:
        ids = add_gold_items(project, 2)
        list_gold(project, ids, [["billing", "other"], ["shipping"]])
        person = add_annotator(project.store, "bo", PASSWORD, status="onboarding")
        quality = project.config.quality
        gold = {ids[0]: '["billing"]', ids[1]: '["shipping"]'}  # half right, right: 1.5 of 2
        for _ in ids:
            task = exam_task(project.store, person.id, quality=quality, lease_minutes=5)
            assert task is not None
            submit_answer(
                project.store, person.id, task.assignment_id, gold[task.item.id], labels=LABELS,
                seconds=3, quality=quality, task_type=KIND,
            )  # fmt: skip
        result = exam_result(project.store, person.id, quality=quality, task=KIND)
        assert result is not None and result.correct == 1.5 and result.passed
        assert sorted(right for _, _, right in result.review) == [False, True]  # the half right is not right
        with project.store.read() as session:
            annotator = session.get(Annotator, person.id)
            assert annotator.status == "active" and annotator.skills["exams"][-1]["correct"] == 1.5
            assert len(list(session.scalars(select(Assignment)))) == 2
    finally:
        project.close()
