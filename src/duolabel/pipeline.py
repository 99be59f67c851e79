"""The ``run`` loop and the ctx status: glue over the stages, nothing more.

Every stage reads from and writes to the store and skips work already done, so a run
killed at any point continues where it stopped when started again.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from duolabel.context import Context
from duolabel.core.audit import Alarm
from duolabel.core.costs import CostComparison, CostSummary
from duolabel.errors import ConfigError, DataError, ProjectError, shown
from duolabel.export import export_labels
from duolabel.files import writable_file
from duolabel.io import FORMATS, ImportResult, import_file, stating
from duolabel.ledger import compare_costs as cost_comparison
from duolabel.ledger import cost_summary, current_model_version, ledger_run
from duolabel.people.experts import expert_queue_counts
from duolabel.progress import Reporter, quiet
from duolabel.stages.aggregate import AggregateResult, aggregate_project
from duolabel.stages.audit import alarms, apply_expert_answers, effective_routing, tighten
from duolabel.stages.calibrate import CalibrationResult, calibrate_project
from duolabel.stages.distill import (
    DistillResult,
    distill_project,
    distill_summary,
    labeling_context,
    labeling_version,
)
from duolabel.stages.label import LabelResult, label_project
from duolabel.stages.learn import Purchase, buy_golden, order_queue, record_learning, stop_set
from duolabel.stages.route import (
    Plan,
    RouteResult,
    configured_policy,
    follow_up_project,
    plan_routing,
    route_project,
)
from duolabel.stages.route_sample import route_with_sample, routes_by_sample, sample_state
from duolabel.store import Annotation, FinalLabel, Item, Prediction, Redaction, Route, Run
from duolabel.synthetic import synthetic_status
from duolabel.training_data import NO_CALIBRATION, teacher_version, without_golden

__all__ = [
    "aggregate",
    "calibrate",
    "distill",
    "exclusive",
    "label",
    "plan",
    "route",
    "BatchReport",
    "RunSummary",
    "Status",
    "batch_order",
    "batch_reports",
    "import_sources",
    "project_status",
    "run_project",
]


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
    labeling: str = ""  # with distillation: which model labels and why
    privacy: str = ""  # what privacy.redact replaced before text left the machine
    synthetic: str = ""  # the synthetic training items, their checks and taxonomy, in words
    alarms: list[Alarm] = field(default_factory=list)
    expert_tasks: dict[str, int] = field(default_factory=dict)  # open expert tasks per reason

    @property
    def final(self) -> int:
        return sum(self.final_by_source.values())


def project_status(ctx: Context) -> Status:
    labeling = distill_summary(ctx)
    ctx = labeling_context(ctx)
    version = current_model_version(ctx)
    with ctx.store.read() as session:
        count = lambda q: session.scalar(q) or 0  # noqa: E731
        # Synthetic items are training data, not items to label (duolabel.synthetic).
        items = count(select(func.count()).select_from(Item).where(Item.role != "synthetic"))
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
        # The dynamic policy asks one person at a time, so the answers it asks for now
        # understate what an item will take: its planning figure (what `plan` counts) is used.
        expected = configured_policy(ctx.config.routing).expected_answers
        pending = sum(
            max(max(overlap, expected) - given.get(item_id, 0), 0)
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
        redacted = count(select(func.count(func.distinct(Redaction.item_id))))
        kinds = session.execute(
            select(Redaction.kind, func.count()).group_by(Redaction.kind).order_by(Redaction.kind)
        ).all()
        last_route = session.scalar(
            select(Run.config)
            .where(Run.kind == "route", Run.status == "done")
            .order_by(Run.id.desc())
            .limit(1)
        )
    spent = cost_summary(ctx.store, ctx.config.costs)
    comparison = cost_comparison(
        spent,
        ctx.config.costs,
        items=items - golden,
        golden=golden,
        overlap=ctx.config.routing.overlap,
        answers_pending=math.ceil(pending),
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
        routing=_routing_note(ctx, last_route),
        labeling=labeling,
        privacy=(
            f"personal data replaced in {redacted} items before they went to a remote labeler ("
            + ", ".join(f"{kind} {n}" for kind, n in kinds)
            + ")"
            if redacted
            else ""
        ),
        synthetic=synthetic_status(ctx),
        alarms=alarms(ctx),
        expert_tasks=expert_queue_counts(ctx.store),
    )


@dataclass
class RunSummary:
    imports: list[ImportResult] = field(default_factory=list)
    label: list[LabelResult] = field(default_factory=list)
    calibration: list[CalibrationResult] = field(default_factory=list)
    route: RouteResult | None = None
    aggregate: AggregateResult | None = None
    distill: DistillResult | None = None
    golden: Purchase | None = None  # learning.buy_golden's top-up of the experts' golden queue
    exported: int = 0
    export_path: Path | None = None
    status: Status | None = None
    batches: list[BatchReport] = field(default_factory=list)
    waiting_batch: str | None = None  # the batch whose items wait for people
    extra: dict[str, Any] = field(default_factory=dict)


def import_sources(ctx: Context, *, progress: Reporter = quiet) -> list[ImportResult]:
    """Import the files the ctx file names under ``data`` (already imported ones are no-ops)."""
    results = []
    for index, source in enumerate(ctx.config.data):
        # Each file imports whole or not at all; the files before a refused one are in.
        before = ", ".join(str(earlier.path) for earlier in ctx.config.data[:index])
        outcome = (
            f"Nothing of {source.path} was imported; the files before it were ({before})." if before else None
        )
        outcome = outcome or "Nothing was imported."
        with progress(f"Importing {source.path}", None) as advance, stating(outcome):
            results.append(
                import_file(
                    ctx.store,
                    ctx.config.task,
                    ctx.resolve(source.path),
                    role=source.role,
                    gold_column=source.gold_column,
                    columns=source.columns,
                    batch=source.batch,
                    progress=advance,
                )
            )
    return results


def batch_order(ctx: Context) -> list[str]:
    """The batches of regular items, in the order they were imported."""
    with ctx.store.read() as session:
        rows = session.execute(
            select(Item.batch, func.min(Item.seq))
            .where(Item.role == "regular")
            .group_by(Item.batch)
            .order_by(func.min(Item.seq))
        ).all()
    return [batch for batch, _ in rows]


def _waiting(ctx: Context, batches: list[str]) -> int:
    with ctx.store.read() as session:
        return (
            session.scalar(
                select(func.count())
                .select_from(Route)
                .join(Item, Item.id == Route.item_id)
                .where(Route.decision.in_(["humans", "expert"]), Item.batch.in_(batches))
                .where(Route.item_id.not_in(select(FinalLabel.item_id)))
            )
            or 0
        )


def _finished(ctx: Context, batch: str) -> bool:
    """Every item of the batch has a final label."""
    with ctx.store.read() as session:
        open_items = session.scalar(
            select(func.count())
            .select_from(Item)
            .where(Item.batch == batch, Item.role == "regular")
            .where(Item.id.not_in(select(FinalLabel.item_id)))
        )
    return not open_items


@dataclass
class BatchReport:
    """How one batch was labelled: the model's share, the people's, and the model that routed it."""

    batch: str
    items: int
    accepted: int
    to_people: int
    waiting: int
    model_version: str | None
    golden_accuracy: float | None  # cross-validated, of the model that routed the batch

    @property
    def human_share(self) -> float:
        decided = self.accepted + self.to_people
        return self.to_people / decided if decided else 0.0


def batch_reports(ctx: Context) -> list[BatchReport]:
    """One line per batch, from the routes and the ledger's ``batch`` entries."""
    with ctx.store.read() as session:
        counts: dict[str, Counter[str]] = {}
        for batch, decision, final, n in session.execute(
            select(Item.batch, Route.decision, FinalLabel.item_id.is_not(None), func.count())
            .join(Route, Route.item_id == Item.id)
            .outerjoin(FinalLabel, FinalLabel.item_id == Item.id)
            .group_by(Item.batch, Route.decision, FinalLabel.item_id.is_not(None))
        ):
            counts.setdefault(batch, Counter())[decision] += n
            if decision != "accept" and not final:
                counts[batch]["waiting"] += n
        sizes = dict(
            session.execute(
                select(Item.batch, func.count()).where(Item.role == "regular").group_by(Item.batch)
            ).all()
        )
        ledger = {
            run.usage.get("batch"): run.usage
            for run in session.scalars(
                select(Run).where(Run.kind == "batch", Run.status == "done").order_by(Run.id)
            )
        }
    reports = []
    for batch in batch_order(ctx):
        c = counts.get(batch, Counter())
        entry = ledger.get(batch, {})
        reports.append(
            BatchReport(
                batch,
                sizes.get(batch, 0),
                c["accept"],
                c["humans"] + c["expert"],
                c["waiting"],
                entry.get("model_version"),
                entry.get("golden_accuracy"),
            )
        )
    return reports


