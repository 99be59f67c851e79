"""The audit stage: keep measuring the quality of shipped labels.

- :func:`draw_audit` samples final labels (stratified by source and confidence band) into the
  experts' queue, remembering each label as it was shipped;
- :func:`apply_expert_answers` makes an expert's answer the item's final label (an escalated
  item is finished by it; an audited one is corrected when the expert disagrees);
- :func:`audit_estimates` turns the experts' answers into the accuracy of the shipped labels per
  source, with intervals (each audited label weighted by its stratum's size);
- :func:`alarms` raises an alarm when audited model labels or people's recent control answers
  fall below their target with confidence, and :func:`tighten` (when ``audit.auto_tighten`` is
  set) raises the routing target for the next batch, recorded in the ledger;
  :func:`effective_routing` reads the routing settings with that tightening applied.

The estimates and the alarm rules are :mod:`duolabel.core.audit`'s; this module reads and
writes the store.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import delete, func, select

from duolabel.config import RoutingConfig
from duolabel.context import Context
from duolabel.core.audit import (
    SHIPPED,
    Alarm,
    AnsweredAudit,
    AuditEstimate,
    band_of,
    control_alarm,
    estimates_by_source,
    model_label_alarms,
)
from duolabel.errors import ProjectError
from duolabel.ledger import ledger_run
from duolabel.people.experts import enqueue_expert
from duolabel.store import Annotation, Annotator, Audit, ExpertTask, FinalLabel, Item, Run

__all__ = [
    "AuditDraw",
    "alarms",
    "answered_audits",
    "apply_expert_answers",
    "audit_estimates",
    "draw_audit",
    "effective_routing",
    "open_audits",
    "tighten",
]


@dataclass
class AuditDraw:
    """What one draw put in the experts' queue: how many labels, per stratum, and its run."""

    drawn: int
    strata: dict[str, int]
    run_id: int


def draw_audit(ctx: Context, *, rate: float | None = None, seed: int | None = None) -> AuditDraw:
    """Draw ``rate`` (default ``audit.sample_rate``) of the not yet audited shipped labels of
    every stratum (source x confidence band; at least one per stratum) into the expert queue."""
    cfg = ctx.config.audit
    if rate is not None and not (math.isfinite(rate) and 0 <= rate <= 1):
        raise ProjectError(f"the audit rate (--rate) is a share between 0 and 1, such as 0.05; got {rate}")
    rate = cfg.sample_rate if rate is None else rate
    with ctx.store.read() as session:
        audited = set(session.scalars(select(Audit.item_id)))
        rows = session.execute(
            select(FinalLabel.item_id, FinalLabel.label, FinalLabel.source, FinalLabel.confidence, Item.batch)
            .join(Item, Item.id == FinalLabel.item_id)
            .where(FinalLabel.source.in_(SHIPPED), Item.role != "golden")
            .order_by(Item.seq)
        ).all()
    strata: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        if row.item_id not in audited:
            strata[f"{row.source} {band_of(row.confidence, cfg.bands)}"].append(row)
    rng = np.random.default_rng(seed)
    picked: list[tuple[Any, str, float]] = []
    for name in sorted(strata):
        members = strata[name]
        k = min(len(members), max(1, math.ceil(rate * len(members)))) if rate > 0 else 0
        for i in sorted(rng.choice(len(members), size=k, replace=False)):
            picked.append((members[i], name, len(members) / k))
    counts = {name: sum(1 for _, n, _ in picked if n == name) for name in sorted(strata)}
    with (
        ledger_run(ctx.store, "audit", {"rate": rate, "seed": seed}) as run,
        ctx.store.write() as session,
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


def apply_expert_answers(ctx: Context) -> int:
    """Make each expert answer its item's final label (source ``expert``); returns how many
    final labels changed. The audit keeps the label as it was shipped."""
    with ctx.store.read() as session:
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
        with ctx.store.write() as session:
            session.execute(delete(FinalLabel).where(FinalLabel.item_id.in_([a.item_id for a in changed])))
            for a in changed:
                session.add(FinalLabel.from_expert(a.item_id, a.label, expert=a.name))
    return len(changed)


def answered_audits(ctx: Context) -> list[AnsweredAudit]:
    """Every audit an expert has answered, in the order drawn, with whether the shipped label
    was the expert's (the latest expert answer of the item)."""
    with ctx.store.read() as session:
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
        AnsweredAudit(a.batch, a.source, a.weight, a.label == expert[a.item_id])
        for a in audits
        if a.item_id in expert
    ]


