"""The runs ledger and the price model: every cost figure comes from recorded runs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update

from duolabel.config import CostsConfig
from duolabel.store import Annotation, Run, Store
from duolabel.store.tables import utcnow

__all__ = [
    "CostComparison",
    "CostSummary",
    "answer_price",
    "cost_comparison",
    "cost_summary",
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


@dataclass
class CostSummary:
    """Money spent so far: model runs from the ledger, answers at the configured prices."""

    currency: str
    model: float
    humans: float
    human_answers: int
    setup: float
    experts: float = 0.0
    expert_answers: int = 0

    @property
    def total(self) -> float:
        return self.model + self.humans + self.experts + self.setup


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


@dataclass
class CostComparison:
    """People alone vs the model alone vs the hybrid, for the project's non-golden items.

    ``humans_only`` is what people would cost for every item at the configured overlap;
    ``hybrid`` is the model's ledger cost plus every human and expert answer given or still
    asked for; the golden set (expert labels plus set-up) is kept apart.
    """

    currency: str
    items: int
    humans_only: float
    model_only: float
    hybrid: float
    golden_set: float

    @property
    def saving(self) -> float:
        """Money saved against people alone, after paying for the golden set."""
        return self.humans_only - self.hybrid - self.golden_set

    @property
    def roi(self) -> float | None:
        """Saving per unit of money invested in the model and the golden set."""
        invested = self.model_only + self.golden_set
        return self.saving / invested if invested > 0 else None


def cost_comparison(
    spent: CostSummary,
    costs: CostsConfig,
    *,
    items: int,
    golden: int,
    overlap: int,
    answers_pending: int,
    experts_pending: int,
) -> CostComparison:
    """Compare the ways of labelling ``items`` from what was spent and what is still asked."""
    price = answer_price(costs)
    return CostComparison(
        costs.currency,
        items,
        items * overlap * price,
        spent.model,
        spent.total - spent.setup + answers_pending * price + experts_pending * costs.expert_answer,
        golden * costs.expert_answer + costs.setup,
    )
