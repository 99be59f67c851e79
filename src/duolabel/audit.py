"""Old home of the audits: the estimates and alarm rules now live in :mod:`duolabel.core.audit`,
the store side in :mod:`duolabel.stages.audit`."""

# temporary shim: removed when the layers are merged

from __future__ import annotations

from duolabel.core.audit import Alarm
from duolabel.stages.audit import (
    alarms,
    apply_expert_answers,
    audit_estimates,
    draw_audit,
    effective_routing,
    tighten,
)

__all__ = [
    "Alarm",
    "alarms",
    "apply_expert_answers",
    "audit_estimates",
    "draw_audit",
    "effective_routing",
    "tighten",
]
