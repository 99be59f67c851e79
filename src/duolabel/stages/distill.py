"""The distillation stage: train the student (a small trainable labeler) on the teacher's
(an LLM labeler's) confident labels, people's labels and the golden items; compare both
on the golden items; record the decision in the ledger.

The student's golden figure is out-of-fold: the labeler's own cross-fitted probabilities
(``oof_proba_``; rows it leaves NaN have none and are left out of the comparison), or, for a
labeler without them, its ``predict_proba``, which the labeler protocol requires to be honest
on its training items. The teacher's golden figure is its stored golden predictions (also
honest: an LLM never sees an item among its own few-shot examples). One caveat remains: the
teacher chose its labels on regular items with the golden items as few-shot examples and
calibration, so what the student learns from it carries some of that knowledge; a golden
item's own label never enters the fold that predicts it.

A decision is recorded once per training set: a re-run with the same teacher labels, people's
labels and settings reads the recorded decision instead of fitting again, and a killed run
(its ledger entry left running) is simply done again. :func:`labeling_context` gives the
pipeline the project with the student in the teacher's place once the student has won.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import func, select

from duolabel.context import Context
from duolabel.core.distillation import DistillDecision, decide_distillation
from duolabel.core.tasks import task_type
from duolabel.errors import ProjectError
from duolabel.labelers import build_labeler
from duolabel.ledger import current_model_version, ledger_run
from duolabel.progress import Reporter, quiet
from duolabel.store import FinalLabel, Item, Prediction, Run
from duolabel.training_data import fit_options, golden_items, student_items, teacher_version

__all__ = ["DistillResult", "distill_project", "distill_summary", "labeling_context", "labeling_version"]


@dataclass
class DistillResult:
    """One distillation: the decision, the models compared and what the student learned from."""

    decision: DistillDecision
    teacher: str
    teacher_version: str
    student: str
    student_version: str
    taught: int  # regular items the student learned from (people's labels and the teacher's)
    golden: int
    reused: bool = False  # the decision recorded for this very training set was read back


def _settings(ctx: Context) -> dict[str, Any]:
    """The settings a recorded decision holds for: a change to any of them voids it."""
    distill = ctx.config.distill
    return {
        "teacher": distill.teacher,
        "student": distill.student.model_dump(mode="json"),
        "min_confidence": distill.min_confidence,
    }


def _latest(ctx: Context) -> Run | None:
    with ctx.store.read() as session:
        return session.scalars(
            select(Run).where(Run.kind == "distill", Run.status == "done").order_by(Run.id.desc()).limit(1)
        ).first()


def _result(run: Run, *, reused: bool) -> DistillResult:
    usage = run.usage
    fields = DistillDecision.__dataclass_fields__
    decision: dict[str, Any] = {
        k: tuple(v) if k.endswith("interval") else v for k, v in usage.items() if k in fields
    }
    return DistillResult(
        DistillDecision(**decision),
        run.config["teacher"],
        run.config["teacher_version"],
        usage["student"],
        usage["student_version"],
        usage["taught"],
        usage["golden_items"],
        reused,
    )


def _teacher_golden(ctx: Context, version: str) -> dict[str, str | None]:
    """The teacher's label on each golden item it predicted (None where it abstained)."""
    with ctx.store.read() as session:
        rows = session.execute(
            select(Prediction.item_id, Prediction.label, Prediction.abstained)
            .join(Item, Item.id == Prediction.item_id)
            .where(Item.role == "golden", Prediction.out_of_fold.is_(True))
            .where(Prediction.labeler == ctx.config.distill.teacher, Prediction.model_version == version)
        ).all()
    return {r.item_id: (None if r.abstained else r.label) for r in rows}


def _teacher_cost_per_item(ctx: Context) -> float:
    """What the teacher's labeling runs cost in the ledger, per prediction it stored."""
    teacher = ctx.config.distill.teacher
    with ctx.store.read() as session:
        cost = sum(
            run.cost or 0.0
            for run in session.scalars(select(Run).where(Run.kind == "label"))
            if run.config.get("labeler_name") == teacher
        )
        predicted = session.scalar(
            select(func.count()).select_from(Prediction).where(Prediction.labeler == teacher)
        )
    return cost / max(predicted or 0, 1)


def _items_left(ctx: Context) -> int:
    """Regular items without a final label: what the student would label."""
    with ctx.store.read() as session:
        return (
            session.scalar(
                select(func.count())
                .select_from(Item)
                .where(Item.role == "regular", Item.id.not_in(select(FinalLabel.item_id)))
            )
            or 0
        )


