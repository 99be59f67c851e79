"""Pairwise preference: which of two responses to one prompt is better (A, B, or a tie).

An item is a prompt (the item's text) and two responses (the fields ``response_a`` and
``response_b``); an answer is ``A``, ``B`` or, where the project lists it, ``tie`` (see
:class:`duolabel.core.tasks.Pairwise`). What is particular to pairs lives here: the fixed
labels, swapping the two responses (which flips an answer and a distribution), the features an
embedding head reads from a pair, the swap-consistency of a model that scored both orders, and
Bradley-Terry scores for ranking the systems that wrote the responses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "PAIR_FIELDS",
    "OrderCalibrator",
    "PAIRWISE_LABELS",
    "SYSTEM_FIELDS",
    "bradley_terry",
    "check_pair_labels",
    "pair_features",
    "swap_consistent",
    "swapped_answer",
    "swapped_columns",
    "swapped_control",
    "system_ranking",
]

PAIR_FIELDS = ("response_a", "response_b")  # the item fields holding the two responses
A, B, TIE = "A", "B", "tie"
#: Item fields that may name the systems that wrote response A and response B, in the order
#: they are looked for (the first pair any item carries is used).
SYSTEM_FIELDS = (("model_a", "model_b"), ("system_a", "system_b"))
PAIRWISE_LABELS = (A, B, TIE)


def check_pair_labels(labels: Sequence[str]) -> None:
    """``ValueError`` unless ``labels`` are ``A, B`` or ``A, B, tie`` (in that order).

    Examples
    --------
    >>> check_pair_labels(["A", "B", "tie"])
    >>> check_pair_labels(["yes", "no"])
    Traceback (most recent call last):
    ...
    ValueError: a pairwise task's labels are A, B and optionally tie (in that order), got 'yes', 'no'
    """
    if list(labels) not in ([A, B], [A, B, TIE]):
        raise ValueError(
            "a pairwise task's labels are A, B and optionally tie (in that order), got "
            + ", ".join(map(repr, labels))
        )


def swapped_answer(answer: str) -> str:
    """The answer to the same pair shown with A and B swapped (a tie stays a tie).

    Examples
    --------
    >>> [swapped_answer(x) for x in ("A", "B", "tie")]
    ['B', 'A', 'tie']
    """
    return {A: B, B: A}.get(answer, answer)


def swapped_columns(probs: np.ndarray) -> np.ndarray:
    """A ``(n, 2 or 3)`` distribution over ``A, B[, tie]`` for the swapped pairs: A and B exchanged.

    Examples
    --------
    >>> swapped_columns(np.array([[0.7, 0.2, 0.1]])).tolist()
    [[0.2, 0.7, 0.1]]
    """
    probs = np.asarray(probs)
    order = [1, 0, *range(2, probs.shape[1])]
    return probs[:, order]


def swap_consistent(shown: np.ndarray, swapped_back: np.ndarray) -> np.ndarray:
    """Per pair, whether both orders pick the same winner: ``shown`` is the distribution with
    the pair as given, ``swapped_back`` the one for the swapped pair mapped back
    (:func:`swapped_columns`). A NaN row (an abstention) is never consistent.

    Examples
    --------
    >>> shown = np.array([[0.8, 0.2], [0.6, 0.4]])
    >>> swapped_back = np.array([[0.7, 0.3], [0.3, 0.7]])  # the second pair: position bias
    >>> swap_consistent(shown, swapped_back).tolist()
    [True, False]
    """
    shown, swapped_back = np.asarray(shown, float), np.asarray(swapped_back, float)
    valid = ~(np.isnan(shown).any(axis=1) | np.isnan(swapped_back).any(axis=1))
    picks = np.where(valid, np.nan_to_num(shown).argmax(axis=1), -1)
    back = np.where(valid, np.nan_to_num(swapped_back).argmax(axis=1), -2)
    return np.asarray(picks == back)


class OrderCalibrator:
    """Calibration of one order's distributions (the pairs as shown, or swapped and mapped
    back): a multinomial logistic regression on the log-probabilities, fitted on golden pairs.

    A judge with a position bias gives the first position more than its due in every pair; this
    learns the shift (and a temperature) for each order apart, so that the two orders are
    comparable before they are averaged and checked for swap-consistency.

    Examples
    --------
    >>> biased = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]] * 3)
    >>> gold = np.array([0, 0, 1, 1] * 3)
    >>> OrderCalibrator().fit(biased, gold).transform(np.array([[0.65, 0.35]])).argmax()
    np.int64(1)
    """

    def __init__(self, C: float = 1.0) -> None:
        self.C = C

    @staticmethod
    def _features(probs: np.ndarray) -> np.ndarray:
        return np.log(np.clip(np.asarray(probs, dtype=float), 1e-9, 1.0))

    def fit(self, probs: np.ndarray, gold: np.ndarray) -> OrderCalibrator:
        """Fit on ``(n, k)`` distributions and gold label indices (rows with NaN are left out)."""
        from sklearn.linear_model import LogisticRegression

        probs, gold = np.asarray(probs, dtype=float), np.asarray(gold)
        self.n_labels_ = probs.shape[1]
        keep = ~np.isnan(probs).any(axis=1)
        self.model_ = LogisticRegression(C=self.C, max_iter=1000).fit(self._features(probs[keep]), gold[keep])
        return self

    def transform(self, probs: np.ndarray) -> np.ndarray:
        """Calibrated distributions; NaN rows stay NaN."""
        probs = np.asarray(probs, dtype=float)
        out = np.full(probs.shape, np.nan)
        keep = ~np.isnan(probs).any(axis=1)
        if keep.any():
            fitted = np.zeros((int(keep.sum()), self.n_labels_))
            fitted[:, self.model_.classes_] = self.model_.predict_proba(self._features(probs[keep]))
            out[keep] = fitted
        return out


def pair_features(prompt: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Features of pairs from the (normalised) embeddings of their prompts and responses, one
    row per pair: ``[e(a) - e(b), e(p) * (e(a) - e(b)), cos(p, a) - cos(p, b), |e(a) - e(b)|]``.

    The first three blocks change sign when A and B are swapped (which response is better, how
    that depends on the prompt, and which response is nearer the prompt: the third is the sum
    of the second, given on its own so that a few golden pairs suffice to weigh it); the last
    does not (how different the responses are: a tie's cue).

    Examples
    --------
    >>> p, a, b = np.array([[1.0, 0.0]]), np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    >>> pair_features(p, a, b).tolist()
    [[1.0, -1.0, 1.0, -0.0, 1.0, 1.0, 1.0]]
    >>> (pair_features(p, b, a)[:, :5] == -pair_features(p, a, b)[:, :5]).all()
    np.True_
    """
    diff = np.asarray(a) - np.asarray(b)
    towards = np.asarray(prompt) * diff
    return np.hstack([diff, towards, towards.sum(axis=1, keepdims=True), np.abs(diff)])


