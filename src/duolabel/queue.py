"""The human queue: moved to :mod:`duolabel.people.leases` (crowd work),
:mod:`duolabel.people.experts` (the expert queue) and :mod:`duolabel.people.assignments`."""

# temporary shim: removed when the layers are merged

from __future__ import annotations

from duolabel.people.assignments import WORK_KINDS, Task
from duolabel.people.experts import (
    EXPERT_REASONS,
    ExpertTaskView,
    enqueue_expert,
    expert_queue_counts,
    next_expert_task,
    open_expert_tasks,
    submit_expert_answer,
)
from duolabel.people.leases import (
    answers_given,
    lease_task,
    next_task,
    queue_counts,
    skip_task,
    submit_answer,
    undo_last_answer,
)

__all__ = [
    "EXPERT_REASONS",
    "WORK_KINDS",
    "ExpertTaskView",
    "Task",
    "answers_given",
    "enqueue_expert",
    "expert_queue_counts",
    "lease_task",
    "next_expert_task",
    "next_task",
    "open_expert_tasks",
    "queue_counts",
    "skip_task",
    "submit_answer",
    "submit_expert_answer",
    "undo_last_answer",
]
