"""Quality control of people, applied to the store: control accuracy, suspension, fraud flags.

The rules themselves are pure functions in :mod:`duolabel.core.rules`; this module reads
the counts they need from the store and writes back skills, flags and status. Their
settings come from the project file's ``quality`` section:

- **Control accuracy** is the share of control items answered right (for a list answer, the
  task type's partial credit, :meth:`duolabel.core.tasks.TaskType.answer_score`), with a Wilson score
  interval at ``confidence_level`` (Wilson 1927; it stays inside [0, 1] and behaves with
  few answers, unlike the normal approximation). It is kept in ``Annotator.skills``.
- **Suspension**: once ``min_controls`` controls are answered, an annotator whose
  interval lies wholly below ``min_control_accuracy`` (its upper bound is below) is
  suspended. Their answers stay in the store; aggregation leaves them out.
- **Flags** (shown to admins, never acted on automatically): ``fast`` (more than
  ``max_fast_share`` of answers quicker than ``min_seconds``), ``streak``
  (``max_same_label_streak`` identical answers in a row), ``low_agreement`` (agreement
  with the majority of the other answers on the same items below ``min_agreement``).

Skills are brought up to date after every answer and every undo, for every kind of task
alike, so the work done does not depend on whether the answer was to a control. After an
answer they are updated incrementally from the counts kept in ``skills`` (one statement, the
item's known label, read for every answer); an undo, a change of the settings they were
counted under (``skills["counted_with"]``) or counts from before this rule recompute them
from all of the annotator's answers. Exam scoring lives with the exam
(:func:`duolabel.people.exam.score_exam`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from statistics import median

import pandas as pd
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from duolabel.config import QualityConfig
from duolabel.core.rules import (
    agreement_with_consensus,
    below_control_bar,
    control_skills,
    fraud_flags,
    same_label_streak,
)
from duolabel.core.tasks import SingleLabel, TaskType
from duolabel.people.assignments import WORK_KINDS
from duolabel.store import Annotation, Annotator, Item, Store

__all__ = ["annotator_table", "refresh_agreement_flags", "refresh_annotator"]


def refresh_annotator(
    session: Session,
    annotator: Annotator,
    quality: QualityConfig,
    answer: Annotation | None = None,
    *,
    task: TaskType | None = None,
) -> None:
    """Bring one annotator's skills and flags up to date, and suspend if the rule says so.

    With ``answer`` (just recorded) the counts kept in ``skills`` are advanced by it; without,
    or when those counts were kept under other settings, everything is recomputed from the
    store. ``task`` scores control answers (None: single-label, right or wrong). Runs inside
    the caller's write transaction (the annotator's row is already locked).
    """
    skills = dict(annotator.skills or {})
    counted_with = [quality.min_seconds, quality.max_same_label_streak]
    if answer is not None:
        # Read for every answer, control or not, so the work done is the same for both.
        gold = session.scalar(select(Item.gold_label).where(Item.id == answer.item_id))
        if skills.get("counted_with") == counted_with and all(k in skills for k in _COUNTS):
            _advance(annotator, skills, answer, gold, quality, task)
            return
    _recount(session, annotator, skills, quality, task)
    skills["counted_with"] = counted_with
    _apply(annotator, skills, quality)


_COUNTS = ("controls", "control_correct", "answers", "fast", "seconds", "streak", "last_label")


def credit(task: TaskType | None, label: str, gold: str | None) -> float:
    """What one answer to a known item counts: the task type's score (0 to 1) against ``gold``."""
    return 0.0 if gold is None else (task or SingleLabel()).answer_score(label, gold)


def tally(total: float) -> int | float:
    """A count of right answers: an integer when whole (partial credit can make it a fraction)."""
    # Whole counts stay integers: single-label skills read exactly as they always have.
    return int(total) if float(total).is_integer() else total


def _advance(
    annotator: Annotator,
    skills: dict,
    answer: Annotation,
    gold: str | None,
    quality: QualityConfig,
    task: TaskType | None,
) -> None:
    """The counts in ``skills`` with one more answer."""
    control = answer.kind == "control"
    seconds = answer.seconds
    controls = int(skills["controls"]) + control
    correct = tally(float(skills["control_correct"]) + (credit(task, answer.label, gold) if control else 0.0))
    skills.update(control_skills(correct, controls, confidence=quality.confidence_level))
    same = answer.label == skills["last_label"]
    skills.update(
        answers=int(skills["answers"]) + 1,
        fast=int(skills["fast"]) + (seconds is not None and seconds < quality.min_seconds),
        seconds=float(skills["seconds"]) + float(seconds or 0.0),
        streak=min(int(skills["streak"]) + 1, quality.max_same_label_streak) if same else 1,
        last_label=answer.label,
    )
    skills["max_streak"] = max(skills["streak"], int(skills.get("max_streak", 0)))
    _apply(annotator, skills, quality)