def exclusive(ctx: Context) -> AbstractContextManager[None]:
    """The project lock of the writing stages: two of them at once on one project would
    insert the same rows twice (issue 12 item 10). A second process gets a one-line error
    naming the holder; people's work in the web app never takes the lock, so they keep working
    (only an admin's "aggregate now" button does, through :func:`aggregate`)."""
    return ctx.store.lock("pipeline")


def label(ctx: Context, **options: Any) -> list[LabelResult]:
    """Fit the labeler(s) and label every item, under the project lock (with the distilled
    student in its teacher's place once it has won); a trainable labeler's new version
    also predicts the learning stage's stop set."""
    with exclusive(ctx):
        return label_project(labeling_context(ctx), stop_set=stop_set(ctx), **options)


def calibrate(ctx: Context) -> list[CalibrationResult]:
    """Calibrate each labeler on the golden items, under the project lock, then measure the
    model's learning curve and stop-set agreement once (what ``status`` reads)."""
    with exclusive(ctx):
        work = labeling_context(ctx)
        if without_golden(work):
            raise ProjectError(f"nothing to calibrate on: calibration is {NO_CALIBRATION}")
        results = calibrate_project(work)
        record_learning(work)
        return results


def route(ctx: Context, **options: Any) -> RouteResult:
    """Route under the routing settings in force (the project's, raised by audit tightening),
    then order the people's queue by the active-learning strategy (``learning.order_queue``)."""
    with exclusive(ctx):
        working = labeling_context(ctx)
        routing = effective_routing(ctx)
        if routes_by_sample(routing):
            # The dataset guarantee certified from a sample: no golden items, no operating
            # point to plan on them (duolabel.stages.route_sample).
            decided, state, cert, version = route_with_sample(working, routing=routing, **options)
            note = state.message or ("" if cert is None else cert.describe())
            result = RouteResult(version, Counter(decided), note=note, sample_certificate=cert)
        else:
            result = route_project(working, routing=routing, **options)
        order_queue(working)
        return result


