"""Routing: decide, item by item, whether the model's label is accepted or people (or an
expert) label the item, with the threshold chosen from measured quality and prices.

- :mod:`~duolabel.routing.policies`: the policies (threshold, dynamic overlap, meta-router)
  and the expert tier;
- :mod:`~duolabel.routing.operating`: the quality-versus-human-share curve and the choice of
  the operating point (target with a stated risk, budget, cost);
- :mod:`~duolabel.routing.stage`: the routing stage of a project.
"""

from duolabel.routing.operating import (
    CurvePoint,
    OperatingPoint,
    TargetCertificate,
    certify_target,
    choose_budget,
    choose_cost,
    quality_curve,
)
from duolabel.routing.policies import Decision, DynamicOverlap, MetaRouter, Policy, ThresholdPolicy, fuse
from duolabel.routing.stage import Plan, RouteResult, follow_up_project, plan_routing, route_project

__all__ = [
    "CurvePoint",
    "Decision",
    "DynamicOverlap",
    "MetaRouter",
    "OperatingPoint",
    "Plan",
    "Policy",
    "RouteResult",
    "TargetCertificate",
    "ThresholdPolicy",
    "certify_target",
    "choose_budget",
    "choose_cost",
    "follow_up_project",
    "fuse",
    "plan_routing",
    "quality_curve",
    "route_project",
]
