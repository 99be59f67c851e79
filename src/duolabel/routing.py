"""Routing policies: accept the model's label or send the item to people.

A policy's ``decide`` takes calibrated probabilities and returns one decision per item.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
from sqlalchemy import delete, or_, select

from duolabel.costs import ledger_run
from duolabel.errors import ProjectError
from duolabel.progress import Reporter, quiet
from duolabel.store import FinalLabel, Item, Prediction, Route
from duolabel.store.tables import utcnow

if TYPE_CHECKING:
    from duolabel.project import Project

__all__ = ["Decision", "Policy", "RouteResult", "ThresholdPolicy", "route_project"]

CHUNK = 2000


@dataclass(frozen=True)
class Decision:
    kind: Literal["accept", "humans", "expert"]
    overlap: int = 0


class Policy(Protocol):
    def decide(self, probs: np.ndarray) -> list[Decision]: ...


class ThresholdPolicy:
    """Accept when the calibrated top-label confidence is at least ``threshold``;
    otherwise ask ``overlap`` people.

    Examples
    --------
    >>> import numpy as np
    >>> ThresholdPolicy(threshold=0.8, overlap=3).decide(np.array([[0.9, 0.1], [0.6, 0.4]]))
    [Decision(kind='accept', overlap=0), Decision(kind='humans', overlap=3)]
    """

    def __init__(self, *, threshold: float = 0.9, overlap: int = 3) -> None:
        self.threshold = threshold
        self.overlap = overlap

    def decide(self, probs: np.ndarray) -> list[Decision]:
        confidence = probs.max(axis=1) if len(probs) else np.zeros(0)
        return [
            Decision("accept") if c >= self.threshold else Decision("humans", self.overlap)
            for c in confidence
        ]

    def version(self, model_version: str) -> str:
        """Identifies the decisions this policy makes on one model version."""
        key = f"threshold|{self.threshold}|{self.overlap}|{model_version}"
        return hashlib.sha256(key.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------
# The routing stage


@dataclass
class RouteResult:
    policy_version: str
    decided: Counter[str] = field(default_factory=Counter)
    unchanged: int = 0


def route_project(project: Project, *, progress: Reporter = quiet) -> RouteResult:
    """Decide every calibrated item not yet decided under the current policy version.

    Accepted items get the model's label as their final label; the others join the human
    queue with the policy's overlap. Golden items keep their expert label. Items people
    have already labelled are never re-routed.
    """
    from duolabel.labelers import current_model_version

    version = current_model_version(project)
    if version is None:
        raise ProjectError("nothing to route yet: run 'duolabel label' first")
    cfg = project.config.routing
    policy = ThresholdPolicy(threshold=cfg.threshold, overlap=cfg.overlap)
    policy_version = policy.version(version)
    labels = project.config.task.label_names
    store = project.store
    result = RouteResult(policy_version)
    with store.read() as session:
        people_done = set(
            session.scalars(select(FinalLabel.item_id).where(FinalLabel.source.in_(["humans", "expert"])))
        )
        decided = set(session.scalars(select(Route.item_id).where(Route.policy_version == policy_version)))
        todo = [
            pid
            for pid, item_id in session.execute(
                select(Prediction.id, Prediction.item_id)
                .join(Item, Item.id == Prediction.item_id)
                .where(
                    Prediction.model_version == version,
                    or_(Prediction.confidence.is_not(None), Prediction.abstained.is_(True)),
                    Item.role != "golden",
                )
                .order_by(Item.seq)
            )
            if item_id not in people_done and item_id not in decided
        ]
        golden = session.execute(
            select(Item.id, Item.gold_label)
            .where(Item.role == "golden", Item.gold_label.is_not(None))
            .where(Item.id.not_in(select(FinalLabel.item_id)))
        ).all()
    result.unchanged = len(decided)
    run_config = {"policy": cfg.model_dump(), "model_version": version, "policy_version": policy_version}
    with ledger_run(store, "route", run_config) as run, progress("Routing items", len(todo)) as advance:
        with store.write() as session:
            for item_id, gold in golden:
                session.add(
                    FinalLabel(
                        item_id=item_id,
                        label=gold,
                        source="expert",
                        confidence=1.0,
                        votes={},
                        n_votes=0,
                        annotators=[],
                        updated_at=utcnow(),
                    )
                )
        for start in range(0, len(todo), CHUNK):
            with store.write() as session:
                preds = list(
                    session.scalars(select(Prediction).where(Prediction.id.in_(todo[start : start + CHUNK])))
                )
                usable = [p for p in preds if not p.abstained]
                probs = np.array([[p.calibrated[label] for label in labels] for p in usable])
                decided = iter(policy.decide(probs.reshape(len(usable), len(labels))))
                # An abstention is never accepted: people label the item.
                decisions = [
                    Decision("humans", policy.overlap) if p.abstained else next(decided) for p in preds
                ]
                ids = [p.item_id for p in preds]
                session.execute(delete(Route).where(Route.item_id.in_(ids)))
                session.execute(delete(FinalLabel).where(FinalLabel.item_id.in_(ids)))
                for pred, decision in zip(preds, decisions, strict=True):
                    session.add(
                        Route(
                            item_id=pred.item_id,
                            decision=decision.kind,
                            overlap=decision.overlap,
                            confidence=pred.confidence,
                            policy_version=policy_version,
                            run_id=run.id,
                        )
                    )
                    if decision.kind == "accept":
                        session.add(
                            FinalLabel(
                                item_id=pred.item_id,
                                label=pred.label,
                                source="model",
                                confidence=pred.confidence,
                                votes={},
                                n_votes=0,
                                annotators=[],
                                model_probability=pred.confidence,
                                model_version=version,
                                policy_version=policy_version,
                                updated_at=utcnow(),
                            )
                        )
                    result.decided[decision.kind] += 1
            advance(len(preds))
        with store.write() as session:
            run.record(session, {"items": sum(result.decided.values()), **result.decided}, 0.0)
    return result