def plan(ctx: Context, *, items_to_route: int = 0) -> Plan:
    """The operating point routing would choose now, under the settings in force."""
    return plan_routing(labeling_context(ctx), items_to_route=items_to_route, routing=effective_routing(ctx))


def distill(ctx: Context, *, progress: Reporter = quiet) -> DistillResult:
    """Teach the student from the teacher's confident labels and decide which one labels."""
    with exclusive(ctx):
        return distill_project(ctx, progress=progress)


def _distill_due(ctx: Context) -> bool:
    """``distill.enabled`` and the teacher has labelled something to learn from."""
    return ctx.config.distill.enabled and teacher_version(ctx) is not None


def aggregate(ctx: Context, *, refresh: bool = False) -> AggregateResult:
    """People's answers become final labels, then experts' answers replace theirs.

    The dynamic policy's follow-up runs first: an item whose asked-for answers are in either
    gets one more person, goes to an expert, or is left for aggregation to finalize.
    """
    with exclusive(ctx):
        ctx = labeling_context(ctx)
        follow_up_project(ctx)
        result = aggregate_project(ctx, refresh=refresh)
        apply_expert_answers(ctx)
    return result


def run_project(
    ctx: Context, *, progress: Reporter = quiet, imported: Callable[[], None] | None = None
) -> RunSummary:
    """import -> for each batch: label -> calibrate -> route -> aggregate; then export. Resumable.

    Batches are processed in import order. A batch whose items wait for people stops the loop:
    the next run aggregates their answers, retrains the labeler on them (a new model version,
    with out-of-fold predictions for the next calibration) and goes on with the next batch. A
    finished batch keeps its labels: later models label and route only later batches.
    ``imported`` is called once the data files are in, before any labeling (the CLI prints
    its sanity warnings there, when they count the items the run works on).
    """
    _check_export_path(ctx)
    with exclusive(ctx):
        return _run_locked(ctx, progress=progress, imported=imported)


