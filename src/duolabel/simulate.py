"""Simulation before spending: replay routing policies on items whose gold labels and past
human answers are known, so the cost and quality of each policy are seen before anyone is
paid.

People are answered from the recorded answers: each item's answers are put in one seeded
random order and a policy asking for k answers gets the first k (drawn without
replacement). An item that runs out of recorded answers is counted and reported.

Experts are not taken to be always right. An answer marked ``role: expert`` in the answers
file (a ``role`` column or key; empty or ``crowd`` for people) is what an expert said on that
item, and an escalated item with one is scored by it. An escalated item without one counts as
right with probability ``expert_accuracy`` (an expectation; the project's
``routing.expert_accuracy``, or ``simulate --expert-accuracy``), and the table says so.

Everything else is the routing code itself: the policy comes from the same registry
(:func:`~duolabel.core.policies.make_policy`), its operating point from the same choice
(:func:`~duolabel.core.operating.choose_operating_point`), its decisions from
:func:`~duolabel.core.policies.route_items`, and the dynamic policy's follow-up from its own
``follow_up``: only the source of human answers differs.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np

from duolabel.config import CostsConfig, RoutingConfig
from duolabel.core.evidence import (
    Answers,
    log_length,
    majority_correctness,
    majority_label,
    worker_accuracies,
)
from duolabel.core.operating import choose_operating_point, majority_accuracy, quality_curve
from duolabel.core.policies import Decision, FollowUpPolicy, fuse, make_policy, route_items
from duolabel.core.probs import as_matrix
from duolabel.core.randomized import project_draw
from duolabel.errors import DataError, Problem
from duolabel.ledger import answer_price

if TYPE_CHECKING:
    from duolabel.project import Project

__all__ = [
    "DEFAULT_EXPERT_ACCURACY",
    "Answers",
    "RecordedAnswers",
    "SimulationInput",
    "SimulationResult",
    "SimulationRow",
    "HYBRID",
    "read_answers",
    "read_gold",
    "simulate",
    "simulate_project",
    "stored_answers",
]

MAX_PROBLEMS = 20

#: How often an expert is taken to be right on an escalated item with no recorded expert
#: answer, unless told otherwise (the default of ``routing.expert_accuracy``).
DEFAULT_EXPERT_ACCURACY: float = RoutingConfig().expert_accuracy


@dataclass
class SimulationInput:
    """Golden items (to choose operating points on) and test items (to replay on)."""

    labels: list[str]
    golden_probs: np.ndarray
    golden_gold: np.ndarray
    golden_answers: Answers
    test_probs: np.ndarray
    test_gold: np.ndarray
    test_answers: Answers
    golden_features: dict[str, np.ndarray] = field(default_factory=dict)
    test_features: dict[str, np.ndarray] = field(default_factory=dict)
    test_experts: Sequence[int | None] = ()  # a recorded expert label per test item, or None


@dataclass(frozen=True)
class SimulationRow:
    """One policy at one operating point, replayed on the test items."""

    policy: str
    point: str
    threshold: float
    human_accuracy: float  # people alone at the same overlap
    model_accuracy: float  # the model alone
    hybrid_accuracy: float
    human_share: float
    human_answers: int
    expert_answers: int
    cost: float
    humans_only_cost: float
    ran_out: int  # items that needed more answers than were recorded
    guarantee: str = ""
    expert_recorded: int = 0  # escalated items scored by a recorded expert answer

    @property
    def cost_reduction(self) -> float:
        return 1.0 - self.cost / self.humans_only_cost if self.humans_only_cost else 0.0


@dataclass
class SimulationResult:
    rows: list[SimulationRow]
    curve: list[dict[str, float]]  # the threshold policy's realised curve on the test items
    crowd_accuracy: float  # majority vote over every recorded answer
    expert_accuracy: float = DEFAULT_EXPERT_ACCURACY  # assumed where no expert answer is recorded
    recorded_experts: int = 0  # test items with a recorded expert answer

    @property
    def expert_assumption(self) -> str:
        """How escalated items were scored, in words (printed with the table)."""
        return (
            "escalated items are scored by the recorded expert answer where the answers file has one "
            f"({self.recorded_experts:,} items), else counted right with probability "
            f"{self.expert_accuracy:.3g} (routing.expert_accuracy, or --expert-accuracy)"
        )


def _shuffled(answers: Answers, seed: int) -> Answers:
    rng = np.random.default_rng(seed)
    out = []
    for given in answers:
        order = rng.permutation(len(given))
        out.append([given[i] for i in order])
    return out


def simulate(
    data: SimulationInput,
    *,
    costs: CostsConfig,
    overlap: int = 3,
    max_overlap: int = 5,
    posterior_target: float = 0.95,
    targets: Sequence[float] = (0.9, 0.95),
    risk: float = 0.1,
    budget_per_item: float | None = None,
    policies: Sequence[str] = ("threshold", "dynamic", "meta"),
    aggregate: str = "fused",
    escalate: bool = True,
    expert_accuracy: float = DEFAULT_EXPERT_ACCURACY,
    seed: int = 0,
    certification: str = "fallback",
    sample_share: float | None = None,
) -> SimulationResult:
    """Replay each policy at each operating point (target mode for every ``targets``, cost
    mode, the best expected quality, and budget mode when ``budget_per_item`` is given).

    People's answers on a routed item become its label by ``aggregate``: ``fused`` (the
    model's calibrated distribution as the prior, each answer weighted by its worker's
    accuracy on the golden items, see :func:`duolabel.core.policies.fuse`) or ``majority`` (ties go
    to the model's choice). With ``escalate``, the dynamic policy sends items still unsure
    after ``max_overlap`` answers to an expert: the item gets the expert's recorded answer
    (``data.test_experts``) where there is one, else it counts as right with probability
    ``expert_accuracy`` (its expected contribution, so no draw is added). ``certification`` is
    target mode's family-wise procedure (``routing.certification``). With ``sample_share``, each
    target also gets a ``(dataset, sample)`` row: the dataset-level guarantee certified without
    golden items from a random sample of that share of the test items, labelled by the recorded
    answers (:func:`_sample_certificate_row`).
    """
    price = answer_price(costs)
    golden_answers = _shuffled(data.golden_answers, seed)
    test_answers = _shuffled(data.test_answers, seed + 1)
    gold, test_gold = data.golden_gold, data.test_gold
    skills, pooled = worker_accuracies(golden_answers, gold)
    model_correct = data.golden_probs.argmax(axis=1) == gold
    test_model = data.test_probs.argmax(axis=1)
    model_accuracy = float((test_model == test_gold).mean())
    humans_alone = np.array(
        [majority_label(given[:overlap], p) for given, p in zip(test_answers, data.test_probs, strict=True)]
    )
    human_accuracy = float((humans_alone == test_gold).mean())
    humans_only_answers = sum(min(len(given), overlap) for given in test_answers)
    crowd = np.array(
        [majority_label(given, p) for given, p in zip(test_answers, data.test_probs, strict=True)]
    )
    expert_labels = list(data.test_experts) or [None] * len(test_gold)
    settings = {
        "overlap": overlap,
        "max_overlap": max_overlap,
        "posterior_target": posterior_target,
        "escalate": escalate,
    }
    modes: list[tuple[str, str, float]] = [(f"target {target:g}", "target", target) for target in targets]
    modes += [("cost", "cost", 0.0), ("best quality", "best", 0.0)]
    if budget_per_item is not None:
        modes.append(("budget", "budget", 0.0))
    rows: list[SimulationRow] = []
    for name in policies:
        policy = make_policy(name, settings)
        golden_scores = policy.cross_fit_scores(data.golden_probs, data.golden_features, ~model_correct)
        policy.fit(data.golden_probs, data.golden_features, ~model_correct)
        k = policy.max_answers
        human_correct = majority_correctness(golden_answers, data.golden_probs, gold, k)
        curve = quality_curve(golden_scores, model_correct, human_correct, n_boot=0)
        for point_name, mode, target in modes:
            point = choose_operating_point(
                mode,
                golden_scores,
                model_correct,
                human_correct,
                routed_cost=k * price,
                target=target,
                risk=risk,
                budget_per_item=budget_per_item,
                curve=curve,
                certification=certification,
                draw=project_draw("simulate", str(seed)),  # planned-start-randomized's uniform
            )
            policy.threshold = point.threshold
            decisions = route_items(policy, data.test_probs, data.test_features)
            accept = np.array([d.kind == "accept" for d in decisions], dtype=bool)
            final = test_model.copy()
            assumed: list[int] = []  # escalated items without a recorded expert answer
            answers_used = experts = ran_out = 0
            for i in np.flatnonzero(~accept):
                given = test_answers[i]
                if isinstance(policy, FollowUpPolicy):
                    label, used, escalated, short = _follow_up(
                        policy, decisions[i], data.test_probs[i], given, skills, pooled
                    )
                    final[i] = label
                    if escalated:
                        expert = expert_labels[i]
                        if expert is None:
                            assumed.append(int(i))
                        else:
                            final[i] = expert
                    experts += int(escalated)
                else:
                    asked = decisions[i].overlap
                    used, short = min(len(given), asked), len(given) < asked
                    if not given:
                        final[i] = test_model[i]
                    elif aggregate == "fused":
                        taken = given[:asked]
                        accuracies = [skills.get(w, pooled) for w, _ in taken]
                        final[i] = int(
                            fuse(data.test_probs[i], [lab for _, lab in taken], accuracies).argmax()
                        )
                    else:
                        final[i] = majority_label(given[:asked], data.test_probs[i])
                answers_used += used
                ran_out += int(short)
            cost = answers_used * price + experts * costs.expert_answer
            right = (final == test_gold).astype(float)
            right[assumed] = expert_accuracy
            rows.append(
                SimulationRow(
                    name,
                    point_name,
                    float(point.threshold),
                    human_accuracy,
                    model_accuracy,
                    float(right.mean()),
                    float((~accept).mean()),
                    answers_used,
                    experts,
                    cost,
                    humans_only_answers * price,
                    ran_out,
                    point.describe() if point.certificate or point.cost_certificate else "",
                    experts - len(assumed),
                )
            )
    if sample_share is not None:
        people_error = 1.0 - majority_accuracy(pooled, overlap, len(data.labels))
        for target in targets:
            rows.append(
                _sample_certificate_row(
                    data, test_answers, target=target, risk=risk, share=sample_share, overlap=overlap,
                    people_error=people_error, price=price, seed=seed, human_accuracy=human_accuracy,
                )
            )  # fmt: skip
    return SimulationResult(
        rows,
        _realised_curve(data, test_answers, overlap),
        float((crowd == test_gold).mean()),
        expert_accuracy,
        sum(label is not None for label in expert_labels),
    )


def _sample_certificate_row(
    data: SimulationInput,
    test_answers: Answers,
    *,
    target: float,
    risk: float,
    share: float,
    overlap: int,
    people_error: float,
    price: float,
    seed: int,
    human_accuracy: float,
) -> SimulationRow:
    """The sampling variant of the dataset-level guarantee (:mod:`duolabel.core.pac`) replayed:
    a uniform sample of ``share`` of the test items is labelled by people (the majority of
    their first ``overlap`` recorded answers), the certificate judges the model against those
    labels, with people's expected error from their accuracy on the golden items, and the
    items below its threshold go to people too. The human share and the cost count the
    sample."""
    from duolabel.core.operating import GRID
    from duolabel.core.pac import certify_sample, draw_sample, sampling_probabilities

    scores = data.test_probs.max(axis=1)
    model = data.test_probs.argmax(axis=1)
    q = sampling_probabilities(scores)
    draws = draw_sample(q, max(1, round(share * len(scores))), np.random.default_rng(seed))
    people = np.array(
        [majority_label(given[:overlap], p) for given, p in zip(test_answers, data.test_probs, strict=True)]
    )
    cert = certify_sample(
        scores, draws, model[draws] != people[draws], probabilities=q, target=target, risk=risk,
        thresholds=GRID, people_error=people_error,
    )  # fmt: skip
    human = scores < cert.threshold
    human[draws] = True
    final = np.where(human, people, model)
    answers = sum(min(len(test_answers[i]), overlap) for i in np.flatnonzero(human))
    ran_out = sum(len(test_answers[i]) < overlap for i in np.flatnonzero(human))
    return SimulationRow(
        "threshold",
        f"target {target:g} (dataset, sample)",
        float(cert.threshold),
        human_accuracy,
        float((model == data.test_gold).mean()),
        float((final == data.test_gold).mean()),
        float(human.mean()),
        answers,
        0,
        answers * price,
        sum(min(len(given), overlap) for given in test_answers) * price,
        ran_out,
        cert.describe(),
    )


def _follow_up(
    policy: FollowUpPolicy,
    first: Decision,
    prior: np.ndarray,
    given: Sequence[tuple[str, int]],
    skills: Mapping[str, float],
    pooled: float,
) -> tuple[int, int, bool, bool]:
    """The route stage's follow-up loop with recorded answers in place of live people:
    (label, answers used, escalated to an expert, ran out of recorded answers)."""
    decision = first
    used: Sequence[tuple[str, int]] = []
    while decision.kind == "humans" and len(used) < len(given):
        used = given[: decision.overlap]
        decision = policy.follow_up(prior, [lab for _, lab in used], [skills.get(w, pooled) for w, _ in used])
    posterior = fuse(prior, [lab for _, lab in used], [skills.get(w, pooled) for w, _ in used])
    # Still asking for answers when the recorded ones ran out: the policy was not yet sure.
    return int(posterior.argmax()), len(used), decision.kind == "expert", decision.kind == "humans"


def _realised_curve(data: SimulationInput, answers: Answers, overlap: int) -> list[dict[str, float]]:
    """Hybrid accuracy against human share on the test items, threshold policy."""
    scores = data.test_probs.max(axis=1)
    model_right = (data.test_probs.argmax(axis=1) == data.test_gold).astype(float)
    human_right = majority_correctness(answers, data.test_probs, data.test_gold, overlap)
    thresholds = np.unique(np.quantile(scores, np.linspace(0, 1, 51)))
    curve = quality_curve(
        scores, model_right, human_right, thresholds=np.append(thresholds, np.inf), n_boot=0
    )
    return [
        {"threshold": p.threshold, "human_share": p.human_share, "hybrid_accuracy": p.hybrid_accuracy}
        for p in curve
    ]


# ---------------------------------------------------------------------------
# Reading recorded answers and simulating a project's own items

_ITEM_COLUMNS = ("item_id", "item", "task")
_WORKER_COLUMNS = ("annotator", "worker")
_ROLES = {"": "crowd", "crowd": "crowd", "expert": "expert"}


@dataclass
class RecordedAnswers:
    """People's answers per item (``worker, label``) and the first expert answer per item."""

    crowd: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))
    expert: dict[str, str] = field(default_factory=dict)


