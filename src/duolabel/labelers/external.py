"""The external labeler: predictions made outside duolabel (an LLM batch job, autolabel,
another team's model), imported with ``duolabel import-predictions`` (see
:mod:`duolabel.predictions`). It never predicts by itself: fitting finds the version last
imported, and asking it for an item it has no imported prediction for is an error that
names the command to run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from duolabel.errors import LabelerError
from duolabel.labelers.base import Progress, TextItem, Usage

__all__ = ["ExternalLabeler"]

#: Ids named in the error for items without an imported prediction.
_SHOWN = 5


class ExternalLabeler:
    """Stands for imported predictions in the labeling stage.

    ``version`` is the version of the predictions imported last (None before any import);
    the stored predictions of that version are the labeler's output, so the labeling stage
    finds them done and asks :meth:`predict_proba` only for items they lack.

    Examples
    --------
    >>> labeler = ExternalLabeler(labels=["a", "b"], name="gpt4o", version="v1").fit([], [])
    >>> labeler.version_
    'v1'
    >>> labeler.predict_proba([TextItem("i1", "text")])
    Traceback (most recent call last):
    ...
    duolabel.errors.LabelerError: labeler 'external:gpt4o': 1 item has no imported prediction (i1) ...
    """

    #: The labeling stage asks for every missing item at once, so the error counts them all.
    imported: ClassVar[bool] = True

    def __init__(self, *, labels: list[str], name: str, version: str | None) -> None:
        self.labels = labels
        self.name = name
        self.version = version

    def _command(self) -> str:
        return f"'duolabel import-predictions FILE --labeler {self.name}'"

    def fit(
        self, items: Sequence[TextItem], labels: Sequence[str], *, progress: Progress | None = None
    ) -> ExternalLabeler:
        """Take the imported version; nothing is trained (the golden items are not used)."""
        if self.version is None:
            raise LabelerError(
                f"labeler 'external:{self.name}' has no imported predictions: run {self._command()} "
                "with a file of id and label + confidence (or p_<label> columns)"
            )
        self.version_ = self.version
        return self

    def predict_proba(
        self, items: Sequence[TextItem], *, progress: Progress | None = None
    ) -> tuple[np.ndarray, Usage]:
        """Never returns: these items lack an imported prediction."""
        ids = [item.id for item in items]
        shown = ", ".join(ids[:_SHOWN]) + (f" and {len(ids) - _SHOWN:,} more" if len(ids) > _SHOWN else "")
        noun = "item has" if len(ids) == 1 else "items have"
        raise LabelerError(
            f"labeler 'external:{self.name}': {len(ids):,} {noun} no imported prediction ({shown}) "
            f"in its version {self.version}; import a file covering every item (golden ones included) "
            f"with {self._command()}"
        )
