"""The admin dashboard's tables, as DataFrames: shown as HTML, served as JSON and as CSV."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import pandas as pd
from sqlalchemy import case, func, select

from duolabel.core.tasks import task_type
from duolabel.errors import AccessError, shown
from duolabel.ledger import cost_summary, current_model_version
from duolabel.people.experts import expert_queue_counts
from duolabel.people.leases import queue_counts
from duolabel.people.qc import annotator_table
from duolabel.store import Annotation, Annotator, FinalLabel, Item, Route

if TYPE_CHECKING:
    from duolabel.project import Project

__all__ = ["TABLES", "dashboard_table"]


def progress_table(project: Project) -> pd.DataFrame:
    """Counts per stage of the pipeline."""
    from duolabel.pipeline import project_status

    status = project_status(project)
    rows = [
        ("items", status.items),
        ("golden items", status.golden),
        ("predicted by the model", status.predicted),
        ("calibrated", status.calibrated),
        ("accepted from the model", status.accepted),
        ("routed to people", status.routed_to_people),
        ("waiting for people", status.waiting_for_people),
        ("human answers", status.answers),
    ]
    rows += [(f"final labels: {source}", n) for source, n in sorted(status.final_by_source.items())]
    return pd.DataFrame(rows, columns=["stage", "count"])


def model_table(project: Project) -> pd.DataFrame:
    """The model that labels: a distilled student once it has won, else the project's
    labeler(s), with its version and, for a project that distils, why."""
    from duolabel.stages.distill import distill_summary, labeling_context

    working = labeling_context(project)
    names = ", ".join(c.label_name for c in working.config.labeler)
    rows = [("labeler", names), ("model version", current_model_version(working) or "not trained yet")]
    if why := distill_summary(project):
        rows.append(("why", why))
    return pd.DataFrame(rows, columns=["what", "value"])


def batches_table(project: Project) -> pd.DataFrame:
    """Per batch: items, routed to people, accepted, final labels and answers."""
    answers = (
        select(Annotation.item_id, func.count().label("n"))
        .where(Annotation.kind == "regular")
        .group_by(Annotation.item_id)
        .subquery()
    )
    with project.store.read() as session:
        rows = session.execute(
            select(
                Item.batch,
                func.count(Item.id),
                func.coalesce(func.sum(case((Route.decision == "humans", 1), else_=0)), 0),
                func.coalesce(func.sum(case((Route.decision == "accept", 1), else_=0)), 0),
                func.coalesce(func.sum(case((Route.decision == "expert", 1), else_=0)), 0),
                func.count(FinalLabel.item_id),
                func.coalesce(func.sum(answers.c.n), 0),
            )
            .outerjoin(Route, Route.item_id == Item.id)
            .outerjoin(FinalLabel, FinalLabel.item_id == Item.id)
            .outerjoin(answers, answers.c.item_id == Item.id)
            .where(Item.role != "synthetic")  # training data, not a batch to label
            .group_by(Item.batch)
            .order_by(Item.batch)
        ).all()
    columns = ["batch", "items", "to_people", "accepted", "to_experts", "final_labels", "answers"]
    return pd.DataFrame([tuple(row) for row in rows], columns=columns)


def queues_table(project: Project) -> pd.DataFrame:
    """Sizes of the human queue and of the expert queues."""
    human = queue_counts(project.store)
    expert = expert_queue_counts(project.store)
    rows = [(f"people: {key}", value) for key, value in human.items()]
    rows += [(f"experts: {reason} (open)", value) for reason, value in expert.items()]
    return pd.DataFrame(rows, columns=["queue", "count"])


def costs_table(project: Project) -> pd.DataFrame:
    """The cost so far, from the ledger and the answers given."""
    cost = cost_summary(project.store, project.config.costs)
    rows = [
        ("model", cost.model),
        (f"people ({cost.human_answers} answers)", cost.humans),
        (f"experts ({cost.expert_answers} answers)", cost.experts),
        ("set-up", cost.setup),
        ("total", cost.total),
    ]
    return pd.DataFrame(
        [(what, round(value, 4), cost.currency) for what, value in rows], columns=["what", "cost", "currency"]
    )


def annotators_table(project: Project) -> pd.DataFrame:
    """The per-annotator quality table (see :func:`duolabel.people.qc.annotator_table`)."""
    return annotator_table(project.store, project.config.quality)


def agreement_table(project: Project) -> pd.DataFrame:
    """The task type's agreement figures (:meth:`duolabel.core.tasks.TaskType.agreement`:
    Krippendorff's alpha at the type's level and Fleiss' kappa) over the answers to routed
    items, suspended annotators left out; blank while no item has two answers."""
    labels = project.config.task.label_names
    with project.store.read() as session:
        rows = session.execute(
            select(Annotation.item_id, Annotation.annotator_id, Annotation.label)
            .join(Annotator, Annotator.id == Annotation.annotator_id)
            .where(Annotation.kind == "regular", Annotator.status != "suspended")
        ).all()
    frame = pd.DataFrame(rows, columns=["task", "worker", "label"])
    sizes = frame.groupby("task").size() if len(frame) else pd.Series(dtype=int)
    shared = int((sizes >= 2).sum())
    figures = task_type(project.config.task.type).agreement(frame, labels)
    out = [
        (name, round(value, 4) if shared and math.isfinite(value) else None, shared)
        for name, value in figures.items()
    ]
    return pd.DataFrame(out, columns=["figure", "value", "items_with_2_or_more_answers"])


def audits_table(project: Project) -> pd.DataFrame:
    """Audited accuracy of the shipped labels per source (:func:`duolabel.stages.audit.audit_estimates`)."""
    from duolabel.stages.audit import audit_estimates

    rows = [
        (e.source, e.audited, e.agreed, round(e.accuracy, 4), round(e.low, 4), round(e.high, 4))
        for e in audit_estimates(project)
    ]
    return pd.DataFrame(rows, columns=["source", "audited", "expert_agreed", "accuracy", "low", "high"])


def alarms_table(project: Project) -> pd.DataFrame:
    """Quality alarms (:func:`duolabel.stages.audit.alarms`)."""
    from duolabel.stages.audit import alarms

    return pd.DataFrame(
        [(a.kind, a.scope, a.message) for a in alarms(project)], columns=["kind", "scope", "alarm"]
    )


TABLES: dict[str, Callable[[Project], pd.DataFrame]] = {
    "alarms": alarms_table,
    "progress": progress_table,
    "model": model_table,
    "batches": batches_table,
    "queues": queues_table,
    "annotators": annotators_table,
    "costs": costs_table,
    "agreement": agreement_table,
    "audits": audits_table,
}


def dashboard_table(project: Project, name: str) -> pd.DataFrame:
    """One of :data:`TABLES` by name; ``AccessError`` (404) for any other name."""
    if name not in TABLES:
        raise AccessError(f"there is no table {shown(name)}; tables: {', '.join(TABLES)}", status=404)
    return TABLES[name](project)
