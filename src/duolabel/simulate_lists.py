"""``duolabel simulate`` for list-valued projects (multi-label, spans): replay routing on items
whose gold list is known.

The golden items' cross-fitted whole-list chances (what the calibrate stage stores and routing
reads) choose, for each target, the threshold target mode certifies; the other items with a gold
list and recorded answers are replayed: an item at or above the threshold keeps the model's list,
the others get people's answer, their recorded answers aggregated by the task type's vote
(:class:`ListKind`: per label for multi-label, ties no; per token for spans, see
:mod:`duolabel.simulate_spans`). Each row gives the share of items whose whole list equals gold,
the micro-F1 and the human share on the replayed items.

With ``expert_share`` (``routing.expert_share``, spans) the least sure of the routed items go to
an expert, as the route stage sends them: such an item gets its recorded expert answer where
the store has one; without one, its figures are an expectation: with probability
``expert_accuracy`` the expert gives the gold list, otherwise the item keeps people's vote.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sqlalchemy import select

from duolabel.core.multilabel import BinaryRelevance, answer_sets
from duolabel.core.operating import choose_operating_point
from duolabel.core.policies import Decision, expert_tier
from duolabel.core.wholelist import LIST_CHANCE, list_scores
from duolabel.errors import ProjectError
from duolabel.store import Item, Prediction

if TYPE_CHECKING:
    from duolabel.project import Project
    from duolabel.simulate import RecordedAnswers

__all__ = ["ListKind", "ListSimulationRow", "replay_lists", "simulate_lists"]


@dataclass
class ListSimulationRow:
    """One row of the list simulation table (multi-label: subset accuracy and micro-F1; spans:
    whole-item accuracy and exact-match span F1, micro)."""

    policy: str
    point: str
    subset_accuracy: float
    micro_f1: float
    human_share: float
    expert_answers: int = 0  # escalated items
    expert_recorded: int = 0  # of them, scored by a recorded expert answer


@dataclass(frozen=True)
class ListKind:
    """What a list-valued task type plugs into :func:`replay_lists`: ``vote`` turns recorded
    answers (``task, worker, label``) into one list per item, given the items' texts, ``vote_name``
    says how in words, and ``score`` gives (share of lists equal to gold, micro-F1)."""

    vote_name: str
    vote: Callable[[pd.DataFrame, Mapping[str, str]], Mapping[str, str]]
    score: Callable[[list[str], list[str]], tuple[float, float]]


def _multi_label(labels: list[str]) -> ListKind:
    def vote(frame: pd.DataFrame, texts: Mapping[str, str]) -> Mapping[str, str]:
        return dict(BinaryRelevance("majority_vote", labels=labels).fit(frame).labels_.items())

    def score(final: list[str], gold: list[str]) -> tuple[float, float]:
        scores = list_scores(answer_sets(final), answer_sets(gold), labels)
        return scores.subset_accuracy, scores.micro_f1

    return ListKind("majority vote per label", vote, score)


def _people(recorded: RecordedAnswers, rows: Sequence[Any], kind: ListKind) -> dict[str, str]:
    frame = pd.DataFrame(
        [(r.id, w, label) for r in rows for w, label in recorded.crowd.get(r.id, [])],
        columns=["task", "worker", "label"],
    )
    if frame.empty:
        return {}
    return dict(kind.vote(frame, {r.id: r.text for r in rows}))


def _row(
    kind: ListKind, policy: str, point: str, final: list[str], gold: list[str], share: float
) -> ListSimulationRow:
    return ListSimulationRow(policy, point, *kind.score(final, gold), share)


def simulate_lists(
    project: Project, recorded: RecordedAnswers, version: str, *, expert_accuracy: float | None = None
) -> list[ListSimulationRow]:
    """The simulation table of a multi-label project from people's ``recorded`` answers;
    escalated items without a recorded expert answer use ``expert_accuracy`` (None: the
    project's ``routing.expert_accuracy``).

    Examples
    --------
    >>> ListSimulationRow("model alone", "–", 0.5, 0.6, 0.0).human_share
    0.0
    """
    return replay_with_experts(
        project, recorded, version, _multi_label(project.config.task.label_names), expert_accuracy
    )


def replay_with_experts(
    project: Project, recorded: RecordedAnswers, version: str, kind: ListKind, expert_accuracy: float | None
) -> list[ListSimulationRow]:
    """:func:`replay_lists` with the project's expert tier (``routing.expert_share``) and
    ``expert_accuracy`` (None: ``routing.expert_accuracy``)."""
    cfg = project.config.routing
    return replay_lists(
        project,
        recorded,
        version,
        kind,
        expert_share=cfg.expert_share,
        expert_accuracy=cfg.expert_accuracy if expert_accuracy is None else expert_accuracy,
    )


def replay_lists(
    project: Project,
    recorded: RecordedAnswers,
    version: str,
    kind: ListKind,
    *,
    expert_share: float = 0.0,
    expert_accuracy: float = 1.0,
) -> list[ListSimulationRow]:
    """The simulation table of a list-valued project (see the module docstring): model alone,
    people alone and the hybrid at each target, on the items with a gold list and ``recorded``
    answers, for model ``version``. ``kind`` votes people's answers and scores lists;
    ``expert_share`` of the routed items (the least sure) go to experts, scored by a recorded
    expert answer or, without one, as the expectation with ``expert_accuracy``.

    Examples
    --------
    >>> replay_lists  # doctest: +ELLIPSIS
    <function replay_lists at ...>
    """
    cfg = project.config.routing
    if not recorded.crowd:
        raise ProjectError(
            "no recorded answers in the store to replay: import people's answers with "
            "'duolabel import-answers FILE -p PROJECT' (item, worker, label) or collect them in the "
            "web app, then run 'duolabel simulate PROJECT --from-store'"
        )
    with project.store.read() as session:
        rows = session.execute(
            select(
                Item.id,
                Item.role,
                Item.text,
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

    people = _people(recorded, golden + test, kind)
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
        _row(kind, "model alone", "–", model, gold, 0.0),
        _row(kind, f"people alone ({kind.vote_name})", "–", human, gold, 1.0),
    ]
    for target in sorted({cfg.target_accuracy, 0.95}):
        point = choose_operating_point(
            "target", g_chance, g_right, g_people, routed_cost=1.0, target=target, risk=cfg.risk
        )
        accept = t_chance >= point.threshold
        decisions = [Decision("accept") if ok else Decision("humans") for ok in accept]
        escalated = [d.kind == "expert" for d in expert_tier(decisions, t_chance, share=expert_share)]
        final = [m if ok else h for m, h, ok in zip(model, human, accept, strict=True)]
        recorded_expert = [up and r.id in recorded.expert for r, up in zip(test, escalated, strict=True)]
        final = [
            recorded.expert[r.id] if rec else f
            for r, f, rec in zip(test, final, recorded_expert, strict=True)
        ]
        where = "nothing accepted" if not accept.any() else f"whole-list chance >= {point.threshold:.3f}"
        policy, share = f"hybrid, target {target:g}", 1.0 - float(accept.mean())
        row = _expected_row(
            kind, policy, where, final, gold, share, escalated, recorded_expert, expert_accuracy
        )
        out.append(row)
    return out


def _expected_row(
    kind: ListKind,
    policy: str,
    point: str,
    final: list[str],
    gold: list[str],
    share: float,
    escalated: list[bool],
    recorded: list[bool],
    accuracy: float,
) -> ListSimulationRow:
    """A hybrid row whose escalated items without a recorded expert answer are scored as an
    expectation: the figures with every such item given its gold list, weighted by
    ``accuracy``, plus those with every such item keeping ``final`` (people's vote), weighted
    by the rest (linear in ``accuracy``; whole-list accuracy is exactly its expectation)."""
    assumed = [up and not rec for up, rec in zip(escalated, recorded, strict=True)]
    right = _row(
        kind,
        policy,
        point,
        [g if a else f for f, g, a in zip(final, gold, assumed, strict=True)],
        gold,
        share,
    )
    if any(assumed):
        kept = _row(kind, policy, point, final, gold, share)
        right.subset_accuracy = accuracy * right.subset_accuracy + (1 - accuracy) * kept.subset_accuracy
        right.micro_f1 = accuracy * right.micro_f1 + (1 - accuracy) * kept.micro_f1
    right.expert_answers, right.expert_recorded = sum(escalated), sum(recorded)
    return right
