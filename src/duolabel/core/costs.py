"""The cost comparison: people alone vs the model alone vs the hybrid.

Pure arithmetic on amounts already priced; :mod:`duolabel.ledger` reads what was spent
from the runs ledger and the prices from the project's ``costs`` settings.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CostComparison", "CostSummary", "cost_comparison"]


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


@dataclass
class CostComparison:
    """People alone vs the model alone vs the hybrid, for the project's non-golden items.

    ``humans_only`` is what people would cost for every item at the configured overlap;
    ``hybrid`` is the model's ledger cost plus every human and expert answer given or still
    asked for (for the dynamic policy, which asks one person at a time, what it is expected to
    ask); the golden set (expert labels plus set-up) is kept apart.
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
    *,
    answer_price: float,
    expert_price: float,
    items: int,
    golden: int,
    overlap: int,
    answers_pending: int,
    experts_pending: int,
) -> CostComparison:
    """Compare the ways of labelling ``items`` from what was spent and what is still asked.

    ``answer_price`` is one crowd answer, platform fee included; ``expert_price`` one expert
    answer; the golden set costs ``golden`` expert answers plus ``spent.setup``.

    Examples
    --------
    >>> spent = CostSummary("EUR", model=2.0, humans=10.0, human_answers=100, setup=5.0)
    >>> c = cost_comparison(spent, answer_price=0.1, expert_price=1.0, items=1000, golden=20,
    ...                     overlap=3, answers_pending=0, experts_pending=0)
    >>> round(c.humans_only, 2), round(c.hybrid, 2), round(c.golden_set, 2), round(c.saving, 2)
    (300.0, 12.0, 25.0, 263.0)
    """
    return CostComparison(
        spent.currency,
        items,
        items * overlap * answer_price,
        spent.model,
        spent.total - spent.setup + answers_pending * answer_price + experts_pending * expert_price,
        golden * expert_price + spent.setup,
    )
