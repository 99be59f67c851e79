"""The quality rules for people, as pure functions of counts, labels and answer frames.

:mod:`duolabel.people.qc` reads the counts from the store and applies these; the report
and ``simulate`` may call them on recorded answers alike.

- **Control accuracy** is the share of control items answered right, with a Wilson score
  interval (Wilson 1927; it stays inside [0, 1] and behaves with few answers, unlike the
  normal approximation): :func:`wilson_interval`, :func:`control_skills`.
- **Suspension** (:func:`below_control_bar`): once enough controls are answered, an
  annotator whose interval lies wholly below the bar (its upper bound is below) is out.
- **Flags** (:func:`fraud_flags`, shown to admins, never acted on automatically):
  ``fast`` (too large a share of answers quicker than the minimum time) and ``streak``
  (too many identical answers in a row, :func:`same_label_streak`);
  ``low_agreement`` comes from :func:`agreement_with_consensus`.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import pandas as pd

from duolabel.core.quality import binomial_interval

__all__ = [
    "agreement_with_consensus",
    "below_control_bar",
    "control_skills",
    "fraud_flags",
    "same_label_streak",
    "wilson_interval",
]


def wilson_interval(correct: float, n: int, *, confidence: float = 0.9) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``correct / n`` at level ``confidence``.

    With no observations it is ``(0.0, 1.0)``: nothing is known yet.

    Examples
    --------
    >>> low, high = wilson_interval(8, 10, confidence=0.9)
    >>> round(low, 3), round(high, 3)
    (0.541, 0.931)
    >>> wilson_interval(0, 0)
    (0.0, 1.0)
    """
    if not 0 <= correct <= max(n, 0):
        raise ValueError(f"correct must be between 0 and n={n}, got {correct}")
    if float(correct).is_integer():
        return binomial_interval(int(correct), max(n, 0), confidence, "wilson")
    # Partial credit (a spans control scores its span F1) makes the count fractional; scipy
    # takes whole counts only, so the same Wilson formula is written out for it.
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + confidence / 2))
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def control_skills(correct: float, n: int, *, confidence: float) -> dict[str, Any]:
    """The skill entry the aggregation and routing read: counts, accuracy, Wilson bounds.

    ``correct`` may be a sum of partial credits (multi-label controls); the interval then
    counts it rounded to whole answers.

    Examples
    --------
    >>> skills = control_skills(3, 4, confidence=0.9)
    >>> skills["controls"], skills["control_correct"], skills["accuracy"], skills["interval"]
    (4, 3, 0.75, 'wilson')
    """
    low, high = wilson_interval(round(correct), n, confidence=confidence)
    return {
        "controls": n,
        "control_correct": correct,
        "accuracy": correct / n if n else None,
        "low": low,
        "high": high,
        "interval": "wilson",
        "confidence": confidence,
    }


def same_label_streak(labels: Sequence[str]) -> int:
    """Length of the run of identical labels at the start of ``labels`` (newest first).

    Examples
    --------
    >>> same_label_streak(["spam", "spam", "ham", "spam"]), same_label_streak([])
    (2, 0)
    """
    run = 0
    for label in labels:
        if label != labels[0]:
            break
        run += 1
    return run


def fraud_flags(
    *,
    answers: int,
    fast: int,
    streak: int,
    min_answers: int,
    max_fast_share: float,
    max_streak: int,
) -> set[str]:
    """The flags that counts raise: ``fast`` (more than ``max_fast_share`` of ``answers``
    were fast, once there are ``min_answers``) and ``streak`` (``max_streak`` identical
    answers in a row).

    Examples
    --------
    >>> sorted(fraud_flags(answers=20, fast=12, streak=3, min_answers=10, max_fast_share=0.5, max_streak=3))
    ['fast', 'streak']
    """
    flags = set()
    if answers >= min_answers and fast > max_fast_share * answers:
        flags.add("fast")
    if streak >= max_streak:
        flags.add("streak")
    return flags


def below_control_bar(controls: int, high: float, *, min_controls: int, min_accuracy: float) -> bool:
    """Whether ``min_controls`` or more controls put the accuracy's upper bound ``high`` below the bar.

    Examples
    --------
    >>> below_control_bar(10, 0.6, min_controls=10, min_accuracy=0.7)
    True
    >>> below_control_bar(9, 0.6, min_controls=10, min_accuracy=0.7)  # too few controls yet
    False
    """
    return controls >= min_controls and high < min_accuracy


def agreement_with_consensus(answers: pd.DataFrame) -> pd.Series:
    """Per worker, the share of their answers that agree with the majority of the others.

    ``answers`` has the columns ``task, worker, label``. An answer counts where at least
    two other workers answered the same task; it agrees when its label is among the
    others' most frequent labels. Workers with no such answer get NaN.

    Examples
    --------
    >>> df = pd.DataFrame({"task": [1, 1, 1, 2, 2, 2], "worker": list("abcabc"),
    ...                    "label": list("xxyxxx")})
    >>> agreement_with_consensus(df).to_dict()
    {'a': 1.0, 'b': 1.0, 'c': 0.5}
    """
    hits: dict[Any, int] = defaultdict(int)
    seen: dict[Any, int] = defaultdict(int)
    for _, group in answers.groupby("task", sort=False):
        if len(group) < 3:
            continue
        counts = Counter(group["label"])
        for worker, label in zip(group["worker"], group["label"], strict=True):
            others = counts.copy()
            others[label] -= 1
            top = max(others.values())
            seen[worker] += 1
            hits[worker] += others[label] == top
    workers = list(dict.fromkeys(answers["worker"]))
    return pd.Series(
        {w: hits[w] / seen[w] if seen[w] else float("nan") for w in workers}, name="agreement", dtype=float
    )
