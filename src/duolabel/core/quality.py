"""Agreement between annotators and annotator skill, on the columns ``task, worker, label``.

Every function takes the same answers frame as the aggregators (one row per answer) and the
project's labels in their meaningful order (the order matters for ordinal measures only).

- Agreement: :func:`cohen_kappa` (two annotators), :func:`fleiss_kappa` (many),
  :func:`krippendorff_alpha` (nominal or ordinal, any number of answers per item),
  :func:`item_disagreement` (per item).
- Skill: :func:`control_accuracy` (from known answers, with a Wilson or Clopper-Pearson interval)
  and :func:`confusion_accuracy` (from a fitted Dawid-Skene model, with a Beta posterior interval).
- Intervals: :func:`binomial_interval` (Wilson or Clopper-Pearson), shared with the audits and
  the quality rules for people.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, Literal, cast

import numpy as np
import pandas as pd

from duolabel.core.aggregation import check_answers
from duolabel.errors import DuolabelError

__all__ = [
    "binomial_interval",
    "cohen_kappa",
    "confusion_accuracy",
    "control_accuracy",
    "fleiss_kappa",
    "item_disagreement",
    "krippendorff_alpha",
]


def _counts(answers: pd.DataFrame, labels: Sequence[str]) -> np.ndarray:
    """Items x labels matrix of answer counts (items in sorted order)."""
    codes = pd.Categorical(answers["label"], categories=list(labels)).codes
    tasks, task_index = np.unique(answers["task"].astype(str).to_numpy(), return_inverse=True)
    counts = np.zeros((len(tasks), len(labels)), dtype=np.int64)
    np.add.at(counts, (task_index, codes), 1)
    return counts


def fleiss_kappa(answers: pd.DataFrame, labels: Sequence[str]) -> float:
    """Fleiss' kappa over all items with at least two answers.

    Items may have different numbers of answers: each item's observed agreement is the share
    of agreeing answer pairs within it (Fleiss 1971, eq. 2, with ``n`` per item), and chance
    agreement uses the overall label shares. With a constant number of answers per item this
    is exactly Fleiss' kappa (statsmodels' ``fleiss_kappa`` requires that constant number,
    which crowd data rarely has, hence this short implementation).

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"task": list("aabb"), "worker": [1, 2, 1, 2], "label": list("xxyx")})
    >>> round(fleiss_kappa(df, ["x", "y"]), 3)
    -0.333
    """
    check_answers(answers, labels)
    counts = _counts(answers, labels)
    n = counts.sum(axis=1)
    counts, n = counts[n >= 2], n[n >= 2]
    if len(n) == 0:
        raise DuolabelError("fleiss_kappa needs at least one item with two or more answers; got none.")
    observed = ((counts * (counts - 1)).sum(axis=1) / (n * (n - 1))).mean()
    shares = counts.sum(axis=0) / n.sum()
    expected = float((shares**2).sum())
    if expected >= 1.0:
        return 1.0  # every answer is the same label: perfect, if uninformative, agreement
    return float((observed - expected) / (1.0 - expected))


def krippendorff_alpha(answers: pd.DataFrame, labels: Sequence[str], *, level: str = "nominal") -> float:
    """Krippendorff's alpha (the ``krippendorff`` package), ``level`` "nominal" or "ordinal".

    For the ordinal level the order of ``labels`` is the scale order. Items with fewer than
    two answers carry no pairable values and do not count.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"task": list("aabbcc"), "worker": [1, 2] * 3, "label": list("xxyyxy")})
    >>> round(krippendorff_alpha(df, ["x", "y"]), 3)
    0.444
    """
    import krippendorff

    if level not in ("nominal", "ordinal"):
        raise DuolabelError(f"krippendorff_alpha: level must be 'nominal' or 'ordinal', got {level!r}.")
    check_answers(answers, labels)
    counts = _counts(answers, labels)
    counts = counts[counts.sum(axis=1) >= 2]
    if len(counts) == 0 or (counts.sum(axis=0) > 0).sum() < 2:
        # alpha is undefined without pairable values or with a single value in use
        if len(counts) and (counts.sum(axis=0) > 0).sum() == 1:
            return 1.0
        raise DuolabelError("krippendorff_alpha needs at least one item with two or more answers; got none.")
    return float(
        krippendorff.alpha(
            value_counts=counts,
            value_domain=list(range(len(labels))),
            level_of_measurement=cast(Literal["nominal", "ordinal"], level),  # checked above
        )
    )


def cohen_kappa(
    answers: pd.DataFrame,
    labels: Sequence[str],
    worker_a: Any,
    worker_b: Any,
    *,
    weights: Literal["linear", "quadratic"] | None = None,
) -> float:
    """Cohen's kappa of two annotators on the items both answered (scikit-learn).

    ``weights`` "linear" or "quadratic" gives the weighted kappa for ordinal labels.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"task": list("aabbcc"), "worker": ["p", "q"] * 3, "label": list("xxyyxy")})
    >>> round(cohen_kappa(df, ["x", "y"], "p", "q"), 3)
    0.4
    """
    from sklearn.metrics import cohen_kappa_score

    check_answers(answers, labels)
    a = answers[answers["worker"] == worker_a].set_index("task")["label"]
    b = answers[answers["worker"] == worker_b].set_index("task")["label"]
    both = a.index.intersection(b.index)
    if len(both) == 0:
        raise DuolabelError(f"cohen_kappa: workers {worker_a!r} and {worker_b!r} share no item.")
    both = both.sort_values()
    ya, yb = a.loc[both].to_numpy(), b.loc[both].to_numpy()
    if len(set(ya) | set(yb)) == 1:
        return 1.0  # both gave the one same label everywhere; sklearn would return nan
    return float(cohen_kappa_score(ya, yb, labels=list(labels), weights=weights))


def item_disagreement(answers: pd.DataFrame, labels: Sequence[str]) -> pd.DataFrame:
    """Per item: number of answers, share of the most frequent label, and normalized entropy.

    ``entropy`` is the entropy of the item's answer distribution divided by ``log(len(labels))``:
    0 when everyone agrees, 1 when the answers are spread evenly over every label.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"task": list("aabb"), "worker": [1, 2, 1, 2], "label": list("xxxy")})
    >>> item_disagreement(df, ["x", "y"]).round(2).to_dict("list")
    {'answers': [2.0, 2.0], 'agreement': [1.0, 0.5], 'entropy': [0.0, 1.0]}
    """
    check_answers(answers, labels)
    counts = _counts(answers, labels)
    n = counts.sum(axis=1)
    shares = counts / n[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(shares > 0, np.log(np.where(shares > 0, shares, 1.0)), 0.0)
    entropy = -(shares * logs).sum(axis=1) / np.log(max(len(labels), 2))
    index = pd.Index(np.unique(answers["task"].astype(str).to_numpy()), name="task")
    return pd.DataFrame(
        {"answers": n.astype(float), "agreement": shares.max(axis=1), "entropy": entropy + 0.0},
        index=index,
    )


def binomial_interval(correct: int, n: int, confidence: float, method: str) -> tuple[float, float]:
    """Interval of a proportion ``correct / n``: ``method`` is scipy's ``wilson`` or ``exact``
    (Clopper-Pearson); ``(0, 1)`` with no observations."""
    return _binomial_interval(int(correct), int(n), float(confidence), method)


# Remembered: the quality rules ask for it after every answer to a control (issue 12, the web
# app's hot path), scipy takes about a millisecond, and the counts repeat across annotators.
@functools.lru_cache(maxsize=65536)
def _binomial_interval(correct: int, n: int, confidence: float, method: str) -> tuple[float, float]:
    from scipy.stats import binomtest

    if n == 0:
        return (0.0, 1.0)
    ci = binomtest(correct, n).proportion_ci(confidence_level=confidence, method=method)
    return (float(ci.low), float(ci.high))


def control_accuracy(
    answers: pd.DataFrame,
    labels: Sequence[str],
    known: Mapping[Any, str],
    *,
    confidence: float = 0.95,
    method: Literal["wilson", "exact"] = "wilson",
) -> pd.DataFrame:
    """Each annotator's accuracy on items whose answer is known (controls, golden items).

    Returns one row per worker who answered at least one known item: ``controls`` (answers on
    known items), ``correct``, ``accuracy`` and the ``low``/``high`` ends of a binomial
    interval — Wilson's score interval by default, ``method="exact"`` for Clopper-Pearson
    (scipy's ``binomtest``).

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"task": ["c1", "c2", "c1"], "worker": ["p", "p", "q"], "label": ["x", "y", "y"]})
    >>> control_accuracy(df, ["x", "y"], {"c1": "x", "c2": "y"})[["correct", "accuracy"]].to_dict("index")
    {'p': {'correct': 2, 'accuracy': 1.0}, 'q': {'correct': 0, 'accuracy': 0.0}}
    """
    check_answers(answers, labels)
    bad = sorted(str(v) for v in set(known.values()) - set(labels))
    if bad:
        shown = ", ".join(map(repr, bad))
        raise DuolabelError(f"known answers: {shown} not among the labels {list(labels)}.")
    known_str = {str(task): label for task, label in known.items()}
    truth = answers["task"].astype(str).map(known_str)
    on_known = answers[truth.notna()].assign(correct=(answers["label"] == truth)[truth.notna()])
    rows = []
    for worker, group in on_known.groupby("worker", sort=True):
        n, k = len(group), int(group["correct"].sum())
        low, high = binomial_interval(k, n, confidence, method)
        rows.append(
            {"worker": worker, "controls": n, "correct": k, "accuracy": k / n, "low": low, "high": high}
        )
    frame = pd.DataFrame(rows, columns=["worker", "controls", "correct", "accuracy", "low", "high"])
    return frame.set_index("worker")


def confusion_accuracy(
    answers: pd.DataFrame, probas: pd.DataFrame, *, confidence: float = 0.95
) -> pd.DataFrame:
    """Each annotator's accuracy under a fitted model's posteriors, with a Beta posterior interval.

    ``probas`` is an aggregator's ``probas_`` (tasks x labels, rows summing to 1), typically
    Dawid-Skene's. A worker's expected number of correct answers is the sum, over their answers,
    of the posterior probability of the label they gave; ``accuracy`` is that sum over their
    number of answers (the diagonal of their confusion matrix weighted by how often each true
    label occurred in their work). The interval is the central ``confidence`` interval of the
    Jeffreys Beta posterior ``Beta(correct + 1/2, answers - correct + 1/2)``: it treats the
    expected count as observed, so it shows how much work the estimate rests on, not the
    uncertainty of the posteriors themselves.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"task": ["a", "b", "a"], "worker": ["p", "p", "q"], "label": ["x", "y", "y"]})
    >>> post = pd.DataFrame({"x": [0.9, 0.0], "y": [0.1, 1.0]}, index=pd.Index(["a", "b"], name="task"))
    >>> confusion_accuracy(df, post)["accuracy"].round(2).to_dict()
    {'p': 0.95, 'q': 0.1}
    """
    from scipy.stats import beta

    labels = [str(c) for c in probas.columns]
    check_answers(answers, labels)
    missing = set(answers["task"]) - set(probas.index)
    if missing:
        raise DuolabelError(f"confusion_accuracy: {len(missing)} answered task(s) have no posterior.")
    row = probas.index.get_indexer(answers["task"])
    col = pd.Categorical(answers["label"], categories=labels).codes
    hit = probas.to_numpy(dtype=float)[row, col]
    frame = pd.DataFrame({"worker": answers["worker"].to_numpy(), "hit": hit})
    grouped = frame.groupby("worker", sort=True)["hit"].agg(["size", "sum"])
    n, k = grouped["size"].to_numpy(dtype=float), grouped["sum"].to_numpy(dtype=float)
    tail = (1.0 - confidence) / 2
    low = beta.ppf(tail, k + 0.5, n - k + 0.5)
    high = beta.ppf(1.0 - tail, k + 0.5, n - k + 0.5)
    return pd.DataFrame(
        {"answers": n.astype(int), "correct": k, "accuracy": k / n, "low": low, "high": high},
        index=grouped.index,
    )
