"""Audits and monitoring: keep measuring the quality of shipped labels.

- :func:`draw_audit` samples final labels (stratified by source and confidence band) into the
  experts' queue, remembering each label as it was shipped;
- :func:`apply_expert_answers` makes an expert's answer the item's final label (an escalated
  item is finished by it; an audited one is corrected when the expert disagrees);
- :func:`audit_estimates` turns the experts' answers into the accuracy of the shipped labels per
  source, with intervals (each audited label weighted by its stratum's size);
- :func:`alarms` raises an alarm when audited model labels or people's recent control answers
  fall below their target with confidence, and :func:`tighten` (when ``audit.auto_tighten`` is
  set) raises the routing target for the next batch, recorded in the ledger.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import delete, func, select

from duolabel.costs import ledger_run
from duolabel.errors import ProjectError
from duolabel.qc import wilson_interval
from duolabel.queue import enqueue_expert
from duolabel.store import Annotation, Annotator, Audit, ExpertTask, FinalLabel, Item, Run
from duolabel.store.tables import utcnow

if TYPE_CHECKING:
    from duolabel.config import RoutingConfig
    from duolabel.project import Project

__all__ = [
    "Alarm",
    "AuditDraw",
    "AuditEstimate",
    "alarms",
    "apply_expert_answers",
    "audit_estimates",
    "draw_audit",
    "effective_routing",
    "tighten",
]

SHIPPED = ("model", "humans", "fused")


def band_of(confidence: float | None, cuts: list[float]) -> str:
    """The confidence band a label falls in, named by its bounds.

    Examples
    --------
    >>> band_of(0.97, [0.8, 0.95]), band_of(0.5, [0.8, 0.95]), band_of(None, [0.8])
    ('0.95-1', '0-0.8', '0-0.8')
    """
    edges = [0.0, *sorted(cuts), 1.0]
    value = 0.0 if confidence is None else confidence
    for low, high in zip(edges, edges[1:], strict=False):
        if value < high or high == 1.0:
            return f"{low:g}-{high:g}"
    return f"{edges[-2]:g}-1"  # pragma: no cover - the loop always returns


@dataclass
class AuditDraw:
    drawn: int
    strata: dict[str, int]
    run_id: int


def draw_audit(project: Project, *, rate: float | None = None, seed: int | None = None) -> AuditDraw:
    """Draw ``rate`` (default ``audit.sample_rate``) of the not yet audited shipped labels of
    every stratum (source x confidence band; at least one per stratum) into the expert queue."""
    cfg = project.config.audit
    rate = cfg.sample_rate if rate is None else rate
    with project.store.read() as session:
        audited = set(session.scalars(select(Audit.item_id)))
        rows = session.execute(
            select(FinalLabel.item_id, FinalLabel.label, FinalLabel.source, FinalLabel.confidence, Item.batch)
            .join(Item, Item.id == FinalLabel.item_id)
            .where(FinalLabel.source.in_(SHIPPED), Item.role != "golden")
            .order_by(Item.seq)
        ).all()
    strata: dict[str, list] = defaultdict(list)
    for row in rows:
        if row.item_id not in audited:
            strata[f"{row.source} {band_of(row.confidence, cfg.bands)}"].append(row)
    rng = np.random.default_rng(seed)
    picked: list[tuple[object, str, float]] = []
    for name in sorted(strata):
        members = strata[name]
        k = min(len(members), max(1, math.ceil(rate * len(members)))) if rate > 0 else 0
        for i in sorted(rng.choice(len(members), size=k, replace=False)):
            picked.append((members[i], name, len(members) / k))
    counts = {name: sum(1 for _, n, _ in picked if n == name) for name in sorted(strata)}
    with (
        ledger_run(project.store, "audit", {"rate": rate, "seed": seed}) as run,
        project.store.write() as session,
    ):
        for row, name, weight in picked:
            session.add(
                Audit(
                    item_id=row.item_id,
                    run_id=run.id,
                    label=row.label,
                    source=row.source,
                    band=name.split(" ", 1)[1],
                    batch=row.batch,
                    weight=weight,
                )
            )
        enqueue_expert(session, [row.item_id for row, _, _ in picked], "audit", run.id)
        run.record(session, {"drawn": len(picked), "strata": counts}, 0.0)
    return AuditDraw(len(picked), counts, run.id)


def apply_expert_answers(project: Project) -> int:
    """Make each expert answer its item's final label (source ``expert``); returns how many
    final labels changed. The audit keeps the label as it was shipped."""
    with project.store.read() as session:
        answers = session.execute(
            select(Annotation.item_id, Annotation.label, Annotator.name)
            .join(Annotator, Annotator.id == Annotation.annotator_id)
            .where(Annotation.kind == "expert")
            .order_by(Annotation.id)
        ).all()
        items = list({a.item_id for a in answers})
        finals = dict(
            (item_id, (label, source))
            for item_id, label, source in session.execute(
                select(FinalLabel.item_id, FinalLabel.label, FinalLabel.source).where(
                    FinalLabel.item_id.in_(items)
                )
            )
        )
    latest = {a.item_id: a for a in answers}  # the latest expert answer wins
    changed = [a for item, a in latest.items() if finals.get(item) != (a.label, "expert")]
    if changed:
        with project.store.write() as session:
            session.execute(delete(FinalLabel).where(FinalLabel.item_id.in_([a.item_id for a in changed])))
            for a in changed:
                session.add(
                    FinalLabel(
                        item_id=a.item_id,
                        label=a.label,
                        source="expert",
                        confidence=1.0,
                        votes={a.label: 1},
                        n_votes=1,
                        annotators=[a.name],
                        updated_at=utcnow(),
                    )
                )
    return len(changed)


@dataclass(frozen=True)
class AuditEstimate:
    """Estimated accuracy of shipped labels of one source (or ``all``), from expert audits."""

    source: str
    audited: int
    agreed: int
    accuracy: float  # weighted by stratum size
    low: float
    high: float


def _estimate(source: str, weights: np.ndarray, right: np.ndarray, confidence: float) -> AuditEstimate:
    accuracy = float((weights * right).sum() / weights.sum())
    # A Wilson interval at the effective sample size of the weighted sample.
    n_eff = weights.sum() ** 2 / (weights**2).sum()
    low, high = wilson_interval(round(accuracy * n_eff), max(round(n_eff), 1), confidence=confidence)
    return AuditEstimate(source, len(right), int(right.sum()), accuracy, low, high)


@dataclass(frozen=True)
class _Answered:
    """One answered audit: was the shipped label the expert's?"""

    batch: str
    source: str
    weight: float
    right: bool


