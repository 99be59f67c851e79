"""The ``run`` loop and the project status: glue over the stages, nothing more.

Every stage reads from and writes to the store and skips work already done, so a run
killed at any point continues where it stopped when started again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from duolabel.aggregation import AggregateResult, aggregate_project
from duolabel.calibration import CalibrationResult, calibrate_project
from duolabel.costs import CostComparison, CostSummary, cost_comparison, cost_summary
from duolabel.io import ImportResult, export_labels, import_file
from duolabel.labelers import LabelResult, current_model_version, label_project
from duolabel.progress import Reporter, quiet
from duolabel.routing import RouteResult, route_project
from duolabel.store import Annotation, FinalLabel, Item, Prediction, Route, Run

if TYPE_CHECKING:
    from duolabel.project import Project

__all__ = ["RunSummary", "Status", "import_sources", "project_status", "run_project"]


@dataclass
class Status:
    """Counts per stage and the cost so far."""

    items: int
    golden: int
    model_version: str | None
    predicted: int
    calibrated: int
    accepted: int
    routed_to_people: int
    waiting_for_people: int
    answers: int
    final_by_source: dict[str, int]
    cost: CostSummary
    comparison: CostComparison
    routing: str = ""  # the operating point of the latest routing run, in words

    @property
    def final(self) -> int:
        return sum(self.final_by_source.values())


def project_status(project: Project) -> Status:
    version = current_model_version(project)
    with project.store.read() as session:
        count = lambda q: session.scalar(q) or 0  # noqa: E731
        items = count(select(func.count()).select_from(Item))
        golden = count(select(func.count()).select_from(Item).where(Item.role == "golden"))
        by_version = (
            select(func.count()).select_from(Prediction).where(Prediction.model_version == (version or ""))
        )
        predicted = count(by_version)
        calibrated = count(by_version.where(Prediction.confidence.is_not(None)))
        routes = dict(session.execute(select(Route.decision, func.count()).group_by(Route.decision)).all())
        final = dict(
            session.execute(select(FinalLabel.source, func.count()).group_by(FinalLabel.source)).all()
        )
        waiting = count(
            select(func.count())
            .select_from(Route)
            .where(Route.decision == "humans", Route.item_id.not_in(select(FinalLabel.item_id)))
        )
        answers = count(select(func.count()).select_from(Annotation))
        given = dict(
            session.execute(
                select(Annotation.item_id, func.count())
                .join(Route, Route.item_id == Annotation.item_id)
                .where(Route.decision == "humans", Route.item_id.not_in(select(FinalLabel.item_id)))
                .group_by(Annotation.item_id)
            ).all()
        )
        pending = sum(
            max(overlap - given.get(item_id, 0), 0)
            for item_id, overlap in session.execute(
                select(Route.item_id, Route.overlap).where(
                    Route.decision == "humans", Route.item_id.not_in(select(FinalLabel.item_id))
                )
            )
        )
        experts_pending = count(
            select(func.count())
            .select_from(Route)
            .where(Route.decision == "expert", Route.item_id.not_in(select(FinalLabel.item_id)))
        )
        last_route = session.scalar(
            select(Run.config)
            .where(Run.kind == "route", Run.status == "done")
            .order_by(Run.id.desc())
            .limit(1)
        )
    spent = cost_summary(project.store, project.config.costs)
    comparison = cost_comparison(
        spent,
        project.config.costs,
        items=items - golden,
        golden=golden,
        overlap=project.config.routing.overlap,
        answers_pending=pending,
        experts_pending=experts_pending,
    )
    return Status(
        items=items,
        golden=golden,
        model_version=version,
        predicted=predicted,
        calibrated=calibrated,
        accepted=routes.get("accept", 0),
        routed_to_people=routes.get("humans", 0),
        waiting_for_people=waiting,
        answers=answers,
        final_by_source=final,
        cost=spent,
        comparison=comparison,
        routing=(last_route or {}).get("guarantee", ""),
    )


@dataclass
class RunSummary:
    imports: list[ImportResult] = field(default_factory=list)
    label: list[LabelResult] = field(default_factory=list)
    calibration: list[CalibrationResult] = field(default_factory=list)
    route: RouteResult | None = None
    aggregate: AggregateResult | None = None
    exported: int = 0
    export_path: Path | None = None
    status: Status | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def import_sources(project: Project, *, progress: Reporter = quiet) -> list[ImportResult]:
    """Import the files the project file names under ``data`` (already imported ones are no-ops)."""
    results = []
    for source in project.config.data:
        with progress(f"Importing {source.path}", None) as advance:
            results.append(
                import_file(
                    project.store,
                    project.config.task,
                    project.resolve(source.path),
                    role=source.role,
                    gold_column=source.gold_column,
                    columns=source.columns,
                    batch=source.batch,
                    progress=advance,
                )
            )
    return results


def run_project(project: Project, *, progress: Reporter = quiet) -> RunSummary:
    """import -> label -> calibrate -> route -> aggregate -> export, resumable."""
    summary = RunSummary(imports=import_sources(project, progress=progress))
    summary.label = label_project(project, progress=progress)
    summary.calibration = calibrate_project(project)
    summary.route = route_project(project, progress=progress)
    summary.aggregate = aggregate_project(project)
    summary.export_path = project.resolve(project.config.export.path)
    summary.exported = export_labels(
        project.store, summary.export_path, model_version=current_model_version(project)
    )
    summary.status = project_status(project)
    return summary