def audit_estimates(ctx: Context, *, batch: str | None = None) -> list[AuditEstimate]:
    """Accuracy of the shipped labels per source and overall, from the answered audits."""
    answered = [a for a in answered_audits(ctx) if batch is None or a.batch == batch]
    return estimates_by_source(answered, ctx.config.audit.confidence)


def alarms(ctx: Context) -> list[Alarm]:
    """Alarms for quality below target with confidence: audited model labels per batch (upper
    interval bound below ``routing.target_accuracy``), and the last ``audit.control_window``
    control answers (upper bound below ``quality.min_control_accuracy``)."""
    cfg = ctx.config
    found = model_label_alarms(
        answered_audits(ctx),  # read once, then estimated batch by batch
        target=effective_routing(ctx).target_accuracy,
        confidence=cfg.audit.confidence,
    )
    with ctx.store.read() as session:
        controls = session.execute(
            select(Annotation.label, Item.gold_label)
            .join(Item, Item.id == Annotation.item_id)
            .join(Annotator, Annotator.id == Annotation.annotator_id)
            .where(Annotation.kind == "control", Annotator.status != "suspended")
            .order_by(Annotation.id.desc())
            .limit(cfg.audit.control_window)
        ).all()
    right = sum(label == gold for label, gold in controls)
    alarm = control_alarm(
        right, len(controls), min_accuracy=cfg.quality.min_control_accuracy, confidence=cfg.audit.confidence
    )
    return found if alarm is None else [*found, alarm]


def effective_routing(ctx: Context) -> RoutingConfig:
    """The routing settings after the tightening recorded in the ledger."""
    cfg = ctx.config.routing
    with ctx.store.read() as session:
        steps = session.scalar(
            select(func.count()).select_from(Run).where(Run.kind == "tighten", Run.status == "done")
        )
    if not steps:
        return cfg
    raise_by = steps * ctx.config.audit.tighten_step
    return cfg.model_copy(
        update={
            "target_accuracy": min(cfg.target_accuracy + raise_by, 0.999),
            "threshold": min(cfg.threshold + raise_by, 0.999),
        }
    )


def tighten(ctx: Context, found: list[Alarm]) -> bool:
    """Raise the routing target for the next batch when shipped model labels miss it (only
    with ``audit.auto_tighten``); each step is a ``tighten`` run in the ledger."""
    if not ctx.config.audit.auto_tighten:
        return False
    model_alarms = [a for a in found if a.kind == "model labels"]
    with ctx.store.read() as session:
        seen = {
            r.config.get("scope")
            for r in session.scalars(select(Run).where(Run.kind == "tighten", Run.status == "done"))
        }
    fresh = [a for a in model_alarms if a.scope not in seen]
    if not fresh:
        return False
    before = effective_routing(ctx)
    for alarm in fresh:
        config = {"scope": alarm.scope, "alarm": alarm.message}
        with ledger_run(ctx.store, "tighten", config) as run, ctx.store.write() as session:
            run.record(session, {"step": ctx.config.audit.tighten_step}, 0.0)
    after = effective_routing(ctx)
    if after.target_accuracy <= before.target_accuracy:
        raise ProjectError("tightening did not raise the routing target")  # pragma: no cover
    return True


def open_audits(ctx: Context) -> int:
    """How many audits wait in the experts' queue."""
    with ctx.store.read() as session:
        return (
            session.scalar(
                select(func.count())
                .select_from(ExpertTask)
                .where(ExpertTask.reason == "audit", ExpertTask.state == "open")
            )
            or 0
        )
