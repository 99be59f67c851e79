"""The onboarding exam: moved to :mod:`duolabel.people.exam`."""

# temporary shim: removed when the layers are merged

from __future__ import annotations

from duolabel.people.exam import ExamResult, exam_items, exam_result, exam_task, retry_exam, score_exam

__all__ = ["ExamResult", "exam_items", "exam_result", "exam_task", "retry_exam", "score_exam"]
