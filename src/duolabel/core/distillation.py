"""Whether a distilled student replaces its teacher: the comparison on the golden items.

The student (a small trainable labeler) learned from the teacher's (an LLM labeler's)
confident labels and from people's labels. It takes over the labeling when, on the same
golden items, its out-of-fold accuracy is at least the teacher's and it costs no more per
item. A tie goes to the student: it is the cheaper model, and equal accuracy is all the
certificate downstream needs, since routing and calibration then work from the student's
own out-of-fold golden predictions.

The intervals are reported so a reader can see how much the golden set can tell the two
apart; the switch itself compares the point estimates (both models are measured on the same
items, so their difference is less noisy than either interval suggests).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from duolabel.core.rules import wilson_interval

__all__ = ["DistillDecision", "decide_distillation"]


@dataclass(frozen=True)
class DistillDecision:
    """The comparison behind a switch, with both accuracies, their Wilson intervals and the
    costs per item; ``winner`` is ``"student"`` or ``"teacher"``."""

    winner: str
    golden: int
    student_accuracy: float
    student_interval: tuple[float, float]
    teacher_accuracy: float
    teacher_interval: tuple[float, float]
    student_cost_per_item: float
    teacher_cost_per_item: float
    confidence: float

    @property
    def reason(self) -> str:
        """The decision in one line, with the figures behind it."""
        verdict = (
            "the student labels: at least as accurate and no dearer"
            if self.winner == "student"
            else "the teacher keeps labeling: the student is "
            + ("less accurate" if self.student_accuracy < self.teacher_accuracy else "dearer")
        )
        student = _figure(self.student_accuracy, self.student_interval)
        teacher = _figure(self.teacher_accuracy, self.teacher_interval)
        return (
            f"{verdict} (golden accuracy on {self.golden} items: student {student}, teacher {teacher}, "
            f"{self.confidence:.0%} Wilson intervals; cost per item: student "
            f"{self.student_cost_per_item:.3g}, teacher {self.teacher_cost_per_item:.3g})"
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for the ledger."""
        return {**asdict(self), "reason": self.reason}


def _figure(accuracy: float, interval: tuple[float, float]) -> str:
    return f"{accuracy:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"


def decide_distillation(
    student_correct: np.ndarray,
    teacher_correct: np.ndarray,
    *,
    student_cost_per_item: float,
    teacher_cost_per_item: float,
    confidence: float = 0.9,
) -> DistillDecision:
    """Compare a student with its teacher on the same golden items.

    Parameters
    ----------
    student_correct, teacher_correct : array of bool
        Per golden item, in the same order: whether each model's label is right. The
        student's must be out-of-fold (its model never trained on that item); an item the
        teacher abstained on counts as wrong for it (people would have had to label it).
    student_cost_per_item, teacher_cost_per_item : float
        What labeling one item costs with each model.
    confidence : float
        Level of the Wilson intervals reported.

    Examples
    --------
    >>> d = decide_distillation(
    ...     np.array([1, 1, 1, 0], bool), np.array([1, 1, 0, 0], bool),
    ...     student_cost_per_item=0.0001, teacher_cost_per_item=0.002,
    ... )
    >>> d.winner, d.student_accuracy, d.teacher_accuracy
    ('student', 0.75, 0.5)
    >>> decide_distillation(
    ...     np.array([1, 0], bool), np.array([1, 1], bool),
    ...     student_cost_per_item=0.0, teacher_cost_per_item=1.0,
    ... ).winner
    'teacher'
    """
    student = np.asarray(student_correct, dtype=bool)
    teacher = np.asarray(teacher_correct, dtype=bool)
    if student.shape != teacher.shape or student.ndim != 1:
        raise ValueError(
            f"both models need one answer per golden item (got {student.shape} and {teacher.shape})"
        )
    if not len(student):
        raise ValueError("no golden item to compare the student and the teacher on")
    n = len(student)
    s_ok, t_ok = int(student.sum()), int(teacher.sum())
    wins = s_ok >= t_ok and student_cost_per_item <= teacher_cost_per_item
    return DistillDecision(
        winner="student" if wins else "teacher",
        golden=n,
        student_accuracy=s_ok / n,
        student_interval=wilson_interval(s_ok, n, confidence=confidence),
        teacher_accuracy=t_ok / n,
        teacher_interval=wilson_interval(t_ok, n, confidence=confidence),
        student_cost_per_item=float(student_cost_per_item),
        teacher_cost_per_item=float(teacher_cost_per_item),
        confidence=confidence,
    )
