"""Aggregation of human answers into labels, on crowd-kit's columns ``task, worker, label``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sqlalchemy import delete, select

from duolabel.costs import ledger_run
from duolabel.errors import DuolabelError
from duolabel.store import Annotation, Annotator, FinalLabel, Prediction, Route
from duolabel.store.tables import utcnow

if TYPE_CHECKING:
    from duolabel.project import Project

__all__ = ["AggregateResult", "MajorityVote", "aggregate_project", "check_answers"]

COLUMNS = ("task", "worker", "label")
_SHOWN = 10


def check_answers(answers: pd.DataFrame, labels: Sequence[str], *, name: str = "answers") -> None:
    """Check the answers contract once, at the boundary; raise a DuolabelError naming every bad row.

    ``answers`` needs the columns ``task, worker, label`` without missing values, every label
    among ``labels``, and at most one answer per worker and task.
    """
    missing = [c for c in COLUMNS if c not in answers.columns]
    if missing:
        raise DuolabelError(
            f"{name}: missing column(s) {', '.join(missing)}; expected the columns task, worker, label."
        )
    problems: list[str] = []
    nulls = answers[list(COLUMNS)].isna().any(axis=1).to_numpy()
    for pos in np.flatnonzero(nulls)[:_SHOWN]:
        problems.append(f"row {pos}: a missing task, worker or label")
    allowed = set(labels)
    bad = ~answers["label"].isin(allowed).to_numpy() & ~nulls
    for pos in np.flatnonzero(bad)[:_SHOWN]:
        problems.append(
            f"row {pos}, task {answers['task'].iloc[pos]!r}, column 'label': {answers['label'].iloc[pos]!r}"
            f" is not one of {', '.join(map(repr, labels))}"
        )
    dup = answers.duplicated(subset=["task", "worker"], keep="first").to_numpy() & ~nulls
    for pos in np.flatnonzero(dup)[:_SHOWN]:
        problems.append(
            f"row {pos}: worker {answers['worker'].iloc[pos]!r} answered task "
            f"{answers['task'].iloc[pos]!r} more than once"
        )
    if problems:
        total = int(nulls.sum() + bad.sum() + dup.sum())
        more = f"\n... and {total - len(problems)} more" if total > len(problems) else ""
        raise DuolabelError(f"{name}: {total} bad row(s):\n" + "\n".join(problems) + more)


class MajorityVote:
    """The most frequent answer per task; its vote share is the confidence.

    Ties are broken by ``tie_break`` (for instance the model's calibrated probabilities)
    and then by the order of ``labels``, so the result is deterministic and does not
    depend on row order or worker names.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"task": ["a", "a", "a"], "worker": [1, 2, 3], "label": ["x", "y", "x"]})
    >>> MajorityVote(labels=["x", "y"]).fit_predict(df).to_dict()
    {'a': 'x'}
    """

    def __init__(self, *, labels: Sequence[str]) -> None:
        self.labels = list(labels)

    def fit(
        self, answers: pd.DataFrame, tie_break: Mapping[str, Mapping[str, float]] | None = None
    ) -> MajorityVote:
        counts = (
            answers.groupby(["task", "label"])
            .size()
            .unstack(fill_value=0)
            .reindex(columns=self.labels, fill_value=0)
        )
        self.probas_ = counts.div(counts.sum(axis=1), axis=0)
        rank = {label: i for i, label in enumerate(self.labels)}
        winners = {}
        for task, row in counts.iterrows():
            top = row.max()
            tied = [label for label in self.labels if row[label] == top]
            prior = (tie_break or {}).get(str(task), {})
            winners[task] = min(tied, key=lambda lab: (-prior.get(lab, 0.0), rank[lab]))
        self.labels_ = pd.Series(winners, name="agg_label", dtype=object)
        self.labels_.index.name = "task"
        return self

    def fit_predict(
        self, answers: pd.DataFrame, tie_break: Mapping[str, Mapping[str, float]] | None = None
    ) -> pd.Series:
        return self.fit(answers, tie_break).labels_


# ---------------------------------------------------------------------------
# The aggregation stage


@dataclass
class AggregateResult:
    answers: int
    finalized: int
    waiting: int


def aggregate_project(project: Project) -> AggregateResult:
    """Turn the answers of items that have all their answers into final labels.

    Suspended annotators' answers are left out (and kept). The model's calibrated
    probabilities break ties between equally voted labels.
    """
    from duolabel.labelers import current_model_version

    labels = project.config.task.label_names
    store = project.store
    with store.read() as session:
        routes = {r.item_id: r for r in session.scalars(select(Route).where(Route.decision == "humans"))}
        answers = session.execute(
            select(Annotation.item_id, Annotator.name, Annotation.label)
            .join(Annotator, Annotator.id == Annotation.annotator_id)
            .where(Annotator.status != "suspended", Annotation.item_id.in_(list(routes)))
        ).all()
        people_final = set(
            session.scalars(select(FinalLabel.item_id).where(FinalLabel.source.in_(["humans", "expert"])))
        )
    frame = pd.DataFrame(answers, columns=["task", "worker", "label"])
    counts = frame.groupby("task").size() if len(frame) else pd.Series(dtype=int)
    complete = [item for item, route in routes.items() if counts.get(item, 0) >= route.overlap]
    waiting = len(routes) - len(complete)
    todo = [item for item in complete if item not in people_final]
    if not todo:
        return AggregateResult(len(frame), 0, waiting)
    version = current_model_version(project)
    with store.read() as session:
        priors = {
            p.item_id: p.calibrated or p.probs
            for p in session.scalars(
                select(Prediction).where(
                    Prediction.item_id.in_(todo), Prediction.model_version == (version or "")
                )
            )
        }
    subset = frame[frame["task"].isin(todo)]
    vote = MajorityVote(labels=labels).fit(subset, tie_break=priors)
    with ledger_run(store, "aggregate", {"method": "majority_vote"}) as run, store.write() as session:
        session.execute(delete(FinalLabel).where(FinalLabel.item_id.in_(todo)))
        for item, label in vote.labels_.items():
            rows = subset[subset["task"] == item]
            votes = rows["label"].value_counts().to_dict()
            session.add(
                FinalLabel(
                    item_id=item,
                    label=label,
                    source="humans",
                    confidence=float(vote.probas_.loc[item, label]),
                    votes={str(k): int(v) for k, v in votes.items()},
                    n_votes=len(rows),
                    annotators=sorted(rows["worker"].astype(str)),
                    model_probability=(priors.get(item) or {}).get(label),
                    model_version=None,
                    policy_version=routes[item].policy_version,
                    updated_at=utcnow(),
                )
            )
        run.record(session, {"answers": len(subset), "items": len(todo)}, 0.0)
    return AggregateResult(len(frame), len(todo), waiting)
