"""The multi-label side of ``duolabel simulate``: its table (the command's body stays in
``cli/__init__.py``, this keeps it thin)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from duolabel.errors import ProjectError

if TYPE_CHECKING:
    from duolabel.project import Project

__all__ = ["list_simulation_table"]


def list_simulation_table(project: Project, answers: Path | None, *, unsupported: list[str]) -> Table:
    """The multi-label simulation table; ``answers`` None: the answers in the store.

    ``unsupported`` names the options given that only single-label projects take.
    """
    from duolabel.simulate import stored_answers
    from duolabel.simulate_lists import simulate_lists
    from duolabel.stages.distill import labeling_version

    kind = project.config.task.type
    if answers is not None:
        raise ProjectError(
            f"for task.type {kind}, duolabel simulate replays the answers in the store: import "
            f"{answers.name} with 'duolabel import-answers' (it reads list answers) and pass --from-store"
        )
    if unsupported:
        raise ProjectError(f"{', '.join(unsupported)} is not available for task.type {kind} yet")
    version = labeling_version(project)
    if version is None:
        raise ProjectError("nothing to simulate yet: run 'duolabel label' and 'duolabel calibrate' first")
    rows = simulate_lists(project, stored_answers(project), version)
    table = Table(
        title="Simulation (multi-label: lists replayed against their gold lists)",
        caption="Hybrid: the model's list where its whole-list chance reaches the threshold target "
        "mode certifies on the golden items, people's answer (majority vote per label) elsewhere.",
    )
    for column in ("policy", "operating point", "subset accuracy", "micro-F1", "human share"):
        table.add_column(column, justify="left" if column in ("policy", "operating point") else "right")
    for row in rows:
        table.add_row(
            row.policy,
            row.point,
            f"{row.subset_accuracy:.3f}",
            f"{row.micro_f1:.3f}",
            f"{row.human_share:.0%}",
        )
    return table
