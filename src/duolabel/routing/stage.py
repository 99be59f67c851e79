"""Moved to :mod:`duolabel.stages.route` (and the evidence maths to :mod:`duolabel.core.evidence`).

Until ``pipeline.py`` passes the routing settings tightened after alarms, the two entry
points here apply ``duolabel.audit.effective_routing`` themselves, as the stage used to.
"""

# temporary shim: removed when the layers are merged
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from duolabel.core.probs import as_matrix as _matrix  # noqa: F401  (report.py imports it from here)
from duolabel.stages import route as _route
from duolabel.stages.route import Plan, RouteResult, follow_up_project

if TYPE_CHECKING:
    from duolabel.project import Project

__all__ = ["Plan", "RouteResult", "follow_up_project", "plan_routing", "route_project"]


def _tightened(project: Project, options: dict[str, Any]) -> dict[str, Any]:
    from duolabel.audit import effective_routing

    if options.get("routing") is None:
        options["routing"] = effective_routing(project)
    return options


def plan_routing(project: Project, **options: Any) -> Plan:
    """:func:`duolabel.stages.route.plan_routing` under the tightened routing settings."""
    return _route.plan_routing(project, **_tightened(project, options))


def route_project(project: Project, **options: Any) -> RouteResult:
    """:func:`duolabel.stages.route.route_project` under the tightened routing settings."""
    return _route.route_project(project, **_tightened(project, options))
