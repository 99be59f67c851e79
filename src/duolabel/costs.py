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

__all__ = ["CostSummary", "cost_summary", "ledger_run", "model_cost"]


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


@dataclass
class CostSummary:
    currency: str
    model: float
    humans: float
    human_answers: int
    setup: float

    @property
    def total(self) -> float:
        return self.model + self.humans + self.setup


def cost_summary(store: Store, costs: CostsConfig) -> CostSummary:
    """Cost so far: model runs from the ledger, human answers at the configured price."""
    with store.read() as session:
        model = session.scalar(select(func.coalesce(func.sum(Run.cost), 0.0))) or 0.0
        answers = session.scalar(select(func.count()).select_from(Annotation)) or 0
    per_answer = costs.human_answer * (1.0 + costs.platform_fee)
    return CostSummary(costs.currency, float(model), answers * per_answer, int(answers), costs.setup)