def read_answers(path: Path, labels: Sequence[str], items: set[str]) -> RecordedAnswers:
    """Recorded answers from ``annotations.jsonl`` (``item_id, annotator, label``) or a CSV
    with ``item, worker, label`` columns, for the project's ``items`` (answers for other
    items are left out); every bad row is reported at once. An optional ``role`` column or
    key marks an expert's answer (``expert``; empty or ``crowd`` for people)."""
    if not path.exists():
        raise DataError([Problem(str(path), None, None, "no such file")], outcome="Nothing was simulated.")
    rows: list[tuple[int, dict[str, object]]] = []
    problems: list[Problem] = []
    with path.open(encoding="utf-8", newline="") as handle:
        if path.suffix.lower() in (".jsonl", ".json"):
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    problems.append(Problem(str(path), number, None, f"not valid JSON ({exc.msg})"))
                    continue
                rows.append((number, record if isinstance(record, dict) else {}))
        else:
            rows = [(number, dict(r)) for number, r in enumerate(csv.DictReader(handle), start=2)]
    answers = RecordedAnswers()
    label_set = set(labels)
    for number, record in rows:
        item = next((record[c] for c in _ITEM_COLUMNS if c in record), None)
        worker = next((record[c] for c in _WORKER_COLUMNS if c in record), None)
        label = record.get("label")
        role = _ROLES.get(str(record.get("role") or "").strip().lower())
        missing = [
            name
            for name, value in (("item", item), ("worker", worker), ("label", label))
            if value in (None, "")
        ]
        if missing:
            problems.append(Problem(str(path), number, missing[0], f"missing {', '.join(missing)}"))
        elif str(label) not in label_set:
            expected = ", ".join(repr(x) for x in labels)
            problems.append(Problem(str(path), number, "label", f"got {label!r}, expected one of {expected}"))
        elif role is None:
            got = record.get("role")
            problems.append(
                Problem(str(path), number, "role", f"got {got!r}, expected 'crowd', 'expert' or empty")
            )
        elif str(item) not in items:  # answers for items outside the project are left out
            continue
        elif role == "expert":
            answers.expert.setdefault(str(item), str(label))
        else:
            answers.crowd[str(item)].append((str(worker), str(label)))
    if problems:
        raise DataError(
            problems[:MAX_PROBLEMS],
            more=max(len(problems) - MAX_PROBLEMS, 0),
            outcome="Nothing was simulated.",
        )
    return answers


