"""``duolabel simulate`` for multi-label projects: replay routing on items whose gold list is known.

The golden items' cross-fitted whole-list chances (what the calibrate stage stores and routing
reads) choose, for each target, the threshold target mode certifies; the other items with a gold
list and recorded answers are replayed: an item at or above the threshold keeps the model's list,
the others get people's answer, their recorded answers aggregated per label by majority vote
(ties: no). Each row gives the subset accuracy (the whole list equals gold), the micro-F1 and the
human share on the replayed items.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sqlalchemy import select

from duolabel.core.multilabel import BinaryRelevance, answer_sets
from duolabel.core.operating import choose_operating_point
from duolabel.core.wholelist import LIST_CHANCE, list_scores
from duolabel.errors import ProjectError
from duolabel.store import Item, Prediction

if TYPE_CHECKING:
    from duolabel.project import Project
    from duolabel.simulate import RecordedAnswers

__all__ = ["ListSimulationRow", "simulate_lists"]


@dataclass
class ListSimulationRow:
    """One row of the multi-label simulation table."""

    policy: str
    point: str
    subset_accuracy: float
    micro_f1: float
    human_share: float


def _people(recorded: RecordedAnswers, ids: list[str], labels: list[str]) -> dict[str, str]:
    frame = pd.DataFrame(
        [(i, w, label) for i in ids for w, label in recorded.crowd.get(i, [])],
        columns=["task", "worker", "label"],
    )
    if frame.empty:
        return {}
    return dict(BinaryRelevance("majority_vote", labels=labels).fit(frame).labels_.items())


def _row(
    policy: str, point: str, final: list[str], gold: list[str], labels: list[str], share: float
) -> ListSimulationRow:
    scores = list_scores(answer_sets(final), answer_sets(gold), labels)
    return ListSimulationRow(policy, point, scores.subset_accuracy, scores.micro_f1, share)


def simulate_lists(project: Project, recorded: RecordedAnswers, version: str) -> list[ListSimulationRow]:
    """The simulation table of a multi-label project from people's ``recorded`` answers.

    Examples
    --------
    >>> ListSimulationRow("model alone", "–", 0.5, 0.6, 0.0).human_share
    0.0
    """
    labels = project.config.task.label_names
    cfg = project.config.routing
    with project.store.read() as session:
        rows = session.execute(
            select(
                Item.id,
                Item.role,
                Item.gold_label,
                Prediction.label,
                Prediction.confidence,
                Prediction.features,
            )
            .join(Prediction, Prediction.item_id == Item.id)
            .where(Prediction.model_version == version, Prediction.calibrated.is_not(None))
            .where(Item.gold_label.is_not(None), Prediction.abstained.is_(False))
            .order_by(Item.seq)
        ).all()
    golden = [r for r in rows if r.role == "golden"]
    test = [r for r in rows if r.role != "golden" and recorded.crowd.get(r.id)]
    if not golden or not test:
        raise ProjectError(
            "simulation needs calibrated golden items and non-golden items with both a gold list "
            f"and recorded answers (found {len(golden)} golden, {len(test)} to replay)"
        )

    def chance(r: object) -> float:
        features = getattr(r, "features", None) or {}
        return float(features.get(LIST_CHANCE, getattr(r, "confidence", 0.0) or 0.0))

    people = _people(recorded, [r.id for r in golden + test], labels)
    g_chance = np.array([chance(r) for r in golden])
    g_right = np.array([r.label == r.gold_label for r in golden], dtype=float)
    # People's chance of being right on a golden item: measured where they answered it.
    g_people = np.array(
        [float(people[r.id] == r.gold_label) if r.id in people else cfg.human_accuracy for r in golden]
    )
    t_chance = np.array([chance(r) for r in test])
    model, human = [r.label for r in test], [people[r.id] for r in test]
    gold = [r.gold_label for r in test]
    out = [
        _row("model alone", "–", model, gold, labels, 0.0),
        _row("people alone (majority vote per label)", "–", human, gold, labels, 1.0),
    ]
    for target in sorted({cfg.target_accuracy, 0.95}):
        point = choose_operating_point(
            "target", g_chance, g_right, g_people, routed_cost=1.0, target=target, risk=cfg.risk
        )
        accept = t_chance >= point.threshold
        final = [m if ok else h for m, h, ok in zip(model, human, accept, strict=True)]
        where = "nothing accepted" if not accept.any() else f"whole-list chance >= {point.threshold:.3f}"
        out.append(_row(f"hybrid, target {target:g}", where, final, gold, labels, 1.0 - float(accept.mean())))
    return out
