"""Old home of the aggregators and the aggregation stage: the aggregators now live in
:mod:`duolabel.core.aggregation`, the stage in :mod:`duolabel.stages.aggregate`."""

# temporary shim: removed when the layers are merged

from __future__ import annotations

from duolabel.core.aggregation import GLAD, MACE, DawidSkene, MajorityVote, WeightedMajorityVote
from duolabel.stages.aggregate import AggregateResult, aggregate_project

__all__ = [
    "GLAD",
    "MACE",
    "AggregateResult",
    "DawidSkene",
    "MajorityVote",
    "WeightedMajorityVote",
    "aggregate_project",
]