def _recount(
    session: Session, annotator: Annotator, skills: dict, quality: QualityConfig, task: TaskType | None
) -> None:
    """The counts in ``skills``, from all of the annotator's answers."""
    mine = (Annotation.annotator_id == annotator.id, Annotation.kind.in_(WORK_KINDS))
    scored = session.execute(
        select(Annotation.label, Item.gold_label)
        .join(Item, Item.id == Annotation.item_id)
        .where(Annotation.annotator_id == annotator.id, Annotation.kind == "control")
    ).all()
    controls, correct = len(scored), tally(math.fsum(credit(task, label, gold) for label, gold in scored))
    answers, fast, seconds = session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(case((Annotation.seconds < quality.min_seconds, 1), else_=0)), 0),
            func.coalesce(func.sum(Annotation.seconds), 0.0),
        ).where(*mine)
    ).one()
    recent = list(
        session.scalars(
            select(Annotation.label)
            .where(*mine)
            .order_by(Annotation.id.desc())
            .limit(quality.max_same_label_streak)
        )
    )
    skills.update(control_skills(correct, controls, confidence=quality.confidence_level))
    streak = same_label_streak(recent)
    skills.update(
        answers=int(answers),
        fast=int(fast),
        seconds=float(seconds),
        streak=streak,
        last_label=recent[0] if recent else None,
        max_streak=max(streak, int(skills.get("max_streak", 0))),
    )


def _apply(annotator: Annotator, skills: dict, quality: QualityConfig) -> None:
    """Store the skills, raise the flags their counts call for, and suspend if the rule says so."""
    answers, fast, streak, controls = skills["answers"], skills["fast"], skills["streak"], skills["controls"]
    annotator.skills = skills
    flags = set(annotator.flags or []) | fraud_flags(
        answers=int(answers),
        fast=int(fast),
        streak=streak,
        min_answers=quality.min_answers_for_flags,
        max_fast_share=quality.max_fast_share,
        max_streak=quality.max_same_label_streak,
    )
    if flags != set(annotator.flags or []):
        annotator.flags = sorted(flags)
    if (
        annotator.status == "active"
        and annotator.role == "annotator"
        and below_control_bar(
            int(controls),
            skills["high"],
            min_controls=quality.min_controls,
            min_accuracy=quality.min_control_accuracy,
        )
    ):
        annotator.status = "suspended"
        skills["suspended_because"] = (
            f"control accuracy {skills['accuracy']:.0%} over {controls} controls; "
            f"upper bound {skills['high']:.0%} < {quality.min_control_accuracy:.0%}"
        )
        annotator.skills = dict(skills)


def _work_answers(session: Session) -> pd.DataFrame:
    rows = session.execute(
        select(Annotation.item_id, Annotation.annotator_id, Annotation.label)
        .join(Annotator, Annotator.id == Annotation.annotator_id)
        .where(Annotation.kind == "regular", Annotator.status != "suspended")
    ).all()
    return pd.DataFrame(rows, columns=["task", "worker", "label"])


def refresh_agreement_flags(store: Store, quality: QualityConfig) -> pd.Series:
    """Compute everyone's agreement with the consensus, store it, and raise ``low_agreement`` flags."""
    with store.read() as session:
        frame = _work_answers(session)
    agreement = agreement_with_consensus(frame)
    counted = frame.groupby("worker").size() if len(frame) else pd.Series(dtype=int)
    with store.write() as session:
        for worker, value in agreement.items():
            annotator = session.get(Annotator, int(worker), with_for_update={"key_share": True})
            if annotator is None or math.isnan(value):
                continue
            skills = dict(annotator.skills or {})
            if skills.get("agreement") != value:
                skills["agreement"] = float(value)
                annotator.skills = skills
            if counted.get(worker, 0) >= quality.min_answers_for_flags and value < quality.min_agreement:
                flags = set(annotator.flags or [])
                if "low_agreement" not in flags:
                    annotator.flags = sorted(flags | {"low_agreement"})
    return agreement


def annotator_table(store: Store, quality: QualityConfig) -> pd.DataFrame:
    """One row per account: answers, control accuracy and interval, speed, agreement, status, flags."""
    refresh_agreement_flags(store, quality)
    with store.read() as session:
        people = session.scalars(select(Annotator).order_by(Annotator.id)).all()
        seconds: dict[int, list[float]] = defaultdict(list)
        for who, value in session.execute(
            select(Annotation.annotator_id, Annotation.seconds).where(
                Annotation.kind.in_(WORK_KINDS), Annotation.seconds.is_not(None)
            )
        ):
            seconds[who].append(float(value or 0.0))  # never None: the query leaves those out
        # Counted from the answers, not read from skills: an imported worker's answers
        # (duolabel import-answers) never pass through refresh_annotator, which keeps skills.
        counts = {
            who: (int(answers), int(controls))
            for who, answers, controls in session.execute(
                select(
                    Annotation.annotator_id,
                    func.count(),
                    func.coalesce(func.sum(case((Annotation.kind == "control", 1), else_=0)), 0),
                )
                .where(Annotation.kind.in_(WORK_KINDS))
                .group_by(Annotation.annotator_id)
            )
        }
    rows = []
    for person in people:
        skills = person.skills or {}
        rows.append(
            {
                "name": person.name,
                "role": person.role,
                "status": person.status,
                "answers": counts.get(person.id, (0, 0))[0],
                "controls": counts.get(person.id, (0, 0))[1],
                "control_accuracy": skills.get("accuracy"),
                "accuracy_low": skills.get("low"),
                "accuracy_high": skills.get("high"),
                "median_seconds": median(seconds[person.id]) if seconds[person.id] else None,
                "agreement": skills.get("agreement"),
                "flags": " ".join(person.flags or []),
            }
        )
    columns = [
        "name",
        "role",
        "status",
        "answers",
        "controls",
        "control_accuracy",
        "accuracy_low",
        "accuracy_high",
        "median_seconds",
        "agreement",
        "flags",
    ]
    return pd.DataFrame(rows, columns=columns)