def distill_project(ctx: Context, *, progress: Reporter = quiet) -> DistillResult:
    """Fit the student, compare it with the teacher on the golden items, record the decision."""
    distill = ctx.config.distill
    teacher = distill.teacher
    if teacher is None:
        raise ProjectError("nothing to distil: set distill.teacher in duolabel.yaml to an LLM labeler's name")
    t_version = teacher_version(ctx)
    if t_version is None:
        raise ProjectError(f"the teacher {teacher!r} has labelled nothing yet: run 'duolabel label' first")
    golden, gold = golden_items(ctx)
    extra, extra_labels = student_items(ctx)
    train, labels = golden + extra, gold + extra_labels
    key = hashlib.sha256(
        json.dumps(
            [
                _settings(ctx),
                t_version,
                [(i.id, i.content_hash, y) for i, y in zip(train, labels, strict=True)],
            ]
        ).encode()
    ).hexdigest()[:16]
    latest = _latest(ctx)
    if latest is not None and latest.config.get("key") == key:
        return _result(latest, reused=True)
    said = _teacher_golden(ctx, t_version)
    if not said:
        raise ProjectError(
            f"the teacher {teacher!r} has no predictions on the golden items: run 'duolabel label'"
        )
    names = ctx.config.task.label_names
    config = {**_settings(ctx), "key": key, "teacher_version": t_version}
    with ledger_run(ctx.store, "distill", config) as run:
        model = build_labeler(ctx, distill.student)
        started = time.perf_counter()
        with progress(
            f"Teaching {distill.student.label_name} ({len(extra):,} taught items)", len(train)
        ) as advance:
            model.fit(train, labels, progress=advance, **fit_options(ctx, model))
        fitted = time.perf_counter()
        probs, _ = model.predict_proba(golden)
        predict_seconds = time.perf_counter() - fitted
        oof = getattr(model, "oof_proba_", None)
        if oof is not None:
            probs = np.asarray(oof)[: len(golden)]  # cross-fitted; the prediction above is timed only
        honest = [i for i, item in enumerate(golden) if item.id in said and np.isfinite(probs[i]).all()]
        picks = task_type(ctx.config.task.type).predicted(probs[honest]) if honest else np.zeros(0, int)
        truth = [gold[i] for i in honest]
        student_correct = np.array([names[int(p)] == y for p, y in zip(picks, truth, strict=True)], bool)
        teacher_correct = np.array([said[golden[i].id] == gold[i] for i in honest], bool)
        hourly = ctx.config.costs.compute_hour / 3600.0
        student_cost = hourly * (
            (fitted - started) / max(_items_left(ctx), 1) + predict_seconds / len(golden)
        )
        decision = decide_distillation(
            student_correct,
            teacher_correct,
            student_cost_per_item=student_cost,
            teacher_cost_per_item=_teacher_cost_per_item(ctx),
            confidence=ctx.config.audit.confidence,
        )
        usage = {
            **decision.as_dict(),
            "student": distill.student.label_name,
            "student_version": model.version_,
            "taught": len(extra),
            "golden_items": len(golden),
            "fit_seconds": round(fitted - started, 3),
            "predict_seconds": round(predict_seconds, 3),
        }
        with ctx.store.write() as session:
            run.record(session, usage, hourly * (time.perf_counter() - started))
    latest = _latest(ctx)
    assert latest is not None  # the run just finished
    return _result(latest, reused=False)


def _student_won(ctx: Context) -> Run | None:
    """The latest recorded decision, when it is for the current settings and the student won."""
    if ctx.config.distill.teacher is None:
        return None
    latest = _latest(ctx)
    if latest is None or any(latest.config.get(k) != v for k, v in _settings(ctx).items()):
        return None
    return latest if latest.usage.get("winner") == "student" else None


def labeling_context(ctx: Context) -> Context:
    """The project as the labeling stages should see it: with the student in the teacher's
    place once the latest distillation chose it, else unchanged."""
    if _student_won(ctx) is None:
        return ctx
    distill = ctx.config.distill
    labelers = [distill.student if c.label_name == distill.teacher else c for c in ctx.config.labeler]
    return Context(ctx.path, ctx.config.model_copy(update={"labeler": labelers}), ctx.store)


def labeling_version(ctx: Context) -> str | None:
    """The version of the model that labels: the student's once it has won, else the
    project's (:func:`~duolabel.ledger.current_model_version` of :func:`labeling_context`).
    What the report, ``simulate``, export and the dashboard show."""
    return current_model_version(labeling_context(ctx))


def distill_summary(ctx: Context) -> str:
    """Which model labels and why, in one line; empty for a project that does not distil."""
    distill = ctx.config.distill
    if distill.teacher is None:
        return ""
    latest = _latest(ctx)
    if latest is None or any(latest.config.get(k) != v for k, v in _settings(ctx).items()):
        return f"{distill.teacher} labels (not distilled yet)" if distill.enabled else ""
    result = _result(latest, reused=True)
    who = result.student if result.decision.winner == "student" else result.teacher
    return f"{who} labels: {result.decision.reason}"