def _check_export_path(ctx: Context) -> Path:
    """``export.path``, resolved, or a :class:`ConfigError` naming the key: the run checks it
    before any work, as a run of an hour must not fail at its very end on a value it could
    read at the start (an extension that names no format; a device, pipe or folder)."""
    value = ctx.config.export.path
    path = ctx.resolve(value)
    fix = "set a file name such as out/labels.csv: duolabel config set export.path out/labels.csv"
    if path.suffix.lower() not in FORMATS:
        got = f"the extension {path.suffix!r}" if path.suffix else "no extension"
        raise ConfigError(
            f"export.path {shown(value)}: the export's format comes from its extension, .csv, .jsonl or "
            f".parquet, and it has {got}; {fix}. Nothing was run."
        )
    try:
        writable_file(path, outcome="")
    except DataError as exc:
        raise ConfigError(
            f"export.path {shown(value)}: {exc.problems[0].message}; {fix}. Nothing was run."
        ) from None
    return path


def _routing_note(ctx: Context, last_route: dict[str, Any] | None) -> str:
    """The last route run's guarantee; while a sample certificate waits for people, how many
    of the sample's labels are still missing now (answers may have come in since)."""
    if routes_by_sample(ctx.config.routing):
        state = sample_state(ctx)
        if state is not None and state.missing:
            return state.message
    return (last_route or {}).get("guarantee", "")


def _run_locked(ctx: Context, *, progress: Reporter, imported: Callable[[], None] | None) -> RunSummary:
    summary = RunSummary(imports=import_sources(ctx, progress=progress))
    if imported is not None:
        imported()
    batches = batch_order(ctx)
    if batches:
        # Answers given since the last run finish their items first, so the labeler of the
        # next batch learns from them.
        summary.aggregate = aggregate(ctx)
    for batch in batches if batches else [None]:
        if batch is not None and _finished(ctx, batch):
            continue
        active = [batch] if batch is not None else None
        if _distill_due(ctx):
            # Before each batch the teacher has not labelled: once the student is as good,
            # it labels the batch and the teacher is not called for it.
            summary.distill = distill_project(ctx, progress=progress)
        work = labeling_context(ctx)
        summary.label = label_project(work, batches=active, progress=progress, stop_set=stop_set(ctx))
        if without_golden(work):
            summary.extra["calibration"] = NO_CALIBRATION
        else:
            summary.calibration = calibrate_project(work)
            record_learning(work)
        summary.route = route(ctx, batches=active, progress=progress)
        summary.aggregate = aggregate(ctx)
        summary.golden = buy_golden(work)
        if batch is None:
            break
        _record_batch(work, batch, summary)
        tighten(ctx, alarms(ctx))
        if _waiting(ctx, [batch]):
            summary.waiting_batch = batch
            break
    # The run wrote routes and queue positions in bulk: the web app's next-task plans need
    # fresh statistics now, not when autovacuum gets round to it (PostgreSQL).
    ctx.store.analyze()
    summary.batches = batch_reports(ctx)
    summary.export_path = ctx.resolve(ctx.config.export.path)
    summary.exported = export_labels(
        ctx.store,
        summary.export_path,
        model_version=labeling_version(ctx),
        task=ctx.config.task,
    )
    summary.status = project_status(ctx)
    return summary


def _record_batch(ctx: Context, batch: str, summary: RunSummary) -> None:
    """A ledger entry per processed batch: the model that routed it and how well it did."""
    version = current_model_version(ctx)
    accuracy = summary.calibration[-1].after.get("accuracy") if summary.calibration else None
    route = summary.route
    config = {"batch": batch, "model_version": version}
    with ledger_run(ctx.store, "batch", config) as run, ctx.store.write() as session:
        usage = {
            "batch": batch,
            "model_version": version,
            "golden_accuracy": accuracy,
            **({k: int(v) for k, v in route.decided.items()} if route else {}),
        }
        run.record(session, usage, 0.0)
