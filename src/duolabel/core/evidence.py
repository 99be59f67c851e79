"""What the golden items and recorded answers say about the model and about people: the
pure maths behind the routing evidence, shared by the route stage, ``simulate`` and the report.

- people's accuracy: measured per person once enough control answers exist
  (:data:`MIN_CONTROLS`), from their stored skills (:func:`measured_accuracies`) or from
  recorded answers on golden items (:func:`worker_accuracies`);
- whether people's aggregated answer is right on an item (:func:`vote_correctness`,
  :func:`majority_correctness`);
- the meta-router's item features (:func:`log_length`, :func:`neighbourhood_accuracy`);
- how well each signal ranks the model's errors (:func:`error_ranking`): the human share any
  guarantee needs is bounded by it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from duolabel.core.prompt_variants import PROMPT_DISAGREEMENT

__all__ = [
    "MIN_CONTROLS",
    "NEIGHBOURS",
    "Answers",
    "ERROR_SIGNALS",
    "error_ranking",
    "log_length",
    "majority_correctness",
    "majority_label",
    "measured_accuracies",
    "neighbourhood_accuracy",
    "vote_correctness",
    "worker_accuracies",
]

MIN_CONTROLS = 5  # control answers before a person's measured accuracy replaces the prior
NEIGHBOURS = 10  # golden neighbours behind the neighbourhood accuracy

Answers = list[list[tuple[str, int]]]  # per item: (worker, label index) in the order given


def measured_accuracies(skills: Mapping[str, Mapping[str, Any] | None]) -> dict[str, float]:
    """Each person's measured accuracy (``skills[name]["accuracy"]``), where at least
    :data:`MIN_CONTROLS` control answers measured it.

    Examples
    --------
    >>> measured_accuracies({"ann": {"controls": 8, "accuracy": 0.9}, "bob": {"controls": 2}})
    {'ann': 0.9}
    """
    out = {}
    for name, measured in skills.items():
        measured = measured or {}
        if (measured.get("controls") or 0) >= MIN_CONTROLS and measured.get("accuracy") is not None:
            out[name] = float(measured["accuracy"])
    return out


def worker_accuracies(answers: Answers, gold: np.ndarray) -> tuple[dict[str, float], float]:
    """Each worker's accuracy on golden items (where at least :data:`MIN_CONTROLS` of their
    answers are) and the pooled accuracy of every answer (0.8 when there is none).

    Examples
    --------
    >>> worker_accuracies([[("ann", 0), ("bob", 1)]], np.array([0]))
    ({}, 0.5)
    """
    right: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    for given, truth in zip(answers, gold, strict=True):
        for worker, label in given:
            seen[worker] += 1
            right[worker] += int(label == truth)
    pooled = sum(right.values()) / sum(seen.values()) if seen else 0.8
    return {w: right[w] / n for w, n in seen.items() if n >= MIN_CONTROLS}, pooled


def vote_correctness(votes: Mapping[str, int] | None, gold: str, *, overlap: int, prior: float) -> float:
    """Probability that people's majority label is ``gold``: ties are split evenly; with
    fewer than ``overlap`` answers, ``prior`` (the planned accuracy of a majority).

    Examples
    --------
    >>> vote_correctness({"a": 2, "b": 2}, "a", overlap=3, prior=0.9)
    0.5
    >>> vote_correctness({"a": 1}, "a", overlap=3, prior=0.9)
    0.9
    """
    if not votes or sum(votes.values()) < overlap:
        return prior
    top = max(votes.values())
    winners = [k for k, v in votes.items() if v == top]
    return (gold in winners) / len(winners)


def majority_label(given: Sequence[tuple[str, int]], prior: np.ndarray) -> int:
    """Majority vote over ``(worker, label index)`` answers; ties go to the label the model
    (``prior``) finds more likely.

    Examples
    --------
    >>> majority_label([("ann", 0), ("bob", 1)], np.array([0.3, 0.7]))
    1
    """
    counts = np.bincount([label for _, label in given], minlength=len(prior)).astype(float)
    top = counts == counts.max()
    return int(np.argmax(np.where(top, prior + 1.0, 0.0)))


def majority_correctness(answers: Answers, probs: np.ndarray, gold: np.ndarray, overlap: int) -> np.ndarray:
    """Per item, 1.0 when the majority of its first ``overlap`` answers is ``gold`` (0.0 for
    an item without answers)."""
    return np.array(
        [
            float(majority_label(given[:overlap], p) == g) if given else 0.0
            for given, p, g in zip(answers, probs, gold, strict=True)
        ]
    )


#: The error-ranking signals, each oriented so that a higher value means "more likely wrong":
#: name -> (what it is, +1 or -1 applied to the raw value).
ERROR_SIGNALS: dict[str, tuple[str, int]] = {
    "confidence": ("the calibrated top probability, low first", -1),
    "margin": ("gap between the top two labels, small first", -1),
    "entropy": ("entropy of the calibrated distribution", +1),
    "disagreement": ("ensemble disagreement (labelers' spread)", +1),
    # LLM labelers with prompt_variants (core.prompt_variants)
    PROMPT_DISAGREEMENT: ("disagreement between paraphrased prompts (Jensen-Shannon)", +1),
    "neighbourhood_accuracy": (f"model's accuracy on the {NEIGHBOURS} nearest golden items, low first", -1),
    # not a raw signal: error_ranking's ``combined`` score (high means right)
    "combined": ("all of them: the meta-router's cross-fitted score", -1),
}


def error_ranking(
    signals: Mapping[str, np.ndarray], wrong: np.ndarray, *, combined: np.ndarray | None = None
) -> dict[str, float]:
    """AUROC with which each signal ranks the model's errors above its right labels (0.5: no
    better than chance; NaN when the items are all right or all wrong, or the signal is
    constant, as disagreement is with one labeler). Items where a signal is NaN (not
    measured) are left out of its AUROC.

    ``signals`` maps names of :data:`ERROR_SIGNALS` to raw per-item values (``confidence`` is
    the top probability); ``combined`` is a score where high means *right* (the meta-router's
    cross-fitted scores) and is reported as ``combined``.

    Examples
    --------
    >>> wrong = np.array([True, False, False, True])
    >>> error_ranking({"confidence": np.array([0.6, 0.9, 0.8, 0.7])}, wrong)
    {'confidence': 1.0}
    """
    from sklearn.metrics import roc_auc_score

    wrong = np.asarray(wrong, dtype=bool)
    oriented = {
        name: sign * np.asarray(signals[name], dtype=float)
        for name, (_, sign) in ERROR_SIGNALS.items()
        if name in signals
    }
    if combined is not None:
        oriented["combined"] = -np.asarray(combined, dtype=float)
    out: dict[str, float] = {}
    for name, values in oriented.items():
        # An item the signal was not measured on (NaN) is left out of that signal's AUROC.
        seen = ~np.isnan(values)
        hit, values = wrong[seen], values[seen]
        usable = 0 < hit.sum() < len(hit) and np.ptp(values) > 0
        out[name] = float(roc_auc_score(hit, values)) if usable else float("nan")
    return out


def log_length(texts: Sequence[str]) -> np.ndarray:
    """The meta-router's length feature: ``log(1 + characters)``."""
    return np.log1p(np.array([len(t) for t in texts], dtype=float))


def neighbourhood_accuracy(
    vectors: np.ndarray,
    golden_vectors: np.ndarray,
    golden_correct: np.ndarray,
    *,
    own: Sequence[int | None] | None = None,
    k: int = NEIGHBOURS,
) -> np.ndarray:
    """The model's accuracy on the ``k`` golden items nearest (by cosine similarity) to each
    item. ``own[i]`` is item i's index among the golden items when it is one: a golden item
    is not its own neighbour.

    Examples
    --------
    >>> golden = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    >>> neighbourhood_accuracy(np.array([[1.0, 0.05]]), golden, np.array([1.0, 0.0, 1.0]), k=2).tolist()
    [0.5]
    """
    if not len(vectors):
        return np.zeros(0)
    norm = lambda m: m / np.clip(np.linalg.norm(m, axis=1, keepdims=True), 1e-12, None)  # noqa: E731
    sims = norm(vectors) @ norm(golden_vectors).T
    for i, j in enumerate(own or []):
        if j is not None:
            sims[i, j] = -np.inf
    k = min(k, max(len(golden_vectors) - 1, 1))
    nearest = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.asarray(golden_correct)[nearest].mean(axis=1)
