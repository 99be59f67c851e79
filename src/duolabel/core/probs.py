"""The one probability-matrix contract of the package.

A model's output is always a distribution over the task's labels. In the store it is a
``{label: probability}`` mapping per item (JSON); everywhere else it is an
``(n_items, n_labels)`` float matrix whose columns follow the task's label order. These two
functions are the only converters between the two shapes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["as_dict", "as_matrix", "signals"]

_EPS = 1e-12


def as_matrix(dists: Sequence[Mapping[str, float]], labels: Sequence[str]) -> np.ndarray:
    """Stack ``{label: probability}`` mappings into an ``(n, len(labels))`` float matrix.

    Examples
    --------
    >>> as_matrix([{"a": 0.25, "b": 0.75}], ["b", "a"]).tolist()
    [[0.75, 0.25]]
    >>> as_matrix([], ["a", "b"]).shape
    (0, 2)
    """
    return np.array([[d[label] for label in labels] for d in dists], dtype=float).reshape(
        len(dists), len(labels)
    )


def as_dict(row: np.ndarray | Sequence[float], labels: Sequence[str]) -> dict[str, float]:
    """One matrix row back to the ``{label: probability}`` mapping the store keeps.

    Examples
    --------
    >>> as_dict([0.5, 0.5], ["a", "b"])
    {'a': 0.5, 'b': 0.5}
    """
    return {label: float(v) for label, v in zip(labels, row, strict=True)}


def signals(probs: np.ndarray) -> dict[str, np.ndarray]:
    """Per-row confidence signals of an ``(n, k)`` distribution matrix: the top probability
    (``max_prob``), the gap to the runner-up (``margin``) and the entropy in nats.

    The one definition used by calibration (stored with each prediction) and by routing's
    meta-router features.

    Examples
    --------
    >>> {k: v.round(3).tolist() for k, v in signals(np.array([[0.7, 0.2, 0.1]])).items()}
    {'max_prob': [0.7], 'margin': [0.5], 'entropy': [0.802]}
    """
    probs = np.asarray(probs, dtype=float)
    if len(probs) == 0:
        empty = np.zeros(0)
        return {"max_prob": empty, "margin": empty, "entropy": empty}
    ordered = np.sort(probs, axis=1)
    return {
        "max_prob": ordered[:, -1],
        "margin": ordered[:, -1] - ordered[:, -2],
        "entropy": -(probs * np.log(np.clip(probs, _EPS, 1.0))).sum(axis=1),
    }
