"""The runs ledger and the price model (moved to :mod:`duolabel.ledger` and
:mod:`duolabel.core.costs`)."""

# temporary shim: removed when the layers are merged
from __future__ import annotations

from duolabel.core.costs import CostComparison, CostSummary
from duolabel.ledger import LedgerEntry, answer_price, cost_summary, ledger_run, model_cost
from duolabel.ledger import compare_costs as cost_comparison

__all__ = [
    "CostComparison",
    "CostSummary",
    "LedgerEntry",
    "answer_price",
    "cost_comparison",
    "cost_summary",
    "ledger_run",
    "model_cost",
]