def _answered(project: Project) -> list[_Answered]:
    with project.store.read() as session:
        audits = session.execute(
            select(Audit.item_id, Audit.label, Audit.source, Audit.weight, Audit.batch).order_by(Audit.id)
        ).all()
        expert = dict(
            session.execute(
                select(Annotation.item_id, Annotation.label)
                .where(Annotation.kind == "expert")
                .order_by(Annotation.id)
            ).all()
        )
    return [
        _Answered(a.batch, a.source, a.weight, a.label == expert[a.item_id])
        for a in audits
        if a.item_id in expert
    ]


def _per_source(answered: list[_Answered], confidence: float) -> list[AuditEstimate]:
    out = []
    for source in [*SHIPPED, "all"]:
        rows = [a for a in answered if source == "all" or a.source == source]
        if rows:
            weights = np.array([a.weight for a in rows])
            right = np.array([a.right for a in rows], dtype=float)
            out.append(_estimate(source, weights, right, confidence))
    return out


def audit_estimates(project: Project, *, batch: str | None = None) -> list[AuditEstimate]:
    """Accuracy of the shipped labels per source and overall, from the answered audits."""
    answered = [a for a in _answered(project) if batch is None or a.batch == batch]
    return _per_source(answered, project.config.audit.confidence)


@dataclass(frozen=True)
class Alarm:
    kind: str  # "model labels" | "controls"
    scope: str  # the batch, or "recent"
    message: str


