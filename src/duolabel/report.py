"""``duolabel report``: one self-contained HTML file (plots embedded as PNG data, no network)
with the quality-versus-human-share curve and the chosen point, the reliability diagram
before and after calibration, the cost comparison, the per-label confusion, the routing
breakdown and, once people have worked, the annotator table."""

from __future__ import annotations

import base64
import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import func, select

from duolabel.core.calibration import calibration_metrics, reliability_diagram
from duolabel.core.probs import as_matrix
from duolabel.errors import ProjectError
from duolabel.files import atomic_write, writable_file
from duolabel.formatting import fmt_figure, money
from duolabel.store import Annotation, Annotator, FinalLabel, Item, Prediction, Route

if TYPE_CHECKING:
    from duolabel.project import Project

__all__ = ["write_report"]


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    fig.clf()
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@dataclass
class _Golden:
    raw: np.ndarray
    calibrated: np.ndarray
    gold: np.ndarray


def _golden(project: Project, version: str) -> _Golden:
    labels = project.config.task.label_names
    with project.store.read() as session:
        rows = session.execute(
            select(Prediction.probs, Prediction.calibrated, Item.gold_label)
            .join(Item, Item.id == Prediction.item_id)
            .where(Prediction.model_version == version, Prediction.out_of_fold.is_(True))
            .where(Prediction.calibrated.is_not(None), Item.role == "golden", Item.gold_label.is_not(None))
        ).all()
    return _Golden(
        as_matrix([r.probs for r in rows], labels),
        as_matrix([r.calibrated for r in rows], labels),
        np.array([labels.index(r.gold_label) for r in rows]),
    )


def _systems(project: Project) -> list[dict[str, Any]]:
    """A pairwise project's ranking of the systems named in its items' fields (``model_a`` /
    ``model_b``), from the final labels: :func:`~duolabel.core.pairwise.system_ranking`."""
    from duolabel.core.pairwise import system_ranking

    with project.store.read() as session:
        query = select(FinalLabel.label, Item.fields).join(Item, Item.id == FinalLabel.item_id)
        found = session.execute(query.order_by(Item.seq)).all()
    ranking = system_ranking([label for label, _ in found], [fields or {} for _, fields in found])
    return [{**row, "strength": fmt_figure(row["strength"])} for row in ranking]


#: The last line of an error about the report's path.
NO_REPORT = "No report was written."


