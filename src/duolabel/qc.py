"""Quality control of people: control accuracy, suspension, fraud flags, exam scoring.

Rules come from the project file's ``quality`` section:

- **Control accuracy** is the share of control items answered right, with a Wilson score
  interval at ``confidence_level`` (Wilson 1927; it stays inside [0, 1] and behaves with
  few answers, unlike the normal approximation). It is kept in ``Annotator.skills``.
- **Suspension**: once ``min_controls`` controls are answered, an annotator whose
  interval lies wholly below ``min_control_accuracy`` (its upper bound is below) is
  suspended. Their answers stay in the store; aggregation leaves them out.
- **Flags** (shown to admins, never acted on automatically): ``fast`` (more than
  ``max_fast_share`` of answers quicker than ``min_seconds``), ``streak``
  (``max_same_label_streak`` identical answers in a row), ``low_agreement`` (agreement
  with the majority of the other answers on the same items below ``min_agreement``).

Skills are recomputed from the store after every answer and every undo, for every kind
of task alike, so they never drift and the work done does not depend on whether the
answer was to a control.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from statistics import median
from typing import Any

import pandas as pd
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from duolabel.config import QualityConfig
from duolabel.core.quality import binomial_interval
from duolabel.store import Annotation, Annotator, Item, Store

__all__ = [
    "agreement_with_consensus",
    "annotator_table",
    "control_skills",
    "refresh_agreement_flags",
    "refresh_annotator",
    "score_exam",
    "wilson_interval",
]

WORK_KINDS = ("regular", "control")


def wilson_interval(correct: int, n: int, *, confidence: float = 0.9) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``correct / n`` at level ``confidence``.

    With no observations it is ``(0.0, 1.0)``: nothing is known yet.

    Examples
    --------
    >>> low, high = wilson_interval(8, 10, confidence=0.9)
    >>> round(low, 3), round(high, 3)
    (0.541, 0.931)
    >>> wilson_interval(0, 0)
    (0.0, 1.0)
    """
    if not 0 <= correct <= max(n, 0):
        raise ValueError(f"correct must be between 0 and n={n}, got {correct}")
    return binomial_interval(correct, max(n, 0), confidence, "wilson")


def control_skills(correct: int, n: int, *, confidence: float) -> dict[str, Any]:
    """The skill entry the aggregation and routing read: counts, accuracy, Wilson bounds.

    Examples
    --------
    >>> skills = control_skills(3, 4, confidence=0.9)
    >>> skills["controls"], skills["control_correct"], skills["accuracy"], skills["interval"]
    (4, 3, 0.75, 'wilson')
    """
    low, high = wilson_interval(correct, n, confidence=confidence)
    return {
        "controls": n,
        "control_correct": correct,
        "accuracy": correct / n if n else None,
        "low": low,
        "high": high,
        "interval": "wilson",
        "confidence": confidence,
    }


def _streak(labels: list[str]) -> int:
    """Length of the run of identical labels at the start of ``labels`` (newest first)."""
    run = 0
    for label in labels:
        if label != labels[0]:
            break
        run += 1
    return run


def refresh_annotator(session: Session, annotator: Annotator, quality: QualityConfig) -> None:
    """Recompute one annotator's skills and flags from the store, and suspend if the rule says so.

    Runs inside the caller's write transaction (the annotator's row is already locked).
    """
    mine = (Annotation.annotator_id == annotator.id, Annotation.kind.in_(WORK_KINDS))
    controls, correct = session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(case((Annotation.label == Item.gold_label, 1), else_=0)), 0),
        )
        .join(Item, Item.id == Annotation.item_id)
        .where(Annotation.annotator_id == annotator.id, Annotation.kind == "control")
    ).one()
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
    skills = dict(annotator.skills or {})
    skills.update(control_skills(int(correct), int(controls), confidence=quality.confidence_level))
    streak = _streak(recent) if recent else 0
    skills.update(
        answers=int(answers),
        fast=int(fast),
        seconds=float(seconds),
        streak=streak,
        max_streak=max(streak, int(skills.get("max_streak", 0))),
    )
    annotator.skills = skills
    flags = set(annotator.flags or [])
    if answers >= quality.min_answers_for_flags and fast > quality.max_fast_share * answers:
        flags.add("fast")
    if streak >= quality.max_same_label_streak:
        flags.add("streak")
    if flags != set(annotator.flags or []):
        annotator.flags = sorted(flags)
    if (
        annotator.status == "active"
        and annotator.role == "annotator"
        and controls >= quality.min_controls
        and skills["high"] < quality.min_control_accuracy
    ):
        annotator.status = "suspended"
        skills["suspended_because"] = (
            f"control accuracy {skills['accuracy']:.0%} over {controls} controls; "
            f"upper bound {skills['high']:.0%} < {quality.min_control_accuracy:.0%}"
        )
        annotator.skills = dict(skills)


def score_exam(session: Session, annotator: Annotator, quality: QualityConfig) -> None:
    """After an exam answer: once the attempt is complete, activate, keep for a retry, or decline."""
    from duolabel.exam import exam_items

    items = exam_items(session, annotator.exam_attempt, quality.exam_size)
    rows = session.execute(
        select(Annotation.label, Item.gold_label)
        .join(Item, Item.id == Annotation.item_id)
        .where(Annotation.annotator_id == annotator.id, Annotation.kind == "exam", Item.id.in_(items))
    ).all()
    if not items or len(rows) < len(items):
        return
    correct = sum(label == gold for label, gold in rows)
    exams = [*dict(annotator.skills or {}).get("exams", []), {"correct": correct, "total": len(items)}]
    annotator.skills = {**(annotator.skills or {}), "exams": exams}
    if correct >= quality.pass_mark * len(items) - 1e-9:
        annotator.status = "active"
        return
    retry_left = annotator.exam_attempt <= quality.exam_retries
    if not retry_left or not exam_items(session, annotator.exam_attempt + 1, quality.exam_size):
        annotator.status = "declined"


# -- agreement with the consensus -------------------------------------------------


def agreement_with_consensus(answers: pd.DataFrame) -> pd.Series:
    """Per worker, the share of their answers that agree with the majority of the others.

    ``answers`` has the columns ``task, worker, label``. An answer counts where at least
    two other workers answered the same task; it agrees when its label is among the
    others' most frequent labels. Workers with no such answer get NaN.

    Examples
    --------
    >>> df = pd.DataFrame({"task": [1, 1, 1, 2, 2, 2], "worker": list("abcabc"),
    ...                    "label": list("xxyxxx")})
    >>> agreement_with_consensus(df).to_dict()
    {'a': 1.0, 'b': 1.0, 'c': 0.5}
    """
    hits: dict[Any, int] = defaultdict(int)
    seen: dict[Any, int] = defaultdict(int)
    for _, group in answers.groupby("task", sort=False):
        if len(group) < 3:
            continue
        counts = Counter(group["label"])
        for worker, label in zip(group["worker"], group["label"], strict=True):
            others = counts.copy()
            others[label] -= 1
            top = max(others.values())
            seen[worker] += 1
            hits[worker] += others[label] == top
    workers = list(dict.fromkeys(answers["worker"]))
    return pd.Series(
        {w: hits[w] / seen[w] if seen[w] else float("nan") for w in workers}, name="agreement", dtype=float
    )


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
            seconds[who].append(float(value))
    rows = []
    for person in people:
        skills = person.skills or {}
        rows.append(
            {
                "name": person.name,
                "role": person.role,
                "status": person.status,
                "answers": int(skills.get("answers", 0)),
                "controls": int(skills.get("controls", 0)),
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