def stored_answers(project: Project) -> RecordedAnswers:
    """The answers people gave in the project (in the web app or imported with
    ``duolabel import-answers``) as recorded answers: people's answers (to regular items, and
    to golden and control items, which tell how often each worker is right) as the crowd's,
    expert answers as the experts'. Exam answers are left out: exam items are not the
    project's work."""
    from sqlalchemy import select

    from duolabel.store import Annotation, Annotator

    answers = RecordedAnswers()
    with project.store.read() as session:
        rows = session.execute(
            select(Annotation.item_id, Annotator.name, Annotation.label, Annotation.kind)
            .join(Annotator, Annotator.id == Annotation.annotator_id)
            .where(Annotation.kind.in_(["regular", "control", "expert"]))
            .order_by(Annotation.id)
        )
        for item, worker, label, kind in rows:
            if kind == "expert":
                answers.expert.setdefault(item, label)
            else:
                answers.crowd[item].append((worker, label))
    return answers


#: What the "hybrid" of a simulation is, as the table's caption says it.
HYBRID = (
    "hybrid: the model's label where the policy accepts it; on a routed item, people's answers "
    "fused with the model's calibrated distribution (each weighted by its worker's accuracy on the "
    "golden items); an escalated item gets its expert's answer"
)


def read_gold(project: Project, path: Path, *, column: str = "gold") -> dict[str, str]:
    """Known labels of the project's items from a file (its id column and ``column``), for
    ``simulate --gold``; every bad row is reported at once, naming file, row and column."""
    from sqlalchemy import select

    from duolabel.io import read_records, stating
    from duolabel.store import Item

    labels, id_field = project.config.task.label_names, project.config.task.id_field
    with project.store.read() as session:
        items = set(session.scalars(select(Item.id)))
    with stating("Nothing was simulated."):  # a file it cannot read at all, too
        header, rows = read_records(path)
    problems: list[Problem] = []
    missing = [c for c in (id_field, column) if header is not None and c not in header]
    if missing:
        have = ", ".join(repr(h) for h in header or []) or "no columns"
        raise DataError(
            [Problem(str(path), 1, c, f"missing column; the file has {have}") for c in missing],
            outcome="Nothing was simulated.",
        )
    gold: dict[str, str] = {}
    for row in rows:
        if row.problem is not None:
            problems.append(row.problem)
            continue
        values = row.values or {}
        item, label = values.get(id_field), values.get(column)
        if item is None or str(item) not in items:
            problems.append(
                Problem(str(path), row.number, id_field, f"got {item!r}, not an item of the project")
            )
        elif label is None or label == "":
            continue  # no known label for this item
        elif str(label) not in labels:
            expected = ", ".join(repr(lab) for lab in labels)
            problems.append(
                Problem(str(path), row.number, column, f"got {label!r}, expected one of {expected}")
            )
        else:
            gold[str(item)] = str(label)
        if len(problems) >= MAX_PROBLEMS:
            break
    if problems:
        raise DataError(problems, outcome="Nothing was simulated.")
    return gold