def write_report(project: Project, path: Path) -> Path:
    """Write the project's report to ``path`` (one HTML file) and return the path; written
    next to it and moved into place (:func:`duolabel.files.atomic_write`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from jinja2 import Environment

    from duolabel.core.evidence import ERROR_SIGNALS
    from duolabel.core.tasks import task_type
    from duolabel.pipeline import plan as plan_routing
    from duolabel.pipeline import project_status
    from duolabel.stages.distill import labeling_context, labeling_version
    from duolabel.stages.route import error_ranking_of
    from duolabel.stages.route_sample import routes_by_sample
    from duolabel.training_data import without_golden

    # A path that cannot take the file is told before the figures are drawn.
    writable_file(path, outcome=NO_REPORT)
    kind = project.config.task.type
    if task_type(kind).list_valued and kind not in ("multi_label", "spans"):
        # The calibration and confusion views read one label per golden item.
        raise ProjectError(
            f"duolabel report is not built for task.type {kind} yet (it reads one label per item); "
            "'duolabel status' shows the routing and 'duolabel export' the lists"
        )
    version = labeling_version(project)  # the distilled student's once it has won
    if version is None:
        raise ProjectError("nothing to report yet: run 'duolabel run' (or label and calibrate) first")
    if kind == "multi_label":  # the views that make sense for lists (report_lists.py)
        from duolabel.report_lists import write_list_report

        return write_list_report(project, path, version)
    if kind == "spans":  # span F1 and the item score's calibration (report_spans.py)
        from duolabel.report_spans import write_span_report

        return write_span_report(project, path, version)
    if without_golden(project):
        # Every view below (the quality curve, calibration, confusion) reads the golden items.
        raise ProjectError(
            "duolabel report reads the golden items and this project has none: 'duolabel status' "
            "shows the sample certificate and 'duolabel export' the labels"
        )
    labels = project.config.task.label_names
    plan = plan_routing(project)
    ranking = [
        (
            name,
            ERROR_SIGNALS[name][0] if name in ERROR_SIGNALS else "all of them: the meta-router, cross-fitted",
            fmt_figure(v),
        )
        for name, v in error_ranking_of(labeling_context(project), plan).items()
    ]
    golden = _golden(project, version)
    status = project_status(project)
    plots: dict[str, str] = {}

    fig, ax = plt.subplots(figsize=(7, 4.2))
    curve = list(
        {round(p.human_share, 9): p for p in sorted(plan.curve, key=lambda p: p.human_share)}.values()
    )
    share = [p.human_share for p in curve]
    ax.fill_between(share, [p.low for p in curve], [p.high for p in curve], alpha=0.25, label="90% interval")
    ax.plot(share, [p.hybrid_accuracy for p in curve], label="hybrid (expected)")
    point = plan.point
    ax.scatter(
        [1 - point.model_share], [point.expected_accuracy], color="crimson", zorder=3, label="chosen point"
    )
    if point.certificate is not None and point.certificate.certified:
        ax.axhline(point.certificate.target, color="crimson", linestyle=":", label="target")
    ax.set_xlabel("share of items sent to people")
    ax.set_ylabel("accuracy")
    ax.legend(loc="lower right")
    plots["curve"] = _png(fig)

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    for name, probs in (("before", golden.raw), ("after (cross-validated)", golden.calibrated)):
        bins = reliability_diagram(probs, golden.gold) if len(probs) else []
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o", label=name)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left")
    plots["reliability"] = _png(fig)

    cmp = status.comparison
    fig, ax = plt.subplots(figsize=(7, 3))
    names = ["people alone", "model alone", "hybrid", "golden set"]
    values = [cmp.humans_only, cmp.model_only, cmp.hybrid, cmp.golden_set]
    ax.barh(names, values, color=["#888", "#4c72b0", "#55a868", "#c44e52"])
    ax.invert_yaxis()
    ax.set_xlabel(cmp.currency)
    plots["cost"] = _png(fig)
    plt.close("all")

    metric_names = ["accuracy", "ece", "brier", "nll", "auroc"]
    metrics = []
    for name, probs in (("before", golden.raw), ("after", golden.calibrated)):
        m = calibration_metrics(probs, golden.gold) if len(probs) else {}
        metrics.append((name, {k: fmt_figure(m.get(k)) for k in metric_names}))
    confusion = np.zeros((len(labels), len(labels)), dtype=int)
    for g, p in zip(golden.gold, golden.calibrated.argmax(axis=1), strict=True):
        confusion[g, p] += 1
    costs = [
        ("spent so far", money(status.cost.total, cmp.currency)),
        (f"people alone, {cmp.items:,} items (estimate)", money(cmp.humans_only, cmp.currency)),
        ("model alone (ledger)", money(cmp.model_only, cmp.currency)),
        ("hybrid, when people finish", money(cmp.hybrid, cmp.currency)),
        ("golden set (experts + set-up)", money(cmp.golden_set, cmp.currency)),
        ("saving vs people alone", money(cmp.saving, cmp.currency)),
        ("return on the model + golden set", "–" if cmp.roi is None else f"{cmp.roi:,.1f}x"),
    ]
    with project.store.read() as session:
        routes = Counter(
            dict(session.execute(select(Route.decision, func.count()).group_by(Route.decision)).all())
        )
        finals = dict(
            session.execute(select(FinalLabel.source, func.count()).group_by(FinalLabel.source)).all()
        )
        answers = dict(
            session.execute(
                select(Annotation.annotator_id, func.count()).group_by(Annotation.annotator_id)
            ).all()
        )
        people = list(session.scalars(select(Annotator).order_by(Annotator.name)))
        annotators = [
            {
                "name": a.name,
                "role": a.role,
                "status": a.status,
                "answers": answers.get(a.id, 0),
                "controls": (a.skills or {}).get("controls", 0),
                "accuracy": fmt_figure((a.skills or {}).get("accuracy")),
            }
            for a in people
        ]
    from datetime import UTC, datetime

    from duolabel.stages.audit import audit_estimates
    from duolabel.synthetic import synthetic_summary

    audits = [
        (e.source, e.audited, e.agreed, f"{e.accuracy:.1%}", f"{e.low:.1%} – {e.high:.1%}")
        for e in audit_estimates(project)
    ]

    learning = project.learning()
    learning_rows = [
        (
            p.labels,
            f"{p.accuracy:.1%}",
            f"{p.accuracy_low:.1%} – {p.accuracy_high:.1%}",
            fmt_figure(p.auroc),
            f"{fmt_figure(p.auroc_low)} – {fmt_figure(p.auroc_high)}",
        )
        for p in (learning.curve if learning else [])
    ]

    template = (Path(__file__).parent / "templates" / "report.html").read_text(encoding="utf-8")
    html = (
        Environment(autoescape=True)
        .from_string(template)
        .render(
            name=project.path.name,
            model_version=version,
            golden=len(golden.gold),
            generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            # A sample certificate is not the golden items' point: the last route run's own words.
            guarantee=status.routing if routes_by_sample(project.config.routing) else plan.point.describe(),
            plots=plots,
            metric_names=metric_names,
            metrics=metrics,
            ranking=ranking,
            costs=costs,
            labels=labels,
            confusion=list(zip(labels, confusion.tolist(), strict=True)),
            routes=[(k, routes.get(k, 0)) for k in ("accept", "humans", "expert")],
            finals=sorted(finals.items()),
            annotators=annotators if any(a["answers"] for a in annotators) else [],
            audits=audits,
            alarms=[a.message for a in status.alarms],
            strategy=project.config.learning.strategy,
            learning_curve=learning_rows,
            learning_verdict=learning.describe() if learning else "",
            learning_model=learning.model if learning else "",
            synthetic=synthetic_summary(project),
            systems=_systems(project) if kind == "pairwise" else [],
        )
    )
    with atomic_write(path, outcome=NO_REPORT) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return path