def alarms(project: Project) -> list[Alarm]:
    """Alarms for quality below target with confidence: audited model labels per batch (upper
    interval bound below ``routing.target_accuracy``), and the last ``audit.control_window``
    control answers (upper bound below ``quality.min_control_accuracy``)."""
    cfg = project.config
    found = []
    answered = _answered(project)  # read once, then estimated batch by batch
    target = effective_routing(project).target_accuracy
    for batch in sorted({a.batch for a in answered}):
        in_batch = [a for a in answered if a.batch == batch]
        for est in _per_source(in_batch, cfg.audit.confidence):
            if est.source == "model" and est.high < target:
                found.append(
                    Alarm(
                        "model labels",
                        batch,
                        f"batch {batch!r}: audited model labels are {est.accuracy:.1%} right "
                        f"({est.agreed} of {est.audited}; at most {est.high:.1%} at "
                        f"{cfg.audit.confidence:.0%} confidence), below the target {target:.1%}",
                    )
                )
    with project.store.read() as session:
        controls = session.execute(
            select(Annotation.label, Item.gold_label)
            .join(Item, Item.id == Annotation.item_id)
            .join(Annotator, Annotator.id == Annotation.annotator_id)
            .where(Annotation.kind == "control", Annotator.status != "suspended")
            .order_by(Annotation.id.desc())
            .limit(cfg.audit.control_window)
        ).all()
    if controls:
        right = sum(label == gold for label, gold in controls)
        low, high = wilson_interval(right, len(controls), confidence=cfg.audit.confidence)
        if high < cfg.quality.min_control_accuracy:
            found.append(
                Alarm(
                    "controls",
                    "recent",
                    f"the last {len(controls)} control answers are {right / len(controls):.1%} right "
                    f"(at most {high:.1%}), below {cfg.quality.min_control_accuracy:.0%}",
                )
            )
    return found


def effective_routing(project: Project) -> RoutingConfig:
    """The routing settings after the tightening recorded in the ledger."""
    cfg = project.config.routing
    with project.store.read() as session:
        steps = session.scalar(
            select(func.count()).select_from(Run).where(Run.kind == "tighten", Run.status == "done")
        )
    if not steps:
        return cfg
    raise_by = steps * project.config.audit.tighten_step
    return cfg.model_copy(
        update={
            "target_accuracy": min(cfg.target_accuracy + raise_by, 0.999),
            "threshold": min(cfg.threshold + raise_by, 0.999),
        }
    )


def tighten(project: Project, found: list[Alarm]) -> bool:
    """Raise the routing target for the next batch when shipped model labels miss it (only
    with ``audit.auto_tighten``); each step is a ``tighten`` run in the ledger."""
    if not project.config.audit.auto_tighten:
        return False
    model_alarms = [a for a in found if a.kind == "model labels"]
    with project.store.read() as session:
        seen = {
            r.config.get("scope")
            for r in session.scalars(select(Run).where(Run.kind == "tighten", Run.status == "done"))
        }
    fresh = [a for a in model_alarms if a.scope not in seen]
    if not fresh:
        return False
    before = effective_routing(project)
    for alarm in fresh:
        config = {"scope": alarm.scope, "alarm": alarm.message}
        with ledger_run(project.store, "tighten", config) as run, project.store.write() as session:
            run.record(session, {"step": project.config.audit.tighten_step}, 0.0)
    after = effective_routing(project)
    if after.target_accuracy <= before.target_accuracy:
        raise ProjectError("tightening did not raise the routing target")  # pragma: no cover
    return True


def open_audits(project: Project) -> int:
    with project.store.read() as session:
        return (
            session.scalar(
                select(func.count())
                .select_from(ExpertTask)
                .where(ExpertTask.reason == "audit", ExpertTask.state == "open")
            )
            or 0
        )