def simulate_project(
    project: Project,
    answers_path: Path | None,
    *,
    seed: int = 0,
    expert_accuracy: float | None = None,
    gold: Mapping[str, str] | None = None,
    sample_share: float | None = None,
) -> SimulationResult:
    """Simulate on the project's own items: golden items choose the operating points; the
    other items with a known label (from their ``gold_column``, or ``gold``: item id to label,
    see :func:`read_gold`) are replayed. Escalated items without a recorded expert answer
    count as right with probability ``expert_accuracy`` (None: the project's
    ``routing.expert_accuracy``). With no ``answers_path`` the answers come from the store
    (:func:`stored_answers`). ``sample_share``: see :func:`simulate`."""
    from sqlalchemy import select

    from duolabel.core.tasks import task_type
    from duolabel.errors import ProjectError
    from duolabel.stages.distill import labeling_version
    from duolabel.stages.route import item_neighbourhood_accuracy
    from duolabel.store import Item, Prediction

    if task_type(project.config.task.type).list_valued:
        # The replay reads one label per answer and per item (majority votes, the dynamic fusion).
        raise ProjectError(
            f"simulate_project replays one label per answer, which task.type {project.config.task.type} "
            "does not give: 'duolabel simulate --from-store' replays multi-label and spans projects "
            "(duolabel.simulate_lists.simulate_lists, duolabel.simulate_spans.simulate_spans)"
        )
    version = labeling_version(project)  # the distilled student's once it has won
    if version is None:
        raise ProjectError("nothing to simulate yet: run 'duolabel label' and 'duolabel calibrate' first")
    labels = project.config.task.label_names
    with project.store.read() as session:
        rows = session.execute(
            select(Item.id, Item.role, Item.text, Item.gold_label, Prediction.calibrated)
            .join(Prediction, Prediction.item_id == Item.id)
            .where(Prediction.model_version == version, Prediction.calibrated.is_not(None))
            .order_by(Item.seq)
        ).all()
        all_items = set(session.scalars(select(Item.id)))
    recorded = (
        stored_answers(project) if answers_path is None else read_answers(answers_path, labels, all_items)
    )
    known = dict(gold or {})
    # The golden items keep their own labels: they choose the operating points.
    labelled: list[Any] = [
        SimpleNamespace(**{**r._asdict(), "gold_label": known.get(r.id, r.gold_label)})
        if r.role != "golden"
        else r
        for r in rows
    ]
    rows = [r for r in labelled if r.gold_label is not None]
    golden = [r for r in rows if r.role == "golden"]
    test = [r for r in rows if r.role != "golden" and recorded.crowd.get(r.id)]
    if not golden or not test:
        raise ProjectError(
            "simulation needs calibrated golden items and non-golden items with both a known label "
            f"and recorded answers (found {len(golden)} golden, {len(test)} to replay)"
        )
    index = {label: i for i, label in enumerate(labels)}

    def answers(rs: list) -> Answers:
        return [[(w, index[lab]) for w, lab in recorded.crowd.get(r.id, [])] for r in rs]

    golden_probs = as_matrix([r.calibrated for r in golden], labels)
    golden_gold = np.array([index[r.gold_label] for r in golden])
    golden_ids = [r.id for r in golden]
    correct = (golden_probs.argmax(axis=1) == golden_gold).astype(float)

    def features(rs: list) -> dict[str, np.ndarray]:
        return {
            "log_length": log_length([r.text for r in rs]),
            "neighbourhood_accuracy": item_neighbourhood_accuracy(
                project, golden_ids, correct, [r.id for r in rs]
            ),
        }

    data = SimulationInput(
        labels,
        golden_probs,
        golden_gold,
        answers(golden),
        as_matrix([r.calibrated for r in test], labels),
        np.array([index[r.gold_label] for r in test]),
        answers(test),
        features(golden),
        features(test),
        [index[recorded.expert[r.id]] if r.id in recorded.expert else None for r in test],
    )
    cfg = project.config.routing
    budget = cfg.budget / len(test) if cfg.budget is not None else None
    return simulate(
        data,
        costs=project.config.costs,
        overlap=cfg.overlap,
        max_overlap=cfg.max_overlap,
        posterior_target=cfg.posterior_target,
        targets=sorted({cfg.target_accuracy, 0.95}),
        risk=cfg.risk,
        budget_per_item=budget,
        policies=("threshold", "dynamic", "meta"),
        expert_accuracy=cfg.expert_accuracy if expert_accuracy is None else expert_accuracy,
        seed=seed,
        certification=cfg.certification,
        sample_share=sample_share,
    )
