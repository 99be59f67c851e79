"""The list-valued side of ``duolabel simulate`` (multi-label, spans): its table (the command's
body stays in ``cli/__init__.py``, this keeps it thin)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from duolabel.errors import ProjectError

if TYPE_CHECKING:
    from duolabel.project import Project

__all__ = ["list_simulation_table"]

#: Per task type: the title's words, the two figures' column names and how people's answers are
#: aggregated, as the caption says it.
_WORDS = {
    "multi_label": (
        "multi-label: lists replayed against their gold lists",
        ("subset accuracy", "micro-F1"),
        "majority vote per label",
    ),
    "spans": (
        "spans: span lists replayed against their gold spans, exact match",
        ("whole-item accuracy", "span F1 (micro)"),
        "token vote, the winning tags merged into spans",
    ),
}


def _experts(project: Project, expert_accuracy: float | None) -> str:
    """How escalated items are scored, in words (the classification table says the same)."""
    cfg = project.config.routing
    p = cfg.expert_accuracy if expert_accuracy is None else expert_accuracy
    rule = (
        "gets the recorded expert answer where the store has one, else its gold list with probability "
        f"{p:.3g} and people's vote otherwise (routing.expert_accuracy, or --expert-accuracy)"
    )
    if cfg.expert_share <= 0:
        return f"Experts: none escalated (routing.expert_share is 0); an escalated item {rule}."
    return (
        f"Experts: the least sure {cfg.expert_share:g} of the routed items are escalated; an escalated "
        f"item {rule}."
    )


def list_simulation_table(
    project: Project, answers: Path | None, *, unsupported: list[str], expert_accuracy: float | None = None
) -> Table:
    """The multi-label or spans simulation table; ``answers`` None: the answers in the store.

    ``unsupported`` names the options given that only single-label projects take;
    ``expert_accuracy`` (spans) replaces ``routing.expert_accuracy``.
    """
    from duolabel.simulate import stored_answers
    from duolabel.simulate_lists import simulate_lists
    from duolabel.simulate_spans import simulate_spans
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
    title, figures, vote = _WORDS[kind]
    caption = (
        "Hybrid: the model's list where its whole-list chance reaches the threshold target mode "
        f"certifies on the golden items, people's answer ({vote}) elsewhere."
    )
    simulate = simulate_spans if kind == "spans" else simulate_lists
    rows = simulate(project, stored_answers(project), version, expert_accuracy=expert_accuracy)
    caption += " " + _experts(project, expert_accuracy)
    experts = project.config.routing.expert_share > 0
    table = Table(title=f"Simulation ({title})", caption=caption)
    columns = ["policy", "operating point", *figures, "human share"] + (["expert answers"] if experts else [])
    for column in columns:
        table.add_column(column, justify="left" if column in ("policy", "operating point") else "right")
    for row in rows:
        cells = [
            row.policy,
            row.point,
            f"{row.subset_accuracy:.3f}",
            f"{row.micro_f1:.3f}",
            f"{row.human_share:.0%}",
        ]
        if experts:
            cells.append(f"{row.expert_answers:,} ({row.expert_recorded:,} recorded)")
        table.add_row(*cells)
    return table
