"""Audit estimates: the accuracy of shipped labels from a weighted expert sample, and alarms.

The audit stage (:mod:`duolabel.stages.audit`) draws shipped labels per stratum (source x
confidence band, :func:`band_of`) and weights each audited label by the size of the stratum it
stands for; here those weights become accuracy estimates with intervals
(:func:`weighted_estimate`, :func:`estimates_by_source`), and the figures become alarms
(:func:`model_label_alarms`, :func:`control_alarm`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from duolabel.core.quality import binomial_interval

__all__ = [
    "SHIPPED",
    "Alarm",
    "AnsweredAudit",
    "AuditEstimate",
    "band_of",
    "control_alarm",
    "estimates_by_source",
    "model_label_alarms",
    "weighted_estimate",
]

SHIPPED = ("model", "humans", "fused")
"""The sources of shipped labels, which audits measure (an expert's label is the yardstick)."""


def band_of(confidence: float | None, cuts: list[float]) -> str:
    """The confidence band a label falls in, named by its bounds.

    Examples
    --------
    >>> band_of(0.97, [0.8, 0.95]), band_of(0.5, [0.8, 0.95]), band_of(None, [0.8])
    ('0.95-1', '0-0.8', '0-0.8')
    """
    edges = [0.0, *sorted(cuts), 1.0]
    value = 0.0 if confidence is None else confidence
    for low, high in zip(edges, edges[1:], strict=False):
        if value < high or high == 1.0:
            return f"{low:g}-{high:g}"
    return f"{edges[-2]:g}-1"  # pragma: no cover - the loop always returns


@dataclass(frozen=True)
class AuditEstimate:
    """Estimated accuracy of shipped labels of one source (or ``all``), from expert audits."""

    source: str
    audited: int
    agreed: int
    accuracy: float  # weighted by stratum size
    low: float
    high: float


def weighted_estimate(
    source: str, weights: np.ndarray, right: np.ndarray, confidence: float
) -> AuditEstimate:
    """Accuracy of a stratified sample: each audited label (``right`` 1 or 0) counts with its
    ``weights`` (the size of the stratum it stands for), with a Wilson interval at ``confidence``.

    Examples
    --------
    >>> import numpy as np
    >>> est = weighted_estimate("model", np.array([3.0, 1.0]), np.array([1.0, 0.0]), 0.9)
    >>> est.accuracy, est.audited, est.agreed
    (0.75, 2, 1)
    """
    accuracy = float((weights * right).sum() / weights.sum())
    # A Wilson interval at the effective sample size of the weighted sample (Kish's n_eff).
    n_eff = weights.sum() ** 2 / (weights**2).sum()
    low, high = binomial_interval(round(accuracy * n_eff), max(round(n_eff), 1), confidence, "wilson")
    return AuditEstimate(source, len(right), int(right.sum()), accuracy, low, high)


@dataclass(frozen=True)
class AnsweredAudit:
    """One answered audit: was the shipped label the expert's?"""

    batch: str
    source: str
    weight: float
    right: bool


def estimates_by_source(answered: Sequence[AnsweredAudit], confidence: float) -> list[AuditEstimate]:
    """One :class:`AuditEstimate` per shipped source that has answered audits, then ``all``."""
    out = []
    for source in [*SHIPPED, "all"]:
        rows = [a for a in answered if source == "all" or a.source == source]
        if rows:
            weights = np.array([a.weight for a in rows])
            right = np.array([a.right for a in rows], dtype=float)
            out.append(weighted_estimate(source, weights, right, confidence))
    return out


@dataclass(frozen=True)
class Alarm:
    """Quality below target with confidence: what (``kind``), where (``scope``) and the message."""

    kind: str  # "model labels" | "controls"
    scope: str  # the batch, or "recent"
    message: str


def model_label_alarms(answered: Sequence[AnsweredAudit], *, target: float, confidence: float) -> list[Alarm]:
    """An alarm for each batch whose audited model labels are below ``target`` with
    ``confidence`` (the upper end of their interval is below it), batches in sorted order."""
    found = []
    for batch in sorted({a.batch for a in answered}):
        in_batch = [a for a in answered if a.batch == batch]
        for est in estimates_by_source(in_batch, confidence):
            if est.source == "model" and est.high < target:
                found.append(
                    Alarm(
                        "model labels",
                        batch,
                        f"batch {batch!r}: audited model labels are {est.accuracy:.1%} right "
                        f"({est.agreed} of {est.audited}; at most {est.high:.1%} at "
                        f"{confidence:.0%} confidence), below the target {target:.1%}",
                    )
                )
    return found


def control_alarm(right: int, n: int, *, min_accuracy: float, confidence: float) -> Alarm | None:
    """An alarm when ``right`` of the last ``n`` control answers are below ``min_accuracy`` with
    ``confidence`` (the upper end of their Wilson interval is below it); None otherwise.

    Examples
    --------
    >>> control_alarm(5, 20, min_accuracy=0.8, confidence=0.9).message
    'the last 20 control answers are 25.0% right (at most 43.2%), below 80%'
    >>> control_alarm(18, 20, min_accuracy=0.8, confidence=0.9) is None
    True
    """
    if not n:
        return None
    _, high = binomial_interval(right, n, confidence, "wilson")
    if high >= min_accuracy:
        return None
    return Alarm(
        "controls",
        "recent",
        f"the last {n} control answers are {right / n:.1%} right "
        f"(at most {high:.1%}), below {min_accuracy:.0%}",
    )