def swapped_control(
    record: Mapping[str, Any], *, gold_column: str = "gold", suffix: str = "-swapped", id_field: str = "id"
) -> dict[str, Any]:
    """A swapped duplicate of a pair with a known answer: the same prompt with the two responses
    exchanged, its gold flipped, under the id ``<id><suffix>`` (in ``id_field``). Imported as a
    control item, it checks that people judge the responses, not their positions; nothing on the
    labeling page tells it from any other task (the page never shows ids). ``duolabel import
    --swapped`` adds these twins under ids that do not say what they are.

    Examples
    --------
    >>> swapped_control({"id": "p1", "text": "Say hi", "response_a": "hi", "response_b": "bye", "gold": "A"})
    {'id': 'p1-swapped', 'text': 'Say hi', 'response_a': 'bye', 'response_b': 'hi', 'gold': 'B'}
    """
    out = dict(record)
    out[id_field] = f"{record[id_field]}{suffix}"
    out[PAIR_FIELDS[0]], out[PAIR_FIELDS[1]] = record[PAIR_FIELDS[1]], record[PAIR_FIELDS[0]]
    if record.get(gold_column) is not None:
        out[gold_column] = swapped_answer(str(record[gold_column]))
    return out


def bradley_terry(
    labels: Sequence[str],
    system_a: Sequence[str],
    system_b: Sequence[str],
    *,
    n_iter: int = 100,
) -> pd.Series:
    """Bradley-Terry strengths of the systems that wrote the responses, from pairwise answers
    (crowd-kit's ``BradleyTerry``): one answer per pair, ``A``, ``B`` or ``tie`` (a tie counts
    as half a win each way), ``system_a`` / ``system_b`` naming who wrote each response.
    Strengths sum to 1; the best system first.

    Examples
    --------
    >>> s = bradley_terry(["A", "A", "B", "A"], ["x", "x", "y", "y"], ["y", "z", "z", "z"])
    >>> s.index.tolist()
    ['x', 'y', 'z']
    """
    from crowdkit.aggregation import BradleyTerry

    if not (len(labels) == len(system_a) == len(system_b)):
        raise ValueError("bradley_terry needs one answer and two system names per pair")
    rows: list[dict[str, Any]] = []
    for i, (label, left, right) in enumerate(zip(labels, system_a, system_b, strict=True)):
        winners = {A: [left], B: [right], TIE: [left, right]}.get(label, [])
        rows += [{"worker": str(i), "left": left, "right": right, "label": w} for w in winners]
    if not rows:
        return pd.Series(dtype=float, name="strength")
    scores = BradleyTerry(n_iter=n_iter).fit(pd.DataFrame(rows)).scores_
    return scores.rename("strength").sort_values(ascending=False, kind="stable")


