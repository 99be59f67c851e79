"""The runs ledger: stage runs with their usage and cost, what was spent, and which model
version each labeler (and the ensemble) is on.

Every cost figure comes from recorded runs; prices come from the project's ``costs``
settings (the arithmetic of comparing them is :mod:`duolabel.core.costs`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from duolabel.config import CostsConfig
from duolabel.context import Context
from duolabel.core.costs import CostComparison, CostSummary, cost_comparison
from duolabel.store import Annotation, Run, Store
from duolabel.store.tables import utcnow

__all__ = [
    "CostComparison",
    "CostSummary",
    "LedgerEntry",
    "answer_price",
    "compare_costs",
    "cost_summary",
    "current_model_version",
    "labeler_versions",
    "ledger_run",
    "model_cost",
]


def model_cost(costs: CostsConfig, usage: dict[str, Any]) -> float:
    """The price of one labeler run's usage: compute time plus LLM tokens.

    A labeler that prices its own calls (an API with its own prices) reports ``cost``
    in its usage; otherwise tokens are priced with the project's per-million prices.
    """
    if "cost" in usage:
        return costs.compute_hour * float(usage.get("seconds", 0.0)) / 3600.0 + float(usage["cost"])
    return (
        costs.compute_hour * float(usage.get("seconds", 0.0)) / 3600.0
        + costs.llm_input_per_million * float(usage.get("input_tokens", 0)) / 1e6
        + costs.llm_output_per_million * float(usage.get("output_tokens", 0)) / 1e6
    )


class LedgerEntry:
    """A run in progress; ``record`` writes its usage and cost inside the caller's transaction."""

    def __init__(self, run_id: int) -> None:
        self.id = run_id

    def record(self, session: Any, usage: dict[str, Any], cost: float) -> None:
        """Set the run's usage and cost so far (the caller's transaction commits them)."""
        session.execute(update(Run).where(Run.id == self.id).values(usage=usage, cost=cost))


@contextmanager
def ledger_run(store: Store, kind: str, config: dict[str, Any]) -> Iterator[LedgerEntry]:
    """Record one stage run: 'running' while it works, then 'done' or 'failed'.

    A run of the same kind left 'running' by a killed process is marked 'interrupted'.
    """
    with store.write() as session:
        session.execute(
            update(Run).where(Run.kind == kind, Run.status == "running").values(status="interrupted")
        )
        run = Run(kind=kind, config=config, status="running")
        session.add(run)
        session.flush()
        run_id = run.id
    entry = LedgerEntry(run_id)
    try:
        yield entry
    except BaseException as exc:
        with store.write() as session:
            session.execute(
                update(Run)
                .where(Run.id == run_id)
                .values(status="failed", ended_at=utcnow(), message=str(exc)[:2000] or type(exc).__name__)
            )
        raise
    with store.write() as session:
        session.execute(update(Run).where(Run.id == run_id).values(status="done", ended_at=utcnow()))


def answer_price(costs: CostsConfig) -> float:
    """What one human answer costs, platform fee included."""
    return costs.human_answer * (1.0 + costs.platform_fee)


def cost_summary(store: Store, costs: CostsConfig) -> CostSummary:
    """Cost so far: model runs from the ledger, human and expert answers at their prices."""
    with store.read() as session:
        model = session.scalar(select(func.coalesce(func.sum(Run.cost), 0.0))) or 0.0
        by_kind = dict(session.execute(select(Annotation.kind, func.count()).group_by(Annotation.kind)).all())
    # Experts are paid per answer at their price; every other answer (work, controls and exam
    # items alike) at the crowd's.
    expert_answers = int(by_kind.pop("expert", 0))
    answers = int(sum(by_kind.values()))
    return CostSummary(
        costs.currency,
        float(model),
        answers * answer_price(costs),
        answers,
        costs.setup,
        expert_answers * costs.expert_answer,
        expert_answers,
    )


def compare_costs(spent: CostSummary, costs: CostsConfig, **counts: int) -> CostComparison:
    """:func:`duolabel.core.costs.cost_comparison` at the project's prices; ``counts`` are its
    ``items``, ``golden``, ``overlap``, ``answers_pending`` and ``experts_pending``."""
    return cost_comparison(
        spent, answer_price=answer_price(costs), expert_price=costs.expert_answer, **counts
    )


def labeler_versions(ctx: Context) -> dict[str, str]:
    """Each configured labeler's version from its latest finished labeling run."""
    with ctx.store.read() as session:
        return _labeler_versions(session, [cfg.label_name for cfg in ctx.config.labeler])


# The finished labeling runs' settings, the latest first (built once: the web app's follow-up
# of an answered item reads it after every answer).
_LABEL_RUNS = select(Run.config).where(Run.kind == "label", Run.status == "done").order_by(Run.id.desc())


def _labeler_versions(session: Session, names: list[str]) -> dict[str, str]:
    versions: dict[str, str] = {}
    for config in session.scalars(_LABEL_RUNS):
        name = config.get("labeler_name", "embedding")
        if name in names and name not in versions:
            versions[name] = config["model_version"]
    return {name: versions[name] for name in names if name in versions}


def current_model_version(ctx: Context, session: Session | None = None) -> str | None:
    """The version of the predictions that routing uses: the single labeler's, or the
    ensemble's (recorded by the calibration stage) when there are several. Read in
    ``session`` when given (one transaction with the caller's other reads)."""
    if session is None:
        with ctx.store.read() as session:
            return current_model_version(ctx, session)
    if len(ctx.config.labeler) == 1:
        name = ctx.config.labeler[0].label_name
        return _labeler_versions(session, [name]).get(name)
    config = session.scalars(
        select(Run.config)
        .where(Run.kind == "calibrate", Run.status == "done")
        .order_by(Run.id.desc())
        .limit(1)
    ).first()
    return config.get("ensemble_version") if config else None
