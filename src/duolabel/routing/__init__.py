"""Moved: the policies to :mod:`duolabel.core.policies`, the operating point to
:mod:`duolabel.core.operating`, the stage to :mod:`duolabel.stages.route`."""

# temporary shim: removed when the layers are merged
from duolabel.core.operating import (
    CurvePoint,
    OperatingPoint,
    TargetCertificate,
    certify_target,
    choose_budget,
    choose_cost,
    quality_curve,
)
from duolabel.core.policies import Decision, DynamicOverlap, MetaRouter, Policy, ThresholdPolicy, fuse
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
