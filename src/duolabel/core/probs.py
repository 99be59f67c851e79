"""The one probability-matrix contract of the package.

A model's output is always a distribution over the task's labels. In the store it is a
``{label: probability}`` mapping per item (JSON); everywhere else it is an
``(n_items, n_labels)`` float matrix whose columns follow the task's label order. These two
functions are the only converters between the two shapes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["as_dict", "as_matrix"]


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
