"""``duolabel simulate`` for spans projects: the list replay of :mod:`duolabel.simulate_lists`
with the spans hooks.

People's recorded answers to an item become one span list by the token vote the aggregate stage
uses (:class:`~duolabel.core.spans.TokenVote`: a majority BIO tag per token, merged back into
spans); a list is scored against the gold spans by exact match (start, end and label), as the
report does: the share of items whose whole span list equals gold and the span F1 over all
spans (micro). Routing's expert tier (``routing.expert_share``) is replayed too: an escalated item
gets its recorded expert answer where the store has one, else the expectation with
``routing.expert_accuracy`` (or ``simulate --expert-accuracy``) described in
:mod:`duolabel.simulate_lists`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import pandas as pd

from duolabel.core.spans import TokenVote, parse_spans, span_scores
from duolabel.simulate_lists import ListKind, ListSimulationRow, replay_with_experts

if TYPE_CHECKING:
    from duolabel.project import Project
    from duolabel.simulate import RecordedAnswers

__all__ = ["span_figures", "simulate_spans", "spans_kind"]


def span_figures(given: list[str], gold: list[str]) -> tuple[float, float]:
    """(Share of items whose span list equals gold, exact-match span F1 over all spans) of the
    stored ``given`` lists against the ``gold`` ones; F1 is NaN when neither has a span.

    Examples
    --------
    >>> span_figures(['[{"start": 0, "end": 5, "label": "PER"}]', "[]"], ["[]", "[]"])
    (0.5, 0.0)
    """
    pairs = [(set(parse_spans(a)), set(parse_spans(g))) for a, g in zip(given, gold, strict=True)]
    tp = fp = fn = 0
    for a, g in pairs:
        t, p, n = span_scores(a, g)
        tp, fp, fn = tp + t, fp + p, fn + n
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    whole = sum(a == g for a, g in pairs) / len(pairs) if pairs else float("nan")
    return whole, f1


def spans_kind(labels: list[str]) -> ListKind:
    """The spans hooks of the list replay: the token vote and :func:`span_figures`.

    Examples
    --------
    >>> kind = spans_kind(["PER"])
    >>> frame = pd.DataFrame({"task": ["a", "a", "a"], "worker": [1, 2, 3], "label": [
    ...     '[{"start": 0, "end": 5, "label": "PER"}]', '[{"start": 0, "end": 5, "label": "PER"}]', "[]"]})
    >>> kind.vote(frame, {"a": "Alice sings"})["a"]
    '[{"start": 0, "end": 5, "label": "PER"}]'
    """

    def vote(frame: pd.DataFrame, texts: Mapping[str, str]) -> Mapping[str, str]:
        return dict(TokenVote(labels=labels, texts=texts).fit(frame).labels_.items())

    return ListKind("token vote, spans merged", vote, span_figures)


def simulate_spans(
    project: Project, recorded: RecordedAnswers, version: str, *, expert_accuracy: float | None = None
) -> list[ListSimulationRow]:
    """The simulation table of a spans project from people's ``recorded`` answers; escalated
    items without a recorded expert answer use ``expert_accuracy`` (None: the project's
    ``routing.expert_accuracy``).

    Examples
    --------
    >>> simulate_spans  # doctest: +ELLIPSIS
    <function simulate_spans at ...>
    """
    return replay_with_experts(
        project, recorded, version, spans_kind(project.config.task.label_names), expert_accuracy
    )
