"""The LLM judge of synthetic items (issue 16, item 2; ``synthetic.judge``): the generating
llama or openai labeler, fitted on the golden items there are, labels each candidate
``duolabel generate`` would keep. A candidate whose judged label is not its intended label
is flagged (``synthetic_items.judged_label``, shown on the review page) and, with
``synthetic.drop_inconsistent``, dropped. The judge's compute and tokens are added to the
``generate`` run's cost.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from duolabel.config import LabelerConfig
from duolabel.context import Context
from duolabel.labelers import build_labeler
from duolabel.labelers.base import TextItem, Usage
from duolabel.training_data import golden_items

__all__ = ["Judge"]


class Judge:
    """Labels candidates one at a time with the labeler of ``cfg``; ``usage_`` sums its calls,
    ``judged_`` and ``inconsistent_`` count the candidates it labelled and disagreed on.

    Examples
    --------
    >>> import duolabel, tempfile
    >>> project = duolabel.init_project(tempfile.mkdtemp(), labeler={"backend": "llama"})
    >>> judge = Judge(project, project.config.labeler[0])  # doctest: +SKIP
    >>> judge.label(TextItem("c1", "A novel about two sisters."))  # doctest: +SKIP
    'book'
    """

    def __init__(self, ctx: Context, cfg: LabelerConfig) -> None:
        self.labels = ctx.config.task.label_names
        self.model = build_labeler(ctx, cfg)
        if hasattr(self.model, "fit"):
            items, gold = golden_items(ctx, minimum=False)
            self.model.fit(items, gold)
        self.usage_ = Usage()
        self.judged_ = 0
        self.inconsistent_ = 0

    def label(self, item: TextItem) -> str | None:
        """The judged label of ``item``; None when the labeler abstains (an item too long)."""
        probs, usage = self.model.predict_proba([item])
        self.usage_.add(usage)
        if np.isnan(probs[0]).any():
            return None
        return self.labels[int(np.argmax(probs[0]))]

    def agrees(self, item: TextItem, intended: str) -> tuple[bool, str | None]:
        """Whether the judge's label of ``item`` is ``intended`` (an abstention agrees: there is
        nothing to flag), and the judged label."""
        judged = self.label(item)
        if judged is None:
            return True, None
        self.judged_ += 1
        if judged != intended:
            self.inconsistent_ += 1
        return judged == intended, judged

    def figures(self) -> dict[str, Any]:
        """The counts for the run's figures."""
        return {
            "judged": self.judged_,
            "judge_inconsistent": self.inconsistent_,
            "judge_rejection_rate": round(self.inconsistent_ / self.judged_, 4) if self.judged_ else 0.0,
        }
