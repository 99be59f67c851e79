"""Quality control of people: moved to :mod:`duolabel.core.rules` (the rules) and
:mod:`duolabel.people.qc` (applying them to the store); exam scoring to :mod:`duolabel.people.exam`."""

# temporary shim: removed when the layers are merged

from __future__ import annotations

from duolabel.core.rules import agreement_with_consensus, control_skills, wilson_interval
from duolabel.people.exam import score_exam
from duolabel.people.qc import annotator_table, refresh_agreement_flags, refresh_annotator

__all__ = [
    "agreement_with_consensus",
    "annotator_table",
    "control_skills",
    "refresh_agreement_flags",
    "refresh_annotator",
    "score_exam",
    "wilson_interval",
]