def system_ranking(labels: Sequence[str], fields: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A ranking table of the systems that wrote the responses, from one final answer per
    pair and the pairs' item fields: the first :data:`SYSTEM_FIELDS` pair any item carries
    names each response's system (pairs without both names, or with the same system twice,
    are left out). One row per system, strongest first: its Bradley-Terry strength
    (:func:`bradley_terry`), pairs, wins, ties and losses. Empty when no item names systems.

    Examples
    --------
    >>> fields = [{"model_a": "x", "model_b": "y"}, {"model_a": "y", "model_b": "z"},
    ...           {"model_a": "z", "model_b": "x"}, {"response_a": "no systems"}]
    >>> rows = system_ranking(["A", "A", "B", "A"], fields)
    >>> [(r["system"], r["pairs"], r["wins"], r["losses"]) for r in rows]
    [('x', 2, 2, 0), ('y', 2, 1, 1), ('z', 2, 0, 2)]
    """
    names = next((pair for pair in SYSTEM_FIELDS if any(pair[0] in f and pair[1] in f for f in fields)), None)
    if names is None:
        return []
    kept = [
        (label, str(f[names[0]]), str(f[names[1]]))
        for label, f in zip(labels, fields, strict=True)
        if f.get(names[0]) not in (None, "")
        and f.get(names[1]) not in (None, "")
        and f[names[0]] != f[names[1]]
    ]
    if not kept:
        return []
    answers, left, right = (list(x) for x in zip(*kept, strict=True))
    strengths = bradley_terry(answers, left, right)
    tally: dict[str, dict[str, int]] = {}
    for label, a, b in kept:
        for me, won in ((a, A), (b, B)):
            row = tally.setdefault(me, {"pairs": 0, "wins": 0, "ties": 0, "losses": 0})
            row["pairs"] += 1
            row["ties" if label == TIE else "wins" if label == won else "losses"] += 1
    order = list(strengths.index) + sorted(set(tally) - set(strengths.index))
    return [
        {"system": name, "strength": float(strengths.get(name, float("nan"))), **tally[name]}
        for name in order
    ]
